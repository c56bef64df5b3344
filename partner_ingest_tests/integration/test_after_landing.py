"""After a verified landing the remote file is left, deleted or moved; a failed action is loud and
is retried by the sensor without landing the file again."""

from __future__ import annotations

import os

from dagster import instance_for_test

from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.sensor_helpers import SensorDriver


def _after(instance, rig, name):
    records = instance.fetch_materializations(files_asset_key(rig.partner), limit=100).records
    return [r.asset_materialization.metadata["after_landing"].value for r in records
            if r.partition_key == encode_partition_key(name)]


def test_delete_after_landing(make_partner, s3):
    rig = make_partner(after_landing="delete")
    path = rig.write("sub/a.csv", b"delete me once landed")
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["sub/a.csv"])
    assert result.success and not path.exists()
    assert s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/sub/a.csv")["Body"].read() \
        == b"delete me once landed"
    assert _after(instance, rig, "sub/a.csv") == [f"deleted: {path}"]


def test_move_keeps_the_relative_path_and_suffixes_clashes(make_partner):
    archive = "archive"
    rig = make_partner()
    partner = rig.partner.model_copy(update={"after_landing": "move", "archive_dir": f"{rig.tree}/{archive}"})
    rig.write("in/x.csv", b"new")
    rig.write(f"{archive}/in/x.csv", b"an older x already archived")
    result, instance, _ = land(partner, rig.landing.bucket, ["in/x.csv"])
    assert result.success
    assert not (rig.tree / "in/x.csv").exists()
    moved = [p for p in (rig.tree / archive / "in").iterdir() if p.name != "x.csv"]
    assert len(moved) == 1 and moved[0].name.startswith("x.csv.") and moved[0].read_bytes() == b"new"
    assert (rig.tree / archive / "in/x.csv").read_bytes() == b"an older x already archived"
    assert _after(instance, rig, "in/x.csv") == [f"moved: {moved[0]}"]


def test_failed_move_fails_the_run_and_is_retried_without_landing_again(make_partner, s3):
    rig = make_partner(stability={"min_age_seconds": 0})
    archive = rig.tree / "archive"
    archive.mkdir()
    archive.chmod(0o555)  # the SFTP user cannot create anything in it (root owns it)
    partner = rig.partner.model_copy(update={"after_landing": "move", "archive_dir": str(archive)})
    rig.write("a.csv", b"a")
    rig.write("b.csv", b"b")
    with instance_for_test() as instance:
        config = rig.config.model_copy(update={"partners": [partner]})
        driver = SensorDriver(config, instance)
        first = driver.tick()
        [result] = driver.launch(first.run_requests)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        text = failure.event_specific_data.error.message
        assert "could not move the remote file" in text and "a.csv" in text and "b.csv" in text
        assert instance.get_materialized_partitions(files_asset_key(partner)) == {"a.csv", "b.csv"}
        assert _after(instance, rig, "a.csv")[0].startswith("failed, waiting for retry")
        assert len(s3.list_object_versions(Bucket=rig.landing.bucket)["Versions"]) == 2

        os.chown(archive, (rig.tree.stat()).st_uid, -1)
        archive.chmod(0o755)
        retry = driver.tick()
        assert sorted(k for r in retry.run_requests for k in driver.keys_of(r)) == ["a.csv", "b.csv"]
        # A new run key: the daemon drops run keys it has used, so reusing the first run's would never retry.
        assert {r.run_key for r in retry.run_requests}.isdisjoint({r.run_key for r in first.run_requests})
        assert all(r.success for r in driver.launch(retry.run_requests))
        assert sorted(p.name for p in archive.iterdir()) == ["a.csv", "b.csv"]
        assert len(s3.list_object_versions(Bucket=rig.landing.bucket)["Versions"]) == 2  # not landed again
        assert sorted(_after(instance, rig, "a.csv"))[-1].startswith("moved")
        assert driver.tick().run_requests == []  # archive_dir inside remote_dir is never listed


def test_replaced_file_is_not_deleted(make_partner):
    """The partner writes a new version between landing and the action: its new file is kept."""
    from partner_ingest.defs.resources import default_resources
    from partner_ingest.ingest.after_landing import apply_after_landing
    from partner_ingest.ingest.transfer import land_file

    rig = make_partner(after_landing="delete")
    path = rig.write("v.csv", b"version 1")
    with default_resources()["sftp"].link(rig.partner) as link:
        import boto3
        landed = land_file(link, boto3.client("s3"), bucket=rig.landing.bucket, relative_path="v.csv")
        path.write_bytes(b"version 2 is longer")
        outcome = apply_after_landing(link, landed)
    assert outcome.action == "skipped" and path.exists()


def test_delete_takes_the_done_marker_with_it(make_partner):
    rig = make_partner(after_landing="delete", stability={"done_marker": ".done"})
    data = rig.write("x.csv", b"x")
    marker = rig.write("x.csv.done", b"")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["x.csv"])
    assert result.success and not data.exists() and not marker.exists()


def test_archive_dir_written_unnormalized_is_still_never_listed(make_partner):
    rig = make_partner(stability={"min_age_seconds": 0})
    partner = rig.partner.model_copy(update={"after_landing": "move", "remote_dir": f"{rig.tree}/./",
                                             "archive_dir": "done"})
    partner = type(partner).model_validate(partner.model_dump())  # normalised by the config validators
    rig.write("a.csv", b"a")
    rig.write("done/old.csv", b"archived earlier")
    config = rig.config.model_copy(update={"partners": [partner]})
    from dagster import instance_for_test as _instance

    with _instance() as instance:
        driver = SensorDriver(config, instance)
        data = driver.tick()
        assert [k for r in data.run_requests for k in driver.keys_of(r)] == ["a.csv"]
