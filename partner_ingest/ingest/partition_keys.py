"""Readable, reversible partition keys for remote paths.

A key is the path relative to the partner's ``remote_dir`` as the partner named it, so the UI shows
``reports/Q3 résumé, final.csv``-like names, not percent soup. Only what Dagster's tools split on or
what would mislead a reader is percent-encoded (UTF-8):

* ``%`` itself, so decoding is plain unquoting and every path has exactly one key;
* ``,`` (``dagster job backfill --partitions`` splits on commas) and ``|`` (the multi-partition
  delimiter);
* every dot touching another dot, so ``...`` (the CLI's and the UI's range separator, and a substring
  Dagster rejects in static keys) never appears;
* control, format (bidi overrides, zero-width), line/paragraph-separator and private-use characters,
  and whitespace other than a plain space: they are invisible, reorder text or end lines in logs;
* a space at the start or end of the key (the CLI strips around commas).

The UI quotes any other character itself (Dagster 1.13's partition-selection grammar). Keys registered
by earlier versions encoded everything outside ``[A-Za-z0-9/_.-]``; :func:`current_key` maps such a key
to today's form, so a deployment upgrading keeps its history and copies nothing twice.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import quote, unquote

T = TypeVar("T")

_ASCII_ESCAPED = re.compile(r"[%,|\x00-\x1f\x7f]")
_DOT_RUNS = re.compile(r"\.{2,}")
# Characters encoded beyond ASCII's, as a frozen table rather than unicodedata categories: a newer
# Python's Unicode database gives new characters categories (and a key must never change with the
# interpreter, or an upgraded image would land every such file again). Inclusive ranges: Cc controls
# (C1), Cf format characters as of Unicode 14.0 (bidi overrides, zero-width, tags), Zs spaces but
# U+0020, Zl/Zp separators, Co private use, and characters that render blank or not at all (Hangul and
# braille blanks, the combining grapheme joiner, Khmer inherent vowels, variation selectors).
_HIDDEN_RANGES = (
    (0x0080, 0x00A0), (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160),
    (0x1680, 0x1680), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2000, 0x200F), (0x2028, 0x202F),
    (0x205F, 0x2064), (0x2066, 0x206F), (0x2800, 0x2800), (0x3000, 0x3000), (0x3164, 0x3164),
    (0xE000, 0xF8FF), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F), (0xE0100, 0xE01EF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD),
)
_HIDDEN_STARTS = tuple(start for start, _ in _HIDDEN_RANGES)


def _hidden(char: str) -> bool:
    index = bisect_right(_HIDDEN_STARTS, ord(char)) - 1
    return index >= 0 and ord(char) <= _HIDDEN_RANGES[index][1]


def _escape(char: str) -> str:
    return quote(char, safe="", encoding="utf-8", errors="strict")


def _encode_char(char: str) -> str:
    if char.isascii():
        return _escape(char) if _ASCII_ESCAPED.match(char) else char
    return _escape(char) if _hidden(char) else char


def encode_partition_key(relative_path: str) -> str:
    """The key of a path; UnicodeEncodeError for a name that is not valid Unicode (a lone surrogate)."""
    if relative_path.isascii():  # the common case, taken 100,000 times per tick on a busy partner
        key = _ASCII_ESCAPED.sub(lambda m: _escape(m.group()), relative_path)
    else:
        relative_path.encode("utf-8", errors="strict")
        key = "".join(_encode_char(char) for char in relative_path)
    if ".." in key:
        key = _DOT_RUNS.sub(lambda m: "%2E" * len(m.group()), key)
    if key.startswith(" "):
        key = "%20" + key[1:]
    if key.endswith(" "):
        key = key[:-1] + "%20"
    return key


def decode_partition_key(key: str) -> str:
    return unquote(key, encoding="utf-8", errors="strict")


def legacy_partition_key(relative_path: str) -> str:
    """The key earlier versions registered: percent-encoded outside ``[A-Za-z0-9/_.-]``, dot runs too."""
    quoted = quote(relative_path, safe="/-_.", encoding="utf-8", errors="strict")
    return _DOT_RUNS.sub(lambda m: "%2E" * len(m.group()), quoted) if ".." in quoted else quoted


def current_key(key: str) -> str:
    """Today's key for a key registered by an earlier version; any other key unchanged.

    Unambiguous: a legacy key that differs from today's form holds a ``%`` escape today's encoding
    would not write, so it is never a current key of another path.
    """
    if "%" not in key:
        return key
    try:
        path = decode_partition_key(key)
    except UnicodeDecodeError:
        return key
    try:
        if encode_partition_key(path) != key and legacy_partition_key(path) == key:
            return encode_partition_key(path)
    except UnicodeEncodeError:
        return key
    return key


def newest_by_current_key(by_key: Mapping[str, T], newest: Mapping[str, int]) -> dict[str, T]:
    """Per-partition state keyed by today's keys. Where a file has two keys (one registered by an earlier
    version, one today), the value of the alias with the greatest ``newest`` id wins (a storage id: the
    later event), a key missing from ``newest`` counting as oldest."""
    merged: dict[str, T] = {}
    rank: dict[str, int] = {}
    for key, value in by_key.items():
        now = current_key(key)
        order = newest.get(key, -1)
        if now not in merged or order > rank[now]:
            merged[now], rank[now] = value, order
    return merged


def relative_path_of_key(key: str) -> str:
    """The remote path (relative to ``remote_dir``) a partition key stands for, or ValueError.

    Keys are untrusted: anyone with the UI can add a dynamic partition. Only keys the sensor could
    have produced (today's encoding, or an earlier version's for partitions registered before): a
    relative path without empty, ``.`` or ``..`` segments or NUL, so no key can reach outside
    ``remote_dir`` or the landing prefix (S3 keys escape other control characters).
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
    try:
        canonical = key in (encode_partition_key(path), legacy_partition_key(path))
    except UnicodeEncodeError:
        raise ValueError("it does not decode to valid Unicode") from None
    if not canonical:
        raise ValueError("it is not in the encoding the sensor uses (an alias of another key)")
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        raise ValueError("it has an empty, '.' or '..' path segment")
    return path
