"""The planning rules, driven directly with a clock we control (the sensor tests drive them through
Dagster with real time)."""

from __future__ import annotations

from partner_ingest.config import PartnerConfig
from partner_ingest.ingest.plan import SensorCursor, plan_ingestion
from partner_ingest.sftp.walk import Listing, RemoteEntry

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOX9DK+u0/TmQigRmaMo5k1Ynbt90m8HlN6FKH0w78Ji"


def _partner(**changes) -> PartnerConfig:
    return PartnerConfig(name="acme", host="h", username="u", secret_id="s", host_keys=[KEY], remote_dir="/in",
                         landing_prefix="p", **changes)


def _plan(partner, files, cursor=None, now=1000, **kwargs):
    listing = Listing(files=[RemoteEntry(path, size, mtime) for path, size, mtime in files])
    defaults = {"materialized_versions": {}, "in_progress": set(), "failed_attempts": {},
                "existing_keys": lambda: []}
    return plan_ingestion(partner, listing, cursor=cursor or SensorCursor(), now=now, **{**defaults, **kwargs})


def test_min_age_needs_two_sightings_that_far_apart_and_the_cursor_round_trips():
    partner = _partner(stability={"min_age_seconds": 60})
    files = [("a.csv", 10, 5), ("b.csv", 20, 5)]
    first = _plan(partner, files, now=1000)
    assert first.runs == [] and first.waiting_for_stability == 2
    cursor = SensorCursor.decode(first.cursor.encode())
    assert _plan(partner, files, cursor=cursor, now=1059).runs == []
    ready = _plan(partner, files, cursor=cursor, now=1060)
    assert [b.keys for b in ready.runs] == [("a.csv", "b.csv")]
    grown = _plan(partner, [("a.csv", 11, 5), ("b.csv", 20, 5)], cursor=cursor, now=1060)
    assert [b.keys for b in grown.runs] == [("b.csv",)]  # a.csv changed: its clock restarts


def test_cursor_is_bounded_whatever_the_tree_size():
    partner = _partner(stability={"min_age_seconds": 60}, limits={"max_partitions_per_tick": 100})
    files = [(f"f{i:05d}", 1, 1) for i in range(10_000)]
    plan = _plan(partner, files)
    assert len(plan.cursor.first_seen) == 200
    assert len(plan.cursor.encode()) < 4000


def test_failed_and_waiting_files_never_starve_new_ones():
    partner = _partner(stability={"min_age_seconds": 0}, after_landing="delete",
                       limits={"max_partitions_per_tick": 3})
    files = [(f"a{i}.csv", 1, 1) for i in range(3)] + [("b_failed.csv", 1, 1), ("z_new.csv", 1, 1)]
    plan = _plan(partner, files, materialized_versions={f"a{i}.csv": "1-1" for i in range(3)},
                 failed_attempts={"b_failed.csv": 7}, existing_keys=lambda: ["a0.csv", "a1.csv", "a2.csv",
                                                                              "b_failed.csv"])
    requested = [k for b in plan.runs for k in b.keys] + plan.new_keys
    assert "z_new.csv" in requested and "b_failed.csv" in requested


def test_run_keys_change_with_each_retry():
    partner = _partner(stability={"min_age_seconds": 0})
    files = [("a.csv", 1, 1)]
    existing = {"existing_keys": lambda: ["a.csv"]}
    first = _plan(partner, files, failed_attempts={"a.csv": 10}, **existing).runs[0].run_key
    same = _plan(partner, files, failed_attempts={"a.csv": 10}, **existing).runs[0].run_key
    retry = _plan(partner, files, failed_attempts={"a.csv": 11}, **existing).runs[0].run_key
    assert first == same != retry


def test_files_that_keep_failing_back_off_exponentially():
    partner = _partner(stability={"min_age_seconds": 0}, sensor={"interval_seconds": 60})
    files = [("bad.csv", 1, 1), ("good.csv", 1, 1)]
    existing = {"existing_keys": lambda: ["bad.csv", "good.csv"]}

    def tick(attempt, now, cursor):
        plan = _plan(partner, files, failed_attempts={"bad.csv": attempt}, cursor=cursor, now=now,
                     materialized_versions={"good.csv": "1-1"}, **existing)
        return [k for b in plan.runs for k in b.keys], SensorCursor.decode(plan.cursor.encode())

    requested, cursor = tick(10, 1000, SensorCursor())
    assert requested == ["bad.csv"]                 # first failure: retried at once
    requested, cursor = tick(11, 1001, cursor)      # second failure: waits one interval (due at 1061)
    assert requested == []
    assert tick(11, 1060, cursor)[0] == [] and tick(11, 1061, cursor)[0] == ["bad.csv"]
    requested, cursor = tick(12, 1062, cursor)      # third failure: two intervals (due at 1182)
    assert requested == []
    assert tick(12, 1181, cursor)[0] == [] and tick(12, 1182, cursor)[0] == ["bad.csv"]
