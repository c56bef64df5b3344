"""Partition keys round-trip any path, stay readable, never contain what Dagster's UI or CLI splits on,
and keys registered by earlier versions keep meaning their file."""

from __future__ import annotations

import re
import unicodedata

import pytest

from partner_ingest.ingest.partition_keys import (
    current_key,
    decode_partition_key,
    encode_partition_key,
    legacy_partition_key,
    relative_path_of_key,
)

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
    " leading and trailing ",
    "bidi\u202eexe.txt",
    "zero\u200bwidth",
    "no\xa0break",
    "line\u2028sep",
    "quote\"back\\slash'",
    "reports/Q3 résumé, final.csv",
]


@pytest.mark.parametrize("path", PATHS)
def test_round_trip_and_nothing_dagster_splits_on(path):
    key = encode_partition_key(path)
    assert decode_partition_key(key) == path
    if not any(s in ("", ".", "..") for s in path.split("/")):
        assert relative_path_of_key(key) == path
    assert "..." not in key and ".." not in key and "," not in key and "|" not in key
    assert key == key.strip()
    hidden = [c for c in key if unicodedata.category(c) in ("Cc", "Cf", "Co", "Zl", "Zp", "Zs") and c != " "]
    assert not hidden, key
    # Every % in a key starts an escape: decoding is unambiguous.
    assert all(re.fullmatch(r"%[0-9A-F]{2}", key[i:i + 3]) for i, c in enumerate(key) if c == "%")


def test_readable_keys_stay_readable():
    assert encode_partition_key("2026/11/orders-01.csv") == "2026/11/orders-01.csv"
    assert encode_partition_key("reports/Q3 résumé, final.csv") == "reports/Q3 résumé%2C final.csv"
    assert encode_partition_key("unicodé/日本語 [v2] (final).csv") == "unicodé/日本語 [v2] (final).csv"


def test_distinct_paths_distinct_keys():
    keys = {encode_partition_key(p) for p in PATHS}
    assert len(keys) == len(PATHS)


def test_a_lone_surrogate_is_not_a_name():
    with pytest.raises(UnicodeEncodeError):
        encode_partition_key("bad\udcff.csv")


@pytest.mark.parametrize("path", PATHS)
def test_keys_of_earlier_versions_map_to_todays_and_are_accepted(path):
    legacy, today = legacy_partition_key(path), encode_partition_key(path)
    assert current_key(legacy) == today
    assert current_key(today) == today
    if not any(s in ("", ".", "..") for s in path.split("/")):
        assert relative_path_of_key(legacy) == path


def test_an_alias_that_neither_version_writes_is_refused():
    with pytest.raises(ValueError, match="not in the encoding"):
        relative_path_of_key("plain%2Ecsv")
    with pytest.raises(ValueError, match="not in the encoding"):
        relative_path_of_key("reports/Q3 r%C3%A9sum%C3%A9%2C final.csv")   # half old, half new
    assert current_key("plain%2Ecsv") == "plain%2Ecsv"


def test_refusals_still_hold():
    for key in ("%2E%2E/etc/passwd", "/etc/passwd", "%2Fetc", "a//b", "a/%2E/b", "nul%00", "%FF"):
        with pytest.raises(ValueError):
            relative_path_of_key(key)


def test_where_a_file_has_two_keys_the_later_event_wins():
    from partner_ingest.ingest.partition_keys import newest_by_current_key

    name = "Q3 résumé.csv"
    legacy, today = legacy_partition_key(name), encode_partition_key(name)
    values = {legacy: "old", today: "new", "plain.csv": "p"}
    assert newest_by_current_key(values, {legacy: 5, today: 9}) == {today: "new", "plain.csv": "p"}
    assert newest_by_current_key(values, {legacy: 12, today: 9}) == {today: "old", "plain.csv": "p"}
    assert newest_by_current_key({legacy: "only"}, {}) == {today: "only"}


def test_the_frozen_table_covers_every_hidden_character_of_unicode_14():
    """The table is frozen so keys never change with Python's Unicode database; it was built from
    Unicode 14.0 (Python 3.11). On that database every control, format, private-use, separator and
    non-ASCII space character is encoded."""
    if unicodedata.unidata_version != "14.0.0":
        pytest.skip(f"the table was built from Unicode 14.0, this Python has {unicodedata.unidata_version}")
    missed = [f"U+{cp:04X}" for cp in range(0x80, 0x110000)
              if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Co", "Zl", "Zp", "Zs")
              and encode_partition_key(chr(cp)) == chr(cp)]
    assert not missed, missed[:20]


@pytest.mark.parametrize("char", ["\u3164", "\u2800", "\ufe0f", "\u034f", "\u115f", "\U000e0101"])
def test_characters_that_render_blank_are_encoded(char):
    assert "%" in encode_partition_key(f"a{char}b.csv")


def test_letters_digits_and_marks_stay_readable():
    for path in ("日本語/報告書.csv", "Ünïcödé ñame.csv", "Ελληνικά.txt", "עברית.csv", "😀 emoji.csv"):
        assert encode_partition_key(path) == path
