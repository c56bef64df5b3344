"""Reversible partition keys for remote paths.

Dagster's UI and CLI split partition selections on ``,`` and ``...`` and show keys in URLs, while
partners name files with spaces, unicode, commas, brackets and dots. A key is the path relative to
the partner's ``remote_dir``, percent-encoded (UTF-8) outside a small safe alphabet, with every dot
that touches another dot encoded too, so ``...`` can never appear. Decoding is plain unquoting.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

_SAFE = "/-_."


def encode_partition_key(relative_path: str) -> str:
    quoted = quote(relative_path, safe=_SAFE, encoding="utf-8", errors="strict")
    out = []
    for i, char in enumerate(quoted):
        near_dot = (i > 0 and quoted[i - 1] == ".") or (i + 1 < len(quoted) and quoted[i + 1] == ".")
        out.append("%2E" if char == "." and near_dot else char)
    return "".join(out)


def decode_partition_key(key: str) -> str:
    return unquote(key, encoding="utf-8", errors="strict")
