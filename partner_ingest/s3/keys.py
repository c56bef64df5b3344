"""Where a partner file lands: ``landing_prefix`` + its path relative to ``remote_dir``."""

from __future__ import annotations

import re
from urllib.parse import quote

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def landing_key(landing_prefix: str, relative_path: str) -> str:
    """S3 keys keep the real name (spaces, unicode, commas, brackets are all fine in S3 keys).

    Control characters are the exception: S3 accepts them, but its XML listings, HTTP tooling and
    SFTP clients mangle them, so each becomes ``%XX`` in the key; the object's ``source-path``
    metadata and the materialization's ``remote_path`` keep the exact name.
    """
    safe = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", relative_path.lstrip("/"))
    return landing_prefix.rstrip("/") + "/" + safe


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def ascii_header_value(value: str) -> str:
    """S3 user metadata travels as HTTP headers: percent-encode anything outside printable ASCII."""
    return quote(value, safe="/ !#$&'()*+,-.:;=?@[]^_`{|}~")
