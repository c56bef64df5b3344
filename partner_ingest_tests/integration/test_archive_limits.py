"""Archive limits across nesting levels and the reserved expansion suffix, straight on moto (no sshd).

An inner archive must not get a fresh budget while the entries of the archive holding it are still
to be written, and no entry may land where a nested archive's ``<key>.unzipped/`` expansion goes.
"""

from __future__ import annotations

import os
import zipfile

import pytest

from partner_ingest.config import ArchiveLimits
from partner_ingest.errors import ArchiveRejectedError
from partner_ingest.ingest.archives import expand_archive
from partner_ingest_tests.harness.files import KiB
from partner_ingest_tests.harness.results import object_keys
from partner_ingest_tests.harness.zips import make_zip

PARTNER = "acme"
REMOTE = "/outgoing/in/outer.zip"
ARCHIVE_KEY = "partners/acme/in/outer.zip"


def _files(prefix: str, count: int) -> dict[str, bytes]:
    return {f"{prefix}{n}.txt": prefix.encode() for n in range(count)}


def _expand(s3, bucket: str, data: bytes, **limits):
    version = s3.put_object(Bucket=bucket, Key=ARCHIVE_KEY, Body=data)["VersionId"]
    return expand_archive(s3, bucket=bucket, archive_key=ARCHIVE_KEY, partner=PARTNER, remote_path=REMOTE,
                          limits=ArchiveLimits(**limits), version_id=version)


def _rejected(s3, bucket: str, data: bytes, **limits) -> str:
    with pytest.raises(ArchiveRejectedError) as info:
        _expand(s3, bucket, data, **limits)
    assert object_keys(s3, bucket) == [ARCHIVE_KEY]  # nothing of a refused expansion stays behind
    text = str(info.value)
    assert f"partner '{PARTNER}'" in text and REMOTE in text and "What to do" in text
    assert f"stays landed at s3://{bucket}/{ARCHIVE_KEY}." in text  # the partner's archive, not a nested one
    return text


# The nested archive comes first, so when it is expanded most of the outer entries are not written yet.
NESTED_ENTRY_BUDGETS = {
    # outer: inner.zip + 6 files = 7 entries; inner: 6 entries; 13 together.
    "two_levels": make_zip({"inner.zip": make_zip(_files("i", 6)), **_files("o", 6)}),
    # outer: a.zip + 2 = 3; a.zip: b.zip + 2 = 3; b.zip: 5; 11 together.
    "three_levels": make_zip({"a.zip": make_zip({"b.zip": make_zip(_files("b", 5)), **_files("a", 2)}),
                              **_files("o", 2)}),
}


@pytest.mark.parametrize("case", sorted(NESTED_ENTRY_BUDGETS))
def test_nested_archives_share_one_entry_budget(s3, bucket, case):
    text = _rejected(s3, bucket, NESTED_ENTRY_BUDGETS[case], max_entries=10, max_depth=3)
    assert "more than max_entries=10" in text


def test_nested_archives_share_one_byte_budget(s3, bucket):
    inner = make_zip({"i.bin": os.urandom(300 * KiB)}, compression=zipfile.ZIP_STORED)
    outer = make_zip({"inner.zip": inner, "big.bin": os.urandom(600 * KiB)}, compression=zipfile.ZIP_STORED)
    # Outer ~900 KiB and inner 300 KiB: each level fits 1 MiB alone, together they do not.
    text = _rejected(s3, bucket, outer, max_total_bytes=1024 * KiB)
    assert "more than max_total_bytes=1048576" in text


def test_nested_archives_exactly_at_the_limits_expand(s3, bucket):
    inner = make_zip(_files("i", 6))
    outer = make_zip({"inner.zip": inner, **_files("o", 3)})
    expected_bytes = len(inner) + 6 + 3
    expansion = _expand(s3, bucket, outer, max_entries=10, max_total_bytes=expected_bytes)
    assert len(expansion.entries) == 10 and expansion.total_bytes == expected_bytes


RESERVED_NAMES = {
    "collides_with_nested_expansion": {"inner.zip": make_zip({"x.txt": b"inner"}),
                                       "inner.zip.unzipped/x.txt": b"evil"},
    "collision_listed_first": {"inner.zip.unzipped/x.txt": b"evil", "inner.zip": make_zip({"x.txt": b"inner"})},
    "directory_segment": {"data.unzipped/a.txt": b"a"},
    "deep_segment_any_case": {"deep/dir.UNZIPPED/a.txt": b"a"},
    "file_name": {"plain.unzipped": b"a"},
}


@pytest.mark.parametrize("case", sorted(RESERVED_NAMES))
def test_entries_under_the_reserved_expansion_suffix_are_refused(s3, bucket, case):
    entries = RESERVED_NAMES[case]
    reserved = next(name for name in entries if ".unzipped" in name.lower())
    text = _rejected(s3, bucket, make_zip(entries))
    assert f"entry '{reserved}' is refused" in text and "reserved suffix '.unzipped'" in text


def test_entry_of_a_nested_archive_under_the_reserved_suffix_is_refused(s3, bucket):
    inner = make_zip({"deeper.zip": make_zip({"x.txt": b"x"}), "deeper.zip.unzipped/x.txt": b"evil"})
    text = _rejected(s3, bucket, make_zip({"inner.zip": inner}), max_depth=3)
    assert "entry 'deeper.zip.unzipped/x.txt' is refused" in text and "file '/outgoing/in/outer.zip!/inner.zip'" in text
