"""Reversible partition keys for remote paths.

Dagster's UI and CLI split partition selections on ``,`` and ``...`` and show keys in URLs, while
partners name files with spaces, unicode, commas, brackets and dots. A key is the path relative to
the partner's ``remote_dir``, percent-encoded (UTF-8) outside a small safe alphabet, with every dot
that touches another dot encoded too, so ``...`` can never appear. Decoding is plain unquoting.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_SAFE = "/-_."


_DOT_RUNS = re.compile(r"\.{2,}")


def encode_partition_key(relative_path: str) -> str:
    quoted = quote(relative_path, safe=_SAFE, encoding="utf-8", errors="strict")
    if ".." not in quoted:  # the common case, taken 100,000 times per tick on a busy partner
        return quoted
    return _DOT_RUNS.sub(lambda m: "%2E" * len(m.group()), quoted)


def decode_partition_key(key: str) -> str:
    return unquote(key, encoding="utf-8", errors="strict")


def relative_path_of_key(key: str) -> str:
    """The remote path (relative to ``remote_dir``) a partition key stands for, or ValueError.

    Keys are untrusted: anyone with the UI can add a dynamic partition. Only keys the sensor could
    have produced: a relative path without empty, ``.`` or ``..`` segments or NUL, so no key can
    reach outside ``remote_dir`` or the landing prefix (S3 keys escape other control characters).
    """
    try:
        path = decode_partition_key(key)
    except UnicodeDecodeError:
        raise ValueError("it is not a percent-encoded UTF-8 path") from None
    if not path:
        raise ValueError("it is empty")
    if path.startswith("/"):
        raise ValueError("it decodes to an absolute path")
    if "\x00" in path:
        raise ValueError("it holds a NUL character")
    if encode_partition_key(path) != key:
        raise ValueError("it is not in the canonical encoding the sensor uses (an alias of another key)")
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise ValueError("it has an empty, '.' or '..' path segment")
    return path
