"""The integrity rules as pure functions: no root, no servers, milliseconds."""

from __future__ import annotations

import pytest

from partner_ingest.config import PartnerConfig, SourceChecksums, parse_config
from partner_ingest.errors import ConfigError
from partner_ingest.ingest.after_landing import archive_path
from partner_ingest.ingest.partition_keys import encode_partition_key, relative_path_of_key
from partner_ingest.ingest.plan import SensorCursor, needs_content_check, plan_ingestion
from partner_ingest.ingest.source_checksums import is_checksum_file, parse_digest
from partner_ingest.sftp.walk import Listing, RemoteEntry
from partner_ingest.versions import metadata_part, version_token

SHA = "ab" * 32


def _partner(**overrides) -> PartnerConfig:
    fields = {"name": "acme", "host": "h", "username": "u", "secret_id": "s",
              "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFb8yR2qKzB8n5GZbJjx6bXb8iZ5rXQ2wz2n2C3pZ4xS"],
              "remote_dir": "/out", "landing_prefix": "p/acme", "stability": {"min_age_seconds": 0}}
    return PartnerConfig(**{**fields, **overrides})


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "./a", "a//b", "a/.", "", "a/\x00b"])
def test_keys_that_leave_remote_dir_are_refused(path):
    with pytest.raises(ValueError):
        relative_path_of_key(encode_partition_key(path))


@pytest.mark.parametrize("path", ["a.csv", "dots.../...hidden...", "with space/日本.csv", "a/b/c", "..a/b..",
                                  "ctl\x01"])
def test_keys_the_sensor_makes_are_accepted(path):
    assert relative_path_of_key(encode_partition_key(path)) == path


def test_a_key_that_is_not_utf8_is_refused():
    with pytest.raises(ValueError):
        relative_path_of_key("%FF%FE")


@pytest.mark.parametrize("relative", ["/etc/passwd", "../x", "a/../../x"])
def test_a_move_target_never_leaves_the_archive(relative):
    with pytest.raises(ValueError):
        archive_path("/out/archive", relative)
    assert archive_path("/out/archive", "in/x.csv") == "/out/archive/in/x.csv"


def test_archive_dir_resolves_inside_remote_dir_or_is_absolute():
    assert _partner(after_landing="move", archive_dir="done/").archive_root == "/out/done"
    assert _partner(after_landing="move", archive_dir="/srv/archive").archive_root == "/srv/archive"
    raw = {"landing": {"bucket": "landing-bucket"},
           "partners": [{**_partner().model_dump(mode="json"), "after_landing": "move", "archive_dir": "../elsewhere"}]}
    with pytest.raises(ConfigError, match="leaves remote_dir"):
        parse_config(raw)


def test_source_checksums_need_exactly_one_source():
    with pytest.raises(ValueError):
        SourceChecksums()
    with pytest.raises(ValueError):
        SourceChecksums(sidecar=".sha256", manifest="SHA256SUMS")
    assert is_checksum_file(SourceChecksums(sidecar=".sha256"), "a/b.csv.sha256")
    assert is_checksum_file(SourceChecksums(manifest="SHA256SUMS"), "a/SHA256SUMS")


@pytest.mark.parametrize(("text", "manifest", "found"), [
    (SHA, False, SHA),
    (f"{SHA.upper()}  x.csv\n", False, SHA),
    (f"{SHA} *x.csv", False, SHA),
    (f"{SHA}  other.csv", False, None),
    ("not a digest", False, None),
    (f"{'cd' * 32}  y.csv\n{SHA} *x.csv\n", True, SHA),
    (f"{SHA}  ./x.csv\n", True, SHA),
    (f"{SHA}\n", True, None),             # a manifest line must name its file
    ("ab" * 16 + "  x.csv", False, None),  # an md5-length digest is no sha256
])
def test_published_digests_are_parsed_in_coreutils_formats(text, manifest, found):
    assert parse_digest(text, algorithm="sha256", name="x.csv", manifest=manifest) == found


@pytest.mark.parametrize("text", ["[]", "null", "3", '"text"', "{not json", '{"seen": 5}'])
def test_an_unreadable_cursor_is_reset_not_fatal(text):
    cursor = SensorCursor.decode(text)
    assert cursor.reset and cursor.first_seen == {} and cursor.retries == {}


def test_a_cursor_survives_its_own_round_trip():
    cursor = SensorCursor(first_seen={b"12345678": 7}, content_after="a/b.csv")
    again = SensorCursor.decode(cursor.encode())
    assert again == cursor and not again.reset


def _plan(partner, files, materialized, digests=None, checksum_files=()):
    listing = Listing(files=files, checksum_files=set(checksum_files))
    return plan_ingestion(partner, listing, materialized_versions=materialized, in_progress=set(),
                          failed_attempts={}, existing_keys=lambda: list(materialized), cursor=SensorCursor(),
                          now=1_000, content_digests=digests)


def test_without_mtime_the_identity_is_the_content():
    partner = _partner()
    entry = RemoteEntry("a.csv", 10, None)
    landed = {"a.csv": version_token(10, None, SHA)}
    assert metadata_part(landed["a.csv"]) == "10-nomtime"
    assert needs_content_check(partner, Listing(files=[entry]), landed) == [("a.csv", entry)]
    assert _plan(partner, [entry], landed, {"a.csv": SHA}).runs == []
    assert len(_plan(partner, [entry], landed, {"a.csv": "cd" * 32}).runs) == 1
    # Not hashed this tick (over budget): counted as landed until its turn.
    assert _plan(partner, [entry], landed, {}).runs == []


def test_metadata_identity_is_unchanged_for_servers_with_mtimes():
    partner = _partner()
    entry = RemoteEntry("a.csv", 10, 5)
    assert needs_content_check(partner, Listing(files=[entry]), {"a.csv": "10-5"}) == []
    assert _plan(partner, [entry], {"a.csv": "10-5"}).runs == []
    assert len(_plan(partner, [entry], {"a.csv": "10-4"}).runs) == 1


def test_change_detection_content_checks_files_whose_size_and_mtime_match():
    partner = _partner(change_detection="content")
    entry = RemoteEntry("a.csv", 10, 5)
    landed = {"a.csv": version_token(10, 5, SHA)}
    assert needs_content_check(partner, Listing(files=[entry]), landed) == [("a.csv", entry)]
    assert len(_plan(partner, [entry], landed, {"a.csv": "ee" * 32}).runs) == 1
    # A metadata token recorded before the switch is re-verified once (the run proves the bytes).
    assert len(_plan(partner, [entry], {"a.csv": "10-5"}, {"a.csv": SHA}).runs) == 1


def test_a_file_waits_for_its_required_sidecar():
    partner = _partner(source_checksums={"sidecar": ".sha256"})
    files = [RemoteEntry("a.csv", 1, 1), RemoteEntry("b.csv", 1, 1)]
    plan = _plan(partner, files, {}, checksum_files=["b.csv.sha256"])
    landed_keys = {k for run in plan.runs for k in run.keys}
    assert landed_keys == {"b.csv"}
    assert plan.waiting_for_stability == 1


def test_mtime_seen_by_only_one_side_does_not_loop():
    """A server sending an mtime in listings but not in stat (or the reverse) must not re-land every tick."""
    partner = _partner()
    run_saw_no_mtime = {"a.csv": version_token(10, None, SHA)}
    assert _plan(partner, [RemoteEntry("a.csv", 10, 5)], run_saw_no_mtime, {"a.csv": SHA}).runs == []
    run_saw_mtime = {"a.csv": version_token(10, 5)}
    assert _plan(partner, [RemoteEntry("a.csv", 10, None)], run_saw_mtime, {}).runs == []
    assert len(_plan(partner, [RemoteEntry("a.csv", 11, None)], run_saw_mtime, {}).runs) == 1


def test_the_walk_and_a_run_refuse_the_same_paths():
    from partner_ingest.ingest.selection import Selection

    partner = _partner(exclude=["**/*.part", "tmp/**"], stability={"done_marker": ".done"}, unzip=True,
                       after_landing="move", archive_dir="archive", source_checksums={"sidecar": ".sha256"})
    rules = Selection(partner)
    for refused in ["big.csv.part", "tmp/x.csv", "x.csv.done", "x.csv.sha256", "archive/x.csv",
                    "a.zip.unzipped/x", "a\\b", "new\nline"]:
        assert rules.refusal(refused), refused
    assert rules.refusal("in/x.csv") is None
    assert _partner(recursive=False).recursive is False
    assert Selection(_partner(recursive=False)).refusal("in/x.csv")
