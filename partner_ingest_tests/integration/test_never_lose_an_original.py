"""Nothing can be pointed elsewhere and no original is lost: crafted partition keys, same-size
replacements, partner-published checksums, archive_dir resolution. Real sshd, moto, Dagster runs."""

from __future__ import annotations

import hashlib
import os

import pytest
from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, materialize

from partner_ingest.config import LandingConfig
from partner_ingest.defs.asset_keys import OBJECT_CHECK, files_asset_key
from partner_ingest.defs.assets import build_files_asset
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.resources import default_resources
from partner_ingest.defs.tags import DATA_VERSION_TAG, RANGE_END_TAG, RANGE_START_TAG
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.results import failure_text, latest_materialization, version_keys


def _run_keys(partner, bucket: str, keys: list[str], instance: DagsterInstance, *, checks_only: bool = False):
    instance.add_dynamic_partitions(partitions_name(partner), keys)
    asset = build_files_asset(partner, LandingConfig(bucket=bucket))
    ranged = len(keys) > 1 or checks_only
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]} if ranged else {}
    selection = {}
    if checks_only:
        selection = {"selection": AssetSelection.checks(AssetCheckKey(files_asset_key(partner), OBJECT_CHECK))}
    return materialize([asset], instance=instance, resources=default_resources(),
                       partition_key=None if ranged else keys[0], tags=tags, raise_on_error=False,
                       **selection)


@pytest.mark.parametrize("relative", ["../outside/ledger.db", "/etc/hostname", "in/../../outside/ledger.db",
                                      "./a.csv", "in//a.csv", "in/."])
def test_crafted_partition_keys_are_refused_before_any_sftp_or_s3_call(make_partner, s3, sshd, relative):
    rig = make_partner(after_landing="delete")
    outside = rig.tree.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "ledger.db").write_bytes(b"the partner's private ledger")
    rig.write("in/a.csv", b"a")
    rig.write("a.csv", b"a")
    log_before = sshd.log_path.read_text()
    key = encode_partition_key(relative)
    with DagsterInstance.ephemeral() as instance:
        result = _run_keys(rig.partner, rig.landing.bucket, [key], instance)
    assert not result.success
    message = failure_text(result)
    assert "is refused" in message and rig.partner.name in message and "What to do" in message
    assert version_keys(s3, rig.landing.bucket) == []
    assert (outside / "ledger.db").read_bytes() == b"the partner's private ledger"
    assert (rig.tree / "a.csv").exists() and (rig.tree / "in/a.csv").exists()
    # Not even a login: refused before any SFTP session was opened.
    assert sshd.log_path.read_text().count("Accepted password") == log_before.count("Accepted password")


def test_a_crafted_key_in_a_range_fails_alone_and_the_others_land(make_partner, s3):
    rig = make_partner()
    rig.write("b.csv", b"b")
    with DagsterInstance.ephemeral() as instance:
        result = _run_keys(rig.partner, rig.landing.bucket, ["%2E%2E/etc/passwd", "b.csv"], instance)
        assert not result.success and "is refused" in failure_text(result)
        assert latest_materialization(instance, rig.partner, "b.csv").metadata["size"].value == 1
    assert version_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/b.csv"]


def test_crafted_keys_are_refused_by_checks_too(make_partner, s3):
    rig = make_partner()
    with DagsterInstance.ephemeral() as instance:
        result = _run_keys(rig.partner, rig.landing.bucket, ["%2E%2E/x"], instance, checks_only=True)
    assert not result.success and "is refused" in failure_text(result)


def test_same_size_same_mtime_replacement_is_landed_before_delete(make_partner, s3):
    """The partner re-sends a corrected file with preserved timestamps after the first landing: the
    remote bytes are re-read and compared before delete, so the correction lands instead of being lost."""
    rig = make_partner(after_landing="leave")
    original, corrected = b"id,amount\n1,100\n", b"id,amount\n1,900\n"
    path = rig.write("pay.csv", original, mtime=1_700_000_000)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["pay.csv"])
    assert result.success
    rig.write("pay.csv", corrected, mtime=1_700_000_000)           # same size, same mtime
    deleting = rig.partner.model_copy(update={"after_landing": "delete"})
    result, instance, _ = land(deleting, rig.landing.bucket, ["pay.csv"], instance=instance)
    assert result.success
    assert not path.exists()
    key = f"partners/{rig.partner.name}/pay.csv"
    assert s3.get_object(Bucket=rig.landing.bucket, Key=key)["Body"].read() == corrected
    meta = latest_materialization(instance, rig.partner, "pay.csv").metadata
    assert meta["uploaded"].value is True and meta["sha256"].value == hashlib.sha256(corrected).hexdigest()


def test_an_unchanged_already_landed_file_is_proven_equal_before_delete(make_partner, s3):
    rig = make_partner(after_landing="leave")
    path = rig.write("same.csv", b"same bytes")
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["same.csv"])
    assert result.success
    deleting = rig.partner.model_copy(update={"after_landing": "delete"})
    result, instance, _ = land(deleting, rig.landing.bucket, ["same.csv"], instance=instance)
    assert result.success and not path.exists()
    meta = latest_materialization(instance, rig.partner, "same.csv").metadata
    assert meta["uploaded"].value is False and meta["reverified_remote_bytes"].value is True
    assert meta["bytes_read"].value == len(b"same bytes")     # the remote bytes were really read again
    assert len(version_keys(s3, rig.landing.bucket)) == 1


def test_change_detection_content_lands_in_place_rewrites(make_partner, s3):
    rig = make_partner(change_detection="content")
    rig.write("r.csv", b"v1-xx", mtime=1_700_000_000)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["r.csv"])
    assert result.success
    assert latest_materialization(instance, rig.partner, "r.csv").tags[DATA_VERSION_TAG] == \
        f"5-1700000000-{hashlib.sha256(b'v1-xx').hexdigest()[:16]}"
    rig.write("r.csv", b"v2-yy", mtime=1_700_000_000)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["r.csv"], instance=instance)
    assert result.success
    assert s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/r.csv")["Body"].read() \
        == b"v2-yy"


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_a_sidecar_that_matches_is_recorded_as_verified_against(make_partner, s3, algorithm):
    rig = make_partner(source_checksums={"sidecar": f".{algorithm}", "algorithm": algorithm},
                       after_landing="delete")
    data = os.urandom(20 * 1024 * 1024 + 3)     # multipart: the check happens before the last part
    rig.write("in/big.bin", data)
    rig.write(f"in/big.bin.{algorithm}", f"{hashlib.new(algorithm, data).hexdigest()}  big.bin\n".encode())
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["in/big.bin"])
    assert result.success
    assert latest_materialization(instance, rig.partner, "in/big.bin").metadata["verified_against"].value == "sidecar"
    assert not (rig.tree / "in/big.bin").exists() and not (rig.tree / f"in/big.bin.{algorithm}").exists()


@pytest.mark.parametrize("size", [100, 20 * 1024 * 1024 + 3], ids=["single-put", "multipart"])
def test_a_sidecar_mismatch_aborts_the_upload_and_keeps_the_original(make_partner, s3, size):
    rig = make_partner(source_checksums={"sidecar": ".sha256"}, after_landing="delete")
    data = os.urandom(size)
    path = rig.write("x.bin", data)
    rig.write("x.bin.sha256", hashlib.sha256(b"what the partner meant to send").hexdigest().encode())
    result, _, _ = land(rig.partner, rig.landing.bucket, ["x.bin"])
    assert not result.success
    message = failure_text(result)
    assert "sidecar" in message and "/x.bin" in message and "What to do" in message
    assert version_keys(s3, rig.landing.bucket) == []
    assert not s3.list_multipart_uploads(Bucket=rig.landing.bucket).get("Uploads")
    assert path.read_bytes() == data


def test_a_missing_required_sidecar_refuses_the_file(make_partner, s3):
    rig = make_partner(source_checksums={"sidecar": ".sha256"})
    rig.write("y.csv", b"y")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["y.csv"])
    assert not result.success and "does not exist" in failure_text(result)
    assert version_keys(s3, rig.landing.bucket) == []


def _write_with_manifest(rig, files: dict[str, bytes], *, separator: str) -> None:
    """The files of ``d/``, and ``d/SHA256SUMS`` naming each in coreutils' format (``separator``: two
    spaces for text mode, space and ``*`` for binary mode)."""
    for name, data in files.items():
        rig.write(name, data)
    rig.write("d/SHA256SUMS", "".join(f"{hashlib.sha256(d).hexdigest()}{separator}{n.split('/')[-1]}\n"
                                      for n, d in files.items()).encode())


def test_a_manifest_verifies_every_file_of_its_directory(make_partner, s3):
    rig = make_partner(source_checksums={"manifest": "SHA256SUMS"})
    files = {"d/a.csv": b"alpha", "d/b.csv": b"beta"}
    _write_with_manifest(rig, files, separator=" *")
    result, instance, _ = land(rig.partner, rig.landing.bucket, sorted(files))
    assert result.success
    for name in files:
        assert latest_materialization(instance, rig.partner, name).metadata["verified_against"].value == "manifest"


def test_a_relative_archive_dir_is_resolved_inside_remote_dir_when_moving(make_partner):
    rig = make_partner(after_landing="move", archive_dir="done")
    rig.write("in/x.csv", b"x")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["in/x.csv"])
    assert result.success
    assert (rig.tree / "done/in/x.csv").read_bytes() == b"x"
    assert AssetKey(["partners", rig.partner.name, "files"]) == files_asset_key(rig.partner)


def _chown_like(tree, path) -> None:
    st = tree.stat()
    os.chown(path, st.st_uid, st.st_gid)


@pytest.mark.parametrize(("relative", "overrides"), [
    ("private/ledger.db", {"exclude": ["private/**"]}),
    ("upload.csv.part", {"exclude": ["**/*.part"]}),
    ("a.csv.done", {"stability": {"done_marker": ".done"}}),
    ("a.csv.sha256", {"source_checksums": {"sidecar": ".sha256", "required": False}}),
    ("notes.txt", {"include": ["**/*.csv"]}),
    ("sub/a.csv", {"recursive": False}),
], ids=["excluded-dir", "excluded-glob", "done-marker", "sidecar", "not-included", "not-recursive"])
def test_a_key_the_sensor_would_never_list_is_refused(make_partner, s3, relative, overrides):
    """An excluded in-progress upload, a marker or a sidecar named by a hand-made key is not landed,
    and with delete not deleted: a run applies the partner's selection exactly like the walk."""
    rig = make_partner(after_landing="delete", **overrides)
    path = rig.write(relative, b"not the sensor's to take")
    result, _, _ = land(rig.partner, rig.landing.bucket, [relative])
    assert not result.success and "is refused" in failure_text(result)
    assert path.exists() and version_keys(s3, rig.landing.bucket) == []


def test_a_key_through_a_symlinked_directory_is_refused(make_partner, s3):
    rig = make_partner(after_landing="delete")
    outside = rig.tree.parent / f"outside-{rig.partner.name}"
    outside.mkdir()
    _chown_like(rig.tree, outside)
    secret = outside / "ledger.db"
    secret.write_bytes(b"outside remote_dir")
    _chown_like(rig.tree, secret)
    os.symlink(outside, rig.tree / "shared")          # e.g. a partner's convenience link
    result, _, _ = land(rig.partner, rig.landing.bucket, ["shared/ledger.db"])
    assert not result.success and "resolves outside remote_dir" in failure_text(result)
    assert secret.exists() and version_keys(s3, rig.landing.bucket) == []


def test_sidecars_are_companions_never_partitions(make_partner, s3):
    """The example config's include globs do not name sidecars; the sensor still finds them, lands the
    file once its sidecar is there, and the sidecar follows its file on delete."""
    from dagster import instance_for_test

    from partner_ingest_tests.harness.sensor_helpers import SensorDriver

    rig = make_partner(include=["**/*.csv", "**/*.zip"], source_checksums={"sidecar": ".sha256"},
                       stability={"min_age_seconds": 0}, after_landing="delete")
    data = b"id\n1\n"
    rig.write("in/a.csv", data)
    with instance_for_test() as instance:
        driver = SensorDriver(rig.config, instance)
        assert not driver.tick().run_requests              # no sidecar yet: waits
        sidecar = rig.write("in/a.csv.sha256", f"{hashlib.sha256(data).hexdigest()}  a.csv\n".encode())
        tick = driver.tick()
        assert [driver.keys_of(r) for r in tick.run_requests] == [["in/a.csv"]]
        assert all(r.success for r in driver.launch(tick.run_requests))
        assert latest_materialization(instance, rig.partner, "in/a.csv").metadata["verified_against"].value == "sidecar"
    assert not (rig.tree / "in/a.csv").exists() and not sidecar.exists()


def test_a_manifest_is_never_deleted_while_its_directory_needs_it(make_partner, s3):
    rig = make_partner(source_checksums={"manifest": "SHA256SUMS"}, after_landing="delete")
    files = {f"d/f{i:02d}.csv": os.urandom(2000) for i in range(12)}
    _write_with_manifest(rig, files, separator="  ")
    result, _, _ = land(rig.partner, rig.landing.bucket, sorted(files))
    assert result.success
    assert sorted(p.name for p in (rig.tree / "d").iterdir()) == ["SHA256SUMS"]
    assert len(version_keys(s3, rig.landing.bucket)) == 12


def test_an_md5_sidecar_is_checked_against_the_remote_bytes_before_skipping(make_partner, s3):
    """Landed once; corrected with preserved timestamps and a new .md5: the landed bytes do not match
    the partner's md5, so the correction is landed rather than recorded as verified."""
    rig = make_partner(source_checksums={"sidecar": ".md5", "algorithm": "md5"})
    v1, v2 = b"id,amount\n1,100\n", b"id,amount\n1,900\n"
    md5 = "md5"  # the partner's algorithm (a variable: not a security use of md5 here)
    rig.write("p.csv", v1, mtime=1_700_000_000)
    rig.write("p.csv.md5", f"{hashlib.new(md5, v1).hexdigest()}  p.csv\n".encode())
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["p.csv"])
    assert result.success
    rig.write("p.csv", v2, mtime=1_700_000_000)
    rig.write("p.csv.md5", f"{hashlib.new(md5, v2).hexdigest()}  p.csv\n".encode())
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["p.csv"], instance=instance)
    assert result.success
    assert s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/p.csv")["Body"].read() == v2
    assert latest_materialization(instance, rig.partner, "p.csv").metadata["verified_against"].value == "sidecar"
