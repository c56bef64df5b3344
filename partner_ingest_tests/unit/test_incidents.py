"""The pure incident rules behind the notifications sensor: when an incident opens, when it clears, what
the cursor keeps, what a message says."""

from __future__ import annotations

from datetime import timedelta

from partner_ingest.ingest.incidents import (
    FailedAttempt,
    NotificationsCursor,
    changes,
    cleared_message,
    failing_file_incidents,
    host_key_incident,
    is_host_key_failure,
    late_incident,
    opened_message,
    parse_incident_id,
)

HOST_KEY_TEXT = ("[partner 'acme'] sftp.acme.example:22 offered host key "
                 "ssh-ed25519 SHA256:abc, which is not pinned (pinned: ssh-ed25519 SHA256:def). What to do: ...")


def _describe(key: str) -> str:
    return f"/outbound/{key}"


def test_late_only_after_the_window():
    day = timedelta(days=1)
    assert late_incident("acme", day, last_landed=1000.0, watching_since=0, now=1000.0 + 86400) is None
    late = late_incident("acme", day, last_landed=1000.0, watching_since=0, now=1000.0 + 86401, run_id="r1")
    assert late is not None and late.id == "late:acme" and "expected every 1d" in late.problem
    assert late.run_id == "r1"
    assert late_incident("acme", None, last_landed=None, watching_since=0, now=10**9) is None


def test_never_landed_is_late_only_a_window_after_watching_started():
    hour = timedelta(hours=1)
    assert late_incident("acme", hour, last_landed=None, watching_since=5000, now=5000 + 3600) is None
    late = late_incident("acme", hour, last_landed=None, watching_since=5000, now=5000 + 3601)
    assert late is not None and "nothing has landed yet" in late.problem


def test_file_incident_needs_three_distinct_failed_runs_since_its_last_landing():
    fails = [FailedAttempt("a.csv", 10, "r1", "boom"), FailedAttempt("a.csv", 20, "r2", "boom"),
             FailedAttempt("a.csv", 30, "r3", "[partner 'acme', file '/outbound/a.csv'] gone; [partner 'acme', "
                           "file '/outbound/b.csv'] other")]
    assert failing_file_incidents("acme", fails[:2], {}, _describe) == []
    [incident] = failing_file_incidents("acme", fails, {}, _describe)
    assert incident.id == "file:acme:a.csv" and incident.file == "/outbound/a.csv" and incident.run_id == "r3"
    assert "failed in 3 runs in a row" in incident.problem
    assert "gone" in incident.problem and "b.csv" not in incident.problem
    # a landing between the failures resets the count: only the two after it are "in a row"
    assert failing_file_incidents("acme", fails, {"a.csv": 15}, _describe) == []
    # one run planning the partition twice is one failure
    same_run = [FailedAttempt("a.csv", i, "r1", "boom") for i in range(5)]
    assert failing_file_incidents("acme", same_run, {}, _describe) == []


def test_host_key_failures_are_their_own_incident_not_file_failures():
    fails = [FailedAttempt("a.csv", i, f"r{i}", HOST_KEY_TEXT) for i in range(1, 5)]
    assert is_host_key_failure(HOST_KEY_TEXT) and not is_host_key_failure("permission denied")
    assert failing_file_incidents("acme", fails, {}, _describe) == []
    incident = host_key_incident("acme", fails, last_landed_storage_id=None)
    assert incident is not None and incident.id == "host_key:acme" and incident.run_id == "r4"
    assert incident.problem == ("the SFTP server's host key changed: sftp.acme.example:22 offered host key "
                                "ssh-ed25519 SHA256:abc, which is not pinned (pinned: ssh-ed25519 SHA256:def)")
    assert "host_keys" in incident.action
    assert host_key_incident("acme", fails, last_landed_storage_id=5) is None  # landed since: cleared
    assert host_key_incident("acme", [FailedAttempt("a.csv", 1, "r1", "boom")], None) is None


def test_a_files_sensor_failing_on_the_host_key_opens_the_incident_without_any_run():
    tick = ("partner_ingest.errors.HostKeyError: " + HOST_KEY_TEXT + "\n  File \"sensors.py\", line 1")
    incident = host_key_incident("acme", [], last_landed_storage_id=7, sensor_tick_error=tick,
                                 sensor="acme_files_sensor")
    assert incident is not None and incident.id == "host_key:acme" and incident.run_id is None
    assert "offered host key ssh-ed25519 SHA256:abc, which is not pinned" in incident.problem
    assert "sensor 'acme_files_sensor'" in incident.problem
    # A tick failing for another reason, or the newest tick succeeding again, opens nothing.
    assert host_key_incident("acme", [], 7, sensor_tick_error="ConnectionFailedError: refused") is None
    assert host_key_incident("acme", [], 7, sensor_tick_error=None) is None


def test_changes_open_once_clear_once_and_keep_unevaluated_partners():
    late = late_incident("acme", timedelta(hours=1), None, 0, 7200)
    first = changes([], [late], ["acme"])
    assert [i.id for i in first.opened] == ["late:acme"] and first.cleared == [] and first.open_ids == ["late:acme"]
    again = changes(first.open_ids, [late], ["acme"])
    assert again.opened == [] and again.cleared == []
    gone = changes(first.open_ids, [], ["acme"])
    assert gone.cleared == ["late:acme"] and gone.open_ids == []
    unreadable = changes(["late:globex"], [], ["acme"])
    assert unreadable.cleared == [] and unreadable.open_ids == ["late:globex"]


def test_cursor_round_trip_and_garbage():
    cursor = NotificationsCursor(open_ids=("file:acme:q3 r\u00e9sum\u00e9.csv", "late:acme"), watching_since=12.5)
    assert NotificationsCursor.parse(cursor.serialize()) == cursor
    assert NotificationsCursor.parse("not json") == NotificationsCursor()
    assert NotificationsCursor.parse(None) == NotificationsCursor()


def test_incident_ids_keep_colons_in_partition_keys():
    assert parse_incident_id("file:acme:dir/a:b.csv") == ("file", "acme", "dir/a:b.csv")
    assert parse_incident_id("late:acme") == ("late", "acme", None)


def test_messages_name_partner_file_action_and_run():
    [incident] = failing_file_incidents(
        "acme", [FailedAttempt("a.csv", i, f"r{i}", "boom") for i in range(3)], {}, _describe)
    text = opened_message(incident, "https://dagster.example/")
    assert "partner 'acme'" in text and "file '/outbound/a.csv'" in text and "What to do:" in text
    assert "Run: https://dagster.example/runs/r2" in text
    assert is_host_key_failure("Failure: [partner 'a'] 127.0.0.1:2222 offered host key x, which is not pinned")
    assert "Run: run r2" in opened_message(incident, None)
    cleared = cleared_message(incident.id, lambda partner, key: f"/outbound/{key}", None, run_id="r9")
    assert cleared.startswith("[partner-ingest] CLEARED file: partner 'acme', file '/outbound/a.csv'")
    assert "run r9" in cleared
