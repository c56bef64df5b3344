"""Where a partner file lands: ``landing_prefix`` + its path relative to ``remote_dir``."""

from __future__ import annotations

from urllib.parse import quote


def landing_key(landing_prefix: str, relative_path: str) -> str:
    """S3 keys keep the real name (spaces, unicode, commas are all legal in S3 keys)."""
    return landing_prefix.rstrip("/") + "/" + relative_path.lstrip("/")


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def ascii_header_value(value: str) -> str:
    """S3 user metadata travels as HTTP headers: percent-encode anything outside printable ASCII."""
    return quote(value, safe="/ !#$&'()*+,-.:;=?@[]^_`{|}~")
