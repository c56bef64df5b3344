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
