"""Per-partition asset checks: each file of a multi-file run gets its own result, and a check re-run
after someone corrupts or deletes an object fails for exactly that file."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetSelection, instance_for_test, materialize

from partner_ingest.defs.asset_keys import EXPANSION_CHECK, OBJECT_CHECK, contents_asset_key, files_asset_key
from partner_ingest.defs.assets import build_files_asset
from partner_ingest.defs.resources import default_resources
from partner_ingest.defs.tags import RANGE_END_TAG, RANGE_START_TAG
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.zips import make_zip


def _evaluations(instance, run_id, check_name):
    out = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if data.check_name == check_name:
                out[data.partition] = data.passed
    return out


def _run_checks(rig, instance, keys, *check_keys):
    asset = build_files_asset(rig.partner, rig.landing)
    return materialize([asset], instance=instance, resources=default_resources(),
                       selection=AssetSelection.checks(*check_keys),
                       tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}, raise_on_error=False)


def test_each_file_gets_its_own_check_and_tampering_fails_it(make_partner, s3):
    rig = make_partner()
    for name in ("a.csv", "b.csv", "c.csv"):
        rig.write(name, name.encode() * 100)
    with instance_for_test() as instance:
        result, _, keys = land(rig.partner, rig.landing.bucket, ["a.csv", "b.csv", "c.csv"], instance=instance)
        assert result.success
        assert _evaluations(instance, result.run_id, OBJECT_CHECK) == {"a.csv": True, "b.csv": True, "c.csv": True}

        prefix = f"partners/{rig.partner.name}"
        s3.put_object(Bucket=rig.landing.bucket, Key=f"{prefix}/b.csv", Body=b"tampered")
        s3.delete_object(Bucket=rig.landing.bucket, Key=f"{prefix}/c.csv")
        check = AssetCheckKey(files_asset_key(rig.partner), OBJECT_CHECK)
        rerun = _run_checks(rig, instance, keys, check)
        assert _evaluations(instance, rerun.run_id, OBJECT_CHECK) == {"a.csv": True, "b.csv": False, "c.csv": False}
        records = instance.event_log_storage.get_asset_check_execution_history(check, limit=20)
        failed = {r.partition: r.event.dagster_event.event_specific_data.description for r in records
                  if r.run_id == rerun.run_id and not r.event.dagster_event.event_specific_data.passed}
        assert "holds 8 bytes" in failed["b.csv"] and "deleted" in failed["c.csv"]
        # Nothing was landed again by the check-only run.
        assert len(s3.list_object_versions(Bucket=rig.landing.bucket, Prefix=f"{prefix}/a.csv")["Versions"]) == 1


def test_archive_expansion_check_fails_when_an_entry_goes_missing(make_partner, s3):
    rig = make_partner(unzip=True)
    rig.write("in/batch.zip", make_zip({"x.csv": b"x" * 1000, "sub/y.csv": b"y" * 2000}))
    with instance_for_test() as instance:
        result, _, keys = land(rig.partner, rig.landing.bucket, ["in/batch.zip"], instance=instance)
        assert result.success
        assert _evaluations(instance, result.run_id, EXPANSION_CHECK) == {keys[0]: True}
        entry = f"partners/{rig.partner.name}/in/batch.zip.unzipped/sub/y.csv"
        assert s3.head_object(Bucket=rig.landing.bucket, Key=entry)["ContentLength"] == 2000
        s3.delete_object(Bucket=rig.landing.bucket, Key=entry)
        check = AssetCheckKey(contents_asset_key(rig.partner), EXPANSION_CHECK)
        rerun = _run_checks(rig, instance, keys, check)
        assert _evaluations(instance, rerun.run_id, EXPANSION_CHECK) == {keys[0]: False}


def test_only_archives_are_contents_partitions_and_materializing_one_expands_it_again(make_partner, s3):
    from partner_ingest.defs.partitions import archives_partitions_name

    rig = make_partner(unzip=True)
    rig.write("in/a.csv", b"a" * 100)
    rig.write("in/batch.zip", make_zip({"x.csv": b"x" * 1000}))
    rig.write("in/b.csv", b"b" * 100)
    with instance_for_test() as instance:
        result, _, keys = land(rig.partner, rig.landing.bucket, ["in/a.csv", "in/b.csv", "in/batch.zip"],
                               instance=instance)
        assert result.success
        contents = contents_asset_key(rig.partner)
        assert instance.get_dynamic_partitions(archives_partitions_name(rig.partner)) == ["in/batch.zip"]
        assert instance.get_materialized_partitions(contents) == {"in/batch.zip"}
        assert instance.get_materialized_partitions(files_asset_key(rig.partner)) == set(keys)

        entry = f"partners/{rig.partner.name}/in/batch.zip.unzipped/x.csv"
        s3.delete_object(Bucket=rig.landing.bucket, Key=entry)
        asset = build_files_asset(rig.partner, rig.landing)
        again = materialize([asset], instance=instance, resources=default_resources(), selection=[contents],
                            partition_key="in/batch.zip", raise_on_error=False)
        assert again.success
        assert s3.head_object(Bucket=rig.landing.bucket, Key=entry)["ContentLength"] == 1000
        assert _evaluations(instance, again.run_id, EXPANSION_CHECK) == {"in/batch.zip": True}
        assert not any("did not yield or return expected outputs" in (r.user_message or "")
                       for r in instance.all_logs(result.run_id))


def test_contents_of_archives_landed_before_they_had_partitions(make_partner, s3):
    """Archives landed before the contents asset had its own partition set (or under a legacy key) are
    registered by the partner's sensor and can be expanded again; a contents partition of a file that never
    landed fails the run, naming it, instead of succeeding with nothing done."""
    from partner_ingest.defs.partitions import archives_partitions_name, partitions_name
    from partner_ingest.ingest.partition_keys import encode_partition_key, legacy_partition_key
    from partner_ingest_tests.harness.sensor_helpers import SensorDriver

    rig = make_partner(unzip=True, stability={"min_age_seconds": 0})
    name = "in/Q3 batch.zip"
    rig.write(name, make_zip({"x.csv": b"x" * 500}))
    legacy, today = legacy_partition_key(name), encode_partition_key(name)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(partitions_name(rig.partner), [legacy])
        asset = build_files_asset(rig.partner, rig.landing)
        files = files_asset_key(rig.partner)
        assert materialize([asset], instance=instance, resources=default_resources(), selection=[files],
                           partition_key=legacy, raise_on_error=False).success
        archives = archives_partitions_name(rig.partner)
        instance.delete_dynamic_partition(archives, legacy)  # as before the upgrade: no archive partitions
        SensorDriver(rig.config, instance).tick()
        assert instance.get_dynamic_partitions(archives) == [today]

        contents = contents_asset_key(rig.partner)
        again = materialize([asset], instance=instance, resources=default_resources(), selection=[contents],
                            partition_key=today, raise_on_error=False)
        assert again.success
        assert instance.get_materialized_partitions(contents) >= {today}

        instance.add_dynamic_partitions(archives, ["in/never-landed.zip"])
        never = materialize([asset], instance=instance, resources=default_resources(), selection=[contents],
                            partition_key="in/never-landed.zip", raise_on_error=False)
        assert not never.success
        failure = next(e for e in never.all_events if e.event_type_value == "STEP_FAILURE")
        text = failure.event_specific_data.user_failure_data.description
        assert "1 of 1 files could not be checked or expanded" in text and "no landing of this file" in text
