"""Progress and history in Dagster: progress lines in the run's log, console links, descriptions, run tags."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest
from dagster import DagsterEventType, instance_for_test

from partner_ingest.config import LandingConfig
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.assets import PER_FILE_LINES_UP_TO, build_files_asset
from partner_ingest.defs.tags import FILE_COUNT_TAG, PARTNER_TAG, RANGE_END_TAG
from partner_ingest.ingest import run_pipeline
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.sensor_helpers import SensorDriver

MiB = 1024**2


def test_a_long_file_logs_progress_and_links_to_the_console(make_partner, s3, monkeypatch):
    monkeypatch.setattr(run_pipeline, "PROGRESS_EVERY_SECONDS", 1e-6)  # every read counts as "long"
    rig = make_partner(exclude=["*.tmp"], after_landing="leave")
    rig.write("big/huge.bin", os.urandom(64 * MiB))
    result, instance, keys = land(rig.partner, rig.landing.bucket, ["big/huge.bin"])
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    progress = [m for m in messages if m.startswith(f"partner '{rig.partner.name}': big/huge.bin: ")]
    assert progress, messages
    assert " of 64.0 MiB (" in progress[0] and " MB/s, ETA " in progress[0]
    landed_at = next(i for i, m in enumerate(messages) if m.endswith("landed: read from the partner and uploaded"))
    assert progress.index(progress[-1]) < landed_at
    print(progress[0])

    (mat,) = result.asset_materializations_for_node(f"{rig.partner.name}_files")
    meta = mat.metadata
    key = f"partners/{rig.partner.name}/big/huge.bin"
    region = s3.meta.region_name
    assert meta["s3_uri"].value == f"s3://{rig.landing.bucket}/{key}"
    assert meta["aws_console"].value == (f"https://console.aws.amazon.com/s3/object/{rig.landing.bucket}"
                                         f"?prefix={quote(key, safe='')}" + (f"&region={region}" if region else ""))
    assert meta["size"].value == 64 * MiB
    assert isinstance(meta["seconds"].value, float) and isinstance(meta["bytes_per_second"].value, float)


def test_a_small_file_logs_no_progress(make_partner):
    rig = make_partner()
    rig.write("small.csv", b"a,b\n")
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["small.csv"])
    assert result.success
    assert not [e for e in instance.all_logs(result.run_id) if " MB/s, ETA " in (e.user_message or "")]


def test_the_asset_description_tells_the_partner_settings_without_secrets(make_partner):
    rig = make_partner(include=["**/*.csv", "*.zip"], exclude=["*.tmp"], recursive=False,
                       stability={"min_age_seconds": 0, "done_marker": ".done"},
                       sensor={"interval_seconds": 120, "running": True}, after_landing="move",
                       archive_dir=".landed", unzip=True, change_detection="content",
                       source_checksums={"sidecar": ".sha256"})
    asset = build_files_asset(rig.partner, LandingConfig(bucket=rig.landing.bucket))
    text = asset.specs_by_key[files_asset_key(rig.partner)].description
    partner = rig.partner
    for expected in (f"{partner.host}:{partner.port}", partner.remote_dir, "`**/*.csv`", "`*.zip`", "`*.tmp`",
                     "top level only", "`.done` done marker", "every 120s, running", "move (to `.landed`)",
                     "Unzip: yes", "sha256 from sidecar `*.sha256`", "Change detection: content",
                     partner.secret_id):
        assert expected in text, (expected, text)
    assert "password" not in text.lower()


@pytest.fixture
def instance():
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def test_sensor_runs_carry_the_partner_and_file_count_tags(make_partner, instance):
    rig = make_partner(stability={"min_age_seconds": 0}, limits={"max_files_per_run": 3})
    for i in range(4):
        rig.write(f"f{i}.csv", b"x")
    driver = SensorDriver(rig.config, instance)
    data = driver.tick()
    assert [r.tags[FILE_COUNT_TAG] for r in data.run_requests] == ["3", "1"]
    assert all(r.tags[PARTNER_TAG] == rig.partner.name for r in data.run_requests)
    assert RANGE_END_TAG in data.run_requests[0].tags
    results = driver.launch(data.run_requests)
    assert all(r.success for r in results)
    assert instance.get_run_by_id(results[0].run_id).tags[FILE_COUNT_TAG] == "3"
    assert instance.get_records_for_run(results[0].run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records


def test_a_run_of_many_files_logs_its_tally_instead_of_a_line_per_file(make_partner):
    rig = make_partner()
    names = [f"many/{i:02d}.csv" for i in range(PER_FILE_LINES_UP_TO + 5)]
    for name in names:
        rig.write(name, name.encode())
    result, instance, keys = land(rig.partner, rig.landing.bucket, names)
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert not [m for m in messages if " -> s3://" in m], "a line per file in a run of many files"
    [tally] = [m for m in messages if m.startswith(f"partner '{rig.partner.name}': {len(names)} of {len(names)} files")]
    assert f"{len(names)} landed ({len(names)} uploaded" in tally and "0 failed" in tally
    assert instance.get_materialized_partitions(files_asset_key(rig.partner)) == set(keys)
