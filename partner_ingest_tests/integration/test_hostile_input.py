"""Hostile and edge-case input: every case ends landed, or rejected with a message naming partner,
file (and entry) and what to do; a rejected archive stays landed and nothing appears outside its
expansion prefix."""

from __future__ import annotations

import hashlib
import os

import pytest

from partner_ingest.s3.upload import read_sha256_tag
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.files import MiB
from partner_ingest_tests.harness.results import failure_text, object_keys
from partner_ingest_tests.harness.zips import (
    bomb_zip,
    encrypted_flag_zip,
    make_zip,
    many_entries_zip,
    symlink_zip,
    zip_with_raw_names,
)


def _flip_bytes(data: bytes, start: int, end: int) -> bytes:
    """Damage an entry's stored bytes: the central directory still reads, the CRC does not match."""
    return data[:start] + bytes(b ^ 0xFF for b in data[start:end]) + data[end:]


CASES = {
    "ratio_bomb": (bomb_zip(64 * MiB), {}, "more than max_ratio=200"),
    "total_bomb": (make_zip({"a.bin": os.urandom(MiB), "b.bin": os.urandom(MiB)}), {"max_total_bytes": MiB},
                   "more than max_total_bytes=1048576"),
    "traversal": (zip_with_raw_names(["ok.txt", "../../etc/cron.d/evil"]), {},
                  "entry '../../etc/cron.d/evil' is refused"),
    "absolute": (zip_with_raw_names(["/etc/passwd"]), {}, "absolute path"),
    "windows_absolute": (zip_with_raw_names(["C:\\\\Windows\\\\evil.dll"]), {}, "absolute path"),
    "symlink": (symlink_zip(), {}, "symbolic link"),
    "duplicate": (zip_with_raw_names(["a.txt", "./a.txt"]), {}, "duplicates entry"),
    "encrypted": (encrypted_flag_zip(), {}, "encrypted"),
    "control_chars": (zip_with_raw_names(["line\nbreak.txt"]), {}, "control characters"),
    "nested_too_deep": (make_zip({"inner.zip": make_zip({"x.txt": b"x"})}), {"max_depth": 1},
                        "nested deeper than max_depth=1"),
    "many_entries": (many_entries_zip(100_000), {}, "100000 entries, more than max_entries=10000"),
    "truncated": (make_zip({"a.txt": os.urandom(5000)})[:3000], {}, "not a readable zip archive"),
    "corrupt_body": (_flip_bytes(make_zip({"a.txt": os.urandom(5000)}, compression=0), 40, 60), {}, "corrupt"),
    "nested_entry_budget": (make_zip({"inner.zip": make_zip({f"i{n}": b"i" for n in range(6)}),
                                      **{f"o{n}": b"o" for n in range(6)}}), {"max_entries": 10},
                            "more than max_entries=10"),
    "reserved_suffix": (make_zip({"inner.zip": make_zip({"x.txt": b"x"}), "inner.zip.unzipped/x.txt": b"evil"}),
                        {}, "entry 'inner.zip.unzipped/x.txt' is refused"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_rejected_and_stays_landed(make_partner, s3, case):
    data, limits, words = CASES[case]
    rig = make_partner(unzip=True, unzip_limits=limits)
    rig.write("in/x.zip", data)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["in/x.zip"])
    assert not result.success
    text = failure_text(result)
    assert words in text and rig.partner.name in text and "in/x.zip" in text and "What to do" in text
    archive = f"partners/{rig.partner.name}/in/x.zip"
    assert object_keys(s3, rig.landing.bucket) == [archive]  # archive kept; nothing expanded, nothing elsewhere
    assert read_sha256_tag(s3, rig.landing.bucket, archive) == hashlib.sha256(data).hexdigest()


def test_nested_archive_within_depth_expands_under_its_prefix(make_partner, s3):
    rig = make_partner(unzip=True)
    inner = make_zip({"deep/x.txt": b"inner"})
    rig.write("n.zip", make_zip({"inner.zip": inner, "top.txt": b"top"}))
    result, _, _ = land(rig.partner, rig.landing.bucket, ["n.zip"])
    assert result.success
    prefix = f"partners/{rig.partner.name}/n.zip.unzipped/"
    assert object_keys(s3, rig.landing.bucket) == [
        f"partners/{rig.partner.name}/n.zip", f"{prefix}inner.zip", f"{prefix}inner.zip.unzipped/deep/x.txt",
        f"{prefix}top.txt"]


def test_re_landed_archive_replaces_its_old_entries(make_partner, s3):
    rig = make_partner(unzip=True)
    path = rig.write("r.zip", make_zip({"old.txt": b"old", "same.txt": b"1"}))
    assert land(rig.partner, rig.landing.bucket, ["r.zip"])[0].success
    path.write_bytes(make_zip({"same.txt": b"2", "new.txt": b"new"}))
    os.utime(path, (1_900_000_000, 1_900_000_000))
    assert land(rig.partner, rig.landing.bucket, ["r.zip"])[0].success
    prefix = f"partners/{rig.partner.name}/r.zip.unzipped/"
    assert [k for k in object_keys(s3, rig.landing.bucket) if k.startswith(prefix)] == [f"{prefix}new.txt",
                                                                                        f"{prefix}same.txt"]


@pytest.mark.parametrize("size", [0, 16 * MiB - 1, 16 * MiB, 16 * MiB + 1])
def test_sizes_around_the_multipart_threshold_and_empty_files_land(make_partner, s3, size):
    rig = make_partner()
    data = os.urandom(size)
    rig.write("edge.bin", data)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["edge.bin"])
    assert result.success
    key = f"partners/{rig.partner.name}/edge.bin"
    body = s3.get_object(Bucket=rig.landing.bucket, Key=key)["Body"].read()
    assert body == data and read_sha256_tag(s3, rig.landing.bucket, key) == hashlib.sha256(data).hexdigest()


def test_remote_names_with_control_characters_are_refused_by_runs_as_by_the_sensor(make_partner, s3):
    """The sensor never lists such names (a newline would make keys ambiguous: ``a\\nb`` and ``a%0Ab``
    would share an S3 key); a partition key naming one, added by hand, is refused the same way."""
    rig = make_partner()
    names = ["tab\there.csv", "new\nline.csv", "bell\x07.csv"]
    for name in names:
        rig.write(name, name.encode())
    result, _, keys = land(rig.partner, rig.landing.bucket, names)
    assert not result.success
    assert all("\n" not in k and "\t" not in k for k in keys)  # partition keys stay printable
    message = failure_text(result)
    assert message.count("name not accepted") == 3 and "What to do" in message
    assert object_keys(s3, rig.landing.bucket) == []
