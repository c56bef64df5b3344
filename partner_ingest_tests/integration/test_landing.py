"""Partner files land in S3 through a Dagster ranged run, one materialization per file."""

from __future__ import annotations

import hashlib
import os

from dagster import AssetKey

from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.s3.upload import read_sha256_tag
from partner_ingest_tests.harness.dagster_helpers import land

ODD_NAMES = [
    "plain.csv",
    "with space/report 2026.csv",
    "unicodé/日本語 ファイル.csv",
    "commas, and more,.csv",
    "dots.../...hidden...",
    "[brackets]/(parens) {braces}.txt",
    "deep/a/b/c/d/e.bin",
]


def test_odd_names_land_under_their_real_names_with_per_file_metadata(make_partner, s3):
    rig = make_partner()
    contents = {name: os.urandom(1000 + i) for i, name in enumerate(ODD_NAMES)}
    for name, data in contents.items():
        rig.write(name, data)

    result, instance, keys = land(rig.partner, rig.landing.bucket, ODD_NAMES)
    assert result.success

    events = instance.fetch_materializations(files_asset_key(rig.partner), limit=100).records
    by_partition = {e.partition_key: e.asset_materialization for e in events}
    assert set(by_partition) == set(keys)
    for name, data in contents.items():
        key = f"partners/{rig.partner.name}/{name}"
        body = s3.get_object(Bucket=rig.landing.bucket, Key=key)["Body"].read()
        assert body == data
        digest = hashlib.sha256(data).hexdigest()
        assert read_sha256_tag(s3, rig.landing.bucket, key) == digest
        meta = by_partition[encode_partition_key(name)].metadata
        assert meta["sha256"].value == digest
        assert meta["size"].value == len(data)
        assert meta["s3_uri"].value == f"s3://{rig.landing.bucket}/{key}"
        assert meta["remote_path"].value == f"{rig.tree}/{name}"
        assert meta["bytes_per_second"].value > 0
        head = s3.head_object(Bucket=rig.landing.bucket, Key=key)
        assert head["Metadata"]["source-size"] == str(len(data))
        assert head["Metadata"]["partner"] == rig.partner.name
    assert AssetKey(["partners", rig.partner.name, "files"]) == files_asset_key(rig.partner)
