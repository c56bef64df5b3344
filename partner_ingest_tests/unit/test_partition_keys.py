"""Partition keys round-trip any path and never contain what the UI or CLI would split on."""

from __future__ import annotations

import re

import pytest

from partner_ingest.ingest.partition_keys import decode_partition_key, encode_partition_key

PATHS = [
    "plain.csv",
    "a/b/c.csv",
    "with space.csv",
    "commas,in,name.csv",
    "three...dots",
    "..leading/..",
    "[x]|{y}(z).txt",
    "unicodé/日本語.csv",
    "new\nline\tand\x01control.csv",
    "100%/%2E.txt",
    ".hidden",
]


@pytest.mark.parametrize("path", PATHS)
def test_round_trip_and_safe_alphabet(path):
    key = encode_partition_key(path)
    assert decode_partition_key(key) == path
    assert re.fullmatch(r"[A-Za-z0-9/_.%-]+", key)
    assert ".." not in key and "," not in key and " " not in key


def test_readable_keys_stay_readable():
    assert encode_partition_key("2026/11/orders-01.csv") == "2026/11/orders-01.csv"


def test_distinct_paths_distinct_keys():
    keys = {encode_partition_key(p) for p in PATHS}
    assert len(keys) == len(PATHS)
