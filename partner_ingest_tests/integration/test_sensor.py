"""The partner sensor, evaluated against a real sshd and a real Dagster instance."""

from __future__ import annotations

import os
import time

import pytest
from dagster import DagsterEventType, DagsterRunStatus, instance_for_test

from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.tags import PARTNER_TAG, RANGE_END_TAG, RANGE_START_TAG
from partner_ingest.errors import ConnectionFailedError
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.processes import free_port
from partner_ingest_tests.harness.sensor_helpers import SensorDriver


@pytest.fixture
def instance():
    with instance_for_test() as dagster_instance:
        yield dagster_instance


@pytest.fixture
def driver_for(instance):
    def build(rig) -> SensorDriver:
        return SensorDriver(rig.config, instance)
    return build


def _requested(driver: SensorDriver, data) -> list[str]:
    return [key for request in data.run_requests for key in driver.keys_of(request)]


def test_new_files_become_partitions_and_one_ranged_run(driver_for, make_partner, s3):
    rig = make_partner(stability={"min_age_seconds": 0})
    names = [f"in/{i:02d}.csv" for i in range(7)] + ["top.csv"]
    for name in names:
        rig.write(name, name.encode())
    driver = driver_for(rig)
    data = driver.tick()
    keys = sorted(encode_partition_key(n) for n in names)
    assert driver.instance.get_dynamic_partitions(partitions_name(rig.partner)) == keys
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.tags[PARTNER_TAG] == rig.partner.name
    assert request.tags[RANGE_START_TAG] == keys[0]
    assert request.tags[RANGE_END_TAG] == keys[-1]
    results = driver.launch(data.run_requests)
    assert all(r.success for r in results)
    landed = {o["Key"] for o in s3.list_objects_v2(Bucket=rig.landing.bucket)["Contents"]}
    assert landed == {f"partners/{rig.partner.name}/{n}" for n in names}
    assert driver.tick().run_requests == []  # nothing new after landing


def test_runs_are_capped_by_files_and_bytes_and_ticks_by_partitions(driver_for, make_partner):
    rig = make_partner(stability={"min_age_seconds": 0},
                       limits={"max_files_per_run": 3, "max_bytes_per_run": 250, "max_partitions_per_tick": 8})
    for i in range(10):
        rig.write(f"f{i:02d}.bin", b"x" * (100 if i < 6 else 10))
    driver = driver_for(rig)
    data = driver.tick()
    batches = [driver.keys_of(r) for r in data.run_requests]
    assert sum(len(b) for b in batches) == 8  # per-tick cap; the rest waits
    assert [len(b) for b in batches] == [2, 2, 3, 1]  # 2 x 100 bytes fit under 250; then the 3-file cap
    assert len(driver.instance.get_dynamic_partitions(partitions_name(rig.partner))) == 8
    driver.launch(data.run_requests)
    second = driver.tick()
    assert _requested(driver, second) == [encode_partition_key("f08.bin"), encode_partition_key("f09.bin")]


def test_repeated_tick_asks_for_the_same_run_keys(driver_for, make_partner):
    rig = make_partner(stability={"min_age_seconds": 0})
    rig.write("a.csv", b"a")
    rig.write("b.csv", b"b")
    driver = driver_for(rig)
    # The daemon evaluating the same tick again (same cursor, nothing applied yet) asks for the same runs.
    first = driver.tick(advance_cursor=False, apply_partitions=False)
    again = driver.tick(advance_cursor=False, apply_partitions=False)
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]
    assert len(first.run_requests) == 1


def test_growing_file_and_preserved_old_mtime_wait_until_stable(driver_for, make_partner):
    rig = make_partner(stability={"min_age_seconds": 4})
    growing = rig.write("growing.csv", b"part 1")
    rig.write("old_mtime.csv", b"uploaded with a preserved timestamp", mtime=time.time() - 10 * 86400)
    driver = driver_for(rig)
    assert driver.tick().run_requests == []  # first sighting of both, however old the mtime
    with growing.open("ab") as out:
        out.write(b" part 2")
    time.sleep(4.2)
    seen_changed = time.monotonic()
    data = driver.tick()
    assert _requested(driver, data) == ["old_mtime.csv"]  # unchanged for 4 s; growing.csv changed
    again = _requested(driver, driver.tick())
    if time.monotonic() - seen_changed < 3:  # growing.csv's new version was first seen under 4 s ago
        assert "growing.csv" not in again
    time.sleep(4.2)
    assert "growing.csv" in _requested(driver, driver.tick())


def test_done_marker_mode(driver_for, make_partner):
    rig = make_partner(stability={"done_marker": ".done"}, include=["**/*.csv"])
    rig.write("x.csv", b"x")
    rig.write("y.csv", b"y")
    driver = driver_for(rig)
    assert driver.tick().run_requests == []
    rig.write("x.csv.done", b"")
    rig.write("y.csv.done", b"", mtime=time.time() - 3600)  # older than y.csv: vouches for an earlier y.csv
    data = driver.tick()
    assert _requested(driver, data) == ["x.csv"]
    assert driver.instance.get_dynamic_partitions(partitions_name(rig.partner)) == ["x.csv"]


def test_changed_file_is_requested_again(driver_for, make_partner, s3):
    rig = make_partner(stability={"min_age_seconds": 0})
    path = rig.write("daily.csv", b"version 1")
    driver = driver_for(rig)
    assert all(r.success for r in driver.launch(driver.tick().run_requests))
    path.write_bytes(b"version 2, longer")
    os.utime(path, (time.time() + 5, time.time() + 5))
    data = driver.tick()
    assert _requested(driver, data) == ["daily.csv"]
    assert all(r.success for r in driver.launch(data.run_requests))
    versions = s3.list_object_versions(Bucket=rig.landing.bucket, Prefix=f"partners/{rig.partner.name}/daily.csv")
    assert len(versions["Versions"]) == 2  # the bucket keeps the old version
    assert driver.tick().run_requests == []


def test_scattered_changed_files_are_regrouped_into_one_range(driver_for, make_partner):
    """Changed files scattered among unchanged ones would each need a run: they are deleted from the
    partition set and re-added sorted on the next tick, then land in one ranged run."""
    rig = make_partner(stability={"min_age_seconds": 0})
    for i in range(8):
        rig.write(f"f{i}.csv", b"v1")
    driver = driver_for(rig)
    driver.launch(driver.tick().run_requests)
    later = time.time() + 5
    for i in (1, 3, 5, 6):  # three separate groups: more than MAX_SCATTERED_RUNS runs' worth
        rig.write(f"f{i}.csv", b"v2!", mtime=later)
    first = driver.tick()
    assert first.run_requests == []
    assert driver.instance.get_dynamic_partitions(partitions_name(rig.partner)) == \
        ["f0.csv", "f2.csv", "f4.csv", "f7.csv"]
    second = driver.tick()
    assert [driver.keys_of(r) for r in second.run_requests] == [["f1.csv", "f3.csv", "f5.csv", "f6.csv"]]
    assert all(r.success for r in driver.launch(second.run_requests))
    assert driver.tick().run_requests == []


def test_long_consecutive_changes_are_ranged_directly(driver_for, make_partner):
    rig = make_partner(stability={"min_age_seconds": 0})
    names = [f"f{i:03d}.csv" for i in range(30)]
    for name in names:
        rig.write(name, b"v1")
    driver = driver_for(rig)
    driver.launch(driver.tick().run_requests)
    later = time.time() + 5
    for name in names[2:25]:
        rig.write(name, b"v2!", mtime=later)
    data = driver.tick()
    assert [driver.keys_of(r) for r in data.run_requests] == [names[2:25]]


def test_failed_run_is_requested_again_with_a_new_run_key(driver_for, make_partner):
    rig = make_partner(stability={"min_age_seconds": 0})
    rig.write("ok.csv", b"fine")
    locked = rig.write("locked.csv", b"not yet readable")
    locked.chmod(0o000)
    driver = driver_for(rig)
    first = driver.tick()
    results = driver.launch(first.run_requests)
    assert not results[0].success
    locked.chmod(0o644)
    retry = driver.tick()
    assert _requested(driver, retry) == ["locked.csv"]
    assert retry.run_requests[0].run_key != first.run_requests[0].run_key
    assert all(r.success for r in driver.launch(retry.run_requests))
    assert driver.tick().run_requests == []


def test_in_flight_runs_are_not_requested_twice(driver_for, make_partner):
    """A created, not yet finished run (planned materializations logged, as the daemon does) blocks a re-request."""
    rig = make_partner(stability={"min_age_seconds": 0})
    rig.write("a.csv", b"a")
    rig.write("b.csv", b"b")
    driver = driver_for(rig)
    data = driver.tick()
    job = driver.defs.resolve_implicit_job_def_def_for_assets([driver.asset.key])
    driver.instance.create_run_for_job(job_def=job, asset_selection=frozenset([driver.asset.key]),
                                       tags=dict(data.run_requests[0].tags), status=DagsterRunStatus.NOT_STARTED)
    assert driver.tick().run_requests == []
    rig.write("c.csv", b"c")
    assert _requested(driver, driver.tick()) == ["c.csv"]


def test_excluded_and_pruned_paths_never_appear_and_problems_are_reported(driver_for, make_partner, sshd, capfd):
    rig = make_partner(stability={"min_age_seconds": 0}, exclude=["tmp/**", "**/*.part", "**/skip"])
    rig.write("keep/a.csv", b"a")
    rig.write("keep/b.csv.part", b"partial")
    rig.write("tmp/x.csv", b"excluded")
    rig.write("deep/skip/y.csv", b"pruned")
    locked_dir = rig.tree / "tmp" / "locked"
    locked_dir.mkdir()
    locked_dir.chmod(0o000)  # inside a pruned tree: never listed, so never reported
    unreadable = rig.tree / "unreadable"
    unreadable.mkdir()
    (unreadable / "z.csv").write_bytes(b"z")
    unreadable.chmod(0o000)
    os.symlink("/etc/passwd", rig.tree / "keep" / "link.csv")
    os.symlink(rig.tree / "loop", rig.tree / "loop")
    os.mkfifo(rig.tree / "keep" / "pipe.csv")
    driver = driver_for(rig)
    data = driver.tick()
    assert _requested(driver, data) == ["keep/a.csv"]
    assert driver.instance.get_dynamic_partitions(partitions_name(rig.partner)) == ["keep/a.csv"]
    warnings = capfd.readouterr().err  # Dagster's sensor logger writes to stderr
    assert "unreadable" in warnings and "link.csv (symlink)" in warnings and "pipe.csv (fifo)" in warnings
    assert "tmp/locked" not in warnings and "skip" not in warnings
    driver.tick()
    assert "not ingested" not in capfd.readouterr().err  # reported once, not on every tick


def test_unreachable_partner_fails_its_tick_with_host_and_cause(driver_for, make_partner):
    rig = make_partner(port=free_port())
    driver = driver_for(rig)
    with pytest.raises(ConnectionFailedError) as err:
        driver.tick()
    text = str(err.value)
    assert f"partner '{rig.partner.name}'" in text and f"127.0.0.1:{rig.partner.port}" in text
    assert "Connection refused" in text and "What to do" in text


def test_unsafe_and_reserved_names_are_reported_not_ingested(driver_for, make_partner, capfd):
    rig = make_partner(stability={"min_age_seconds": 0}, unzip=True)
    rig.write("ok.csv", b"ok")
    rig.write("new\nline.csv", b"n")
    rig.write("bell\x07.csv", b"b")
    rig.write("back\\slash.csv", b"s")
    rig.write("x.zip.unzipped/inner.csv", b"would collide with x.zip's expansion")
    driver = driver_for(rig)
    data = driver.tick()
    assert _requested(driver, data) == ["ok.csv"]
    warnings = capfd.readouterr().err
    assert "new\\nline.csv" in warnings and "bell\\x07.csv" in warnings and "x.zip.unzipped" in warnings
    assert "name not accepted" in warnings


def test_a_name_that_is_not_utf8_is_reported_and_the_rest_lands(driver_for, make_partner, s3, capfd):
    """One Latin-1 file name must not stop the partner: paramiko's own listing raises for the whole
    directory; ours refuses that one name and names it."""
    rig = make_partner(stability={"min_age_seconds": 0})
    rig.write("in/ok.csv", b"ok")
    rig.write("in/other.csv", b"other")
    bad = os.fsencode(rig.tree / "in") + b"/caf\xe9.csv"
    with open(bad, "wb") as out:
        out.write(b"latin-1 name")
    os.chmod(bad, 0o644)
    driver = driver_for(rig)
    data = driver.tick()
    assert sorted(_requested(driver, data)) == ["in/ok.csv", "in/other.csv"]
    warnings = capfd.readouterr().err
    assert "caf\\udce9.csv" in warnings and "not UTF-8" in warnings
    assert all(r.success for r in driver.launch(data.run_requests))
    assert driver.tick().run_requests == []


def test_partitions_registered_by_an_earlier_key_encoding_count_as_landed(driver_for, make_partner, s3):
    """Upgrading from percent-encoded keys copies nothing twice: a file landed under its old key is
    landed; a run of the old key still works; only a new file gets a partition of today's form."""
    from partner_ingest.ingest.partition_keys import legacy_partition_key

    rig = make_partner(stability={"min_age_seconds": 0})
    old_name, new_name = "reports/Q3 résumé, final.csv", "reports/Q4 résumé.csv"
    rig.write(old_name, b"landed before the upgrade")
    driver = driver_for(rig)
    legacy = legacy_partition_key(old_name)
    assert legacy != encode_partition_key(old_name)
    driver.instance.add_dynamic_partitions(partitions_name(rig.partner), [legacy])
    result = materialize_one(driver, legacy)
    assert result.success
    rig.write(new_name, b"after the upgrade")
    data = driver.tick()
    assert _requested(driver, data) == [encode_partition_key(new_name)]
    assert encode_partition_key(new_name) == "reports/Q4 résumé.csv"
    assert all(r.success for r in driver.launch(data.run_requests))
    assert driver.tick().run_requests == []
    landed = {o["Key"] for o in s3.list_objects_v2(Bucket=rig.landing.bucket)["Contents"]}
    assert landed == {f"partners/{rig.partner.name}/{old_name}", f"partners/{rig.partner.name}/{new_name}"}


def materialize_one(driver: SensorDriver, key: str):
    from dagster import materialize
    return materialize([driver.asset], instance=driver.instance, partition_key=key, raise_on_error=False)


def test_an_old_failure_under_a_legacy_key_is_forgotten_once_the_file_lands_under_todays(driver_for, make_partner):
    """Dagster keeps a legacy key's failed attempt as its latest attempt forever; once the file landed
    under today's key that failure must not count for it (its retries would reuse the landing's run key)."""
    from partner_ingest.defs.assets import files_asset_key
    from partner_ingest.defs.sensors import _attempts, _current_keys
    from partner_ingest.ingest.partition_keys import legacy_partition_key

    rig = make_partner(stability={"min_age_seconds": 0})
    name = "in/Q3 résumé.csv"
    path = rig.write(name, b"first unreadable, then landed")
    driver = driver_for(rig)
    legacy, today = legacy_partition_key(name), encode_partition_key(name)
    driver.instance.add_dynamic_partitions(partitions_name(rig.partner), [legacy])
    path.chmod(0o000)
    assert not materialize_one(driver, legacy).success
    path.chmod(0o644)
    driver.instance.add_dynamic_partitions(partitions_name(rig.partner), [today])
    assert materialize_one(driver, today).success

    storage = driver.instance.event_log_storage
    in_progress, failed = _attempts(_Context(driver.instance), rig.partner)
    assert legacy in failed  # what Dagster reports, forever
    tags = storage.get_latest_tags_by_partition(files_asset_key(rig.partner),
                                                DagsterEventType.ASSET_MATERIALIZATION, ["dagster/data_version"])
    materialized, _, failed_now, _ = _current_keys(storage, rig.partner, {k: "" for k in tags}, in_progress,
                                                  failed, {})
    assert today in materialized and today not in failed_now and legacy not in failed_now


class _Context:
    def __init__(self, instance):
        self.instance = instance
