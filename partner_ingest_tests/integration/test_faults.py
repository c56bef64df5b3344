"""Faults on the partner link and on S3, injected by a real TCP proxy, driven through Dagster runs
against the real sshd and moto. Each case asserts: no partial object, no open multipart upload, no
duplicate landing, the right files materialized, and a message naming partner, file and what to do."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
import yaml
from dagster import DagsterInstance
from dagster_aws.s3 import S3Resource
from dagster_aws.secretsmanager import SecretsManagerResource

from partner_ingest.config import CONFIG_ENV
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.resources import SftpResource
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.fault_proxy import Fault, FaultProxy
from partner_ingest_tests.harness.files import MiB
from partner_ingest_tests.harness.results import failure_text, materializations, object_keys


def _resources(**sftp_settings) -> dict:
    settings = {"reconnect_backoff_seconds": 0.2, "channel_timeout_seconds": 3.0, **sftp_settings}
    return {"sftp": SftpResource(secrets=SecretsManagerResource(), **settings), "s3": S3Resource(max_attempts=5)}


@pytest.fixture
def sftp_proxy(sshd):
    proxy = FaultProxy(sshd.port)
    yield proxy
    proxy.close()


def _write(rig, name: str, size: int) -> str:
    data = os.urandom(size)
    rig.write(name, data)
    return hashlib.sha256(data).hexdigest()


def _assert_clean(s3, bucket: str) -> None:
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "an open multipart upload was left"


@pytest.mark.parametrize("fault", [Fault(cut_after=6 * MiB), Fault(reset_after=6 * MiB)], ids=["cut", "reset"])
def test_dropped_link_resumes_at_the_same_offset_inside_the_same_upload(make_partner, s3, sftp_proxy, fault):
    rig = make_partner(port=sftp_proxy.port)
    expected = _write(rig, "big.bin", 40 * MiB)
    sftp_proxy.add(fault)  # the first connection drops after 6 MiB; the reconnect goes through
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["big.bin"], resources=_resources())
    assert result.success
    body = s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/big.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == expected
    [event] = materializations(instance, rig.partner, "big.bin")
    assert event.metadata["resumes"].value == 1
    assert event.metadata["bytes_read"].value == 40 * MiB  # nothing read twice
    assert sftp_proxy.connections == 2 and sftp_proxy.faults_fired == 1
    versions = s3.list_object_versions(Bucket=rig.landing.bucket)["Versions"]
    assert len(versions) == 1  # one upload, no duplicate landing
    _assert_clean(s3, rig.landing.bucket)


def test_stalled_link_times_out_and_resumes(make_partner, s3, sftp_proxy):
    rig = make_partner(port=sftp_proxy.port)
    expected = _write(rig, "stall.bin", 12 * MiB)
    sftp_proxy.add(Fault(stall_after=3 * MiB))
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["stall.bin"], resources=_resources())
    assert result.success
    [event] = materializations(instance, rig.partner, "stall.bin")
    assert event.metadata["sha256"].value == expected and event.metadata["resumes"].value == 1


def test_link_that_keeps_dropping_fails_clearly_after_bounded_retries(make_partner, s3, sftp_proxy):
    rig = make_partner(port=sftp_proxy.port)
    _write(rig, "doomed.bin", 30 * MiB)
    rig.write("small.csv", b"lands before the doomed file")
    sftp_proxy.default_fault = Fault(cut_after=4 * MiB)
    result, instance, keys = land(rig.partner, rig.landing.bucket, ["doomed.bin", "small.csv"],
                                  resources=_resources(reconnect_attempts=3))
    assert not result.success
    text = failure_text(result)
    assert rig.partner.name in text and "doomed.bin" in text and "What to do" in text
    assert object_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/small.csv"]
    assert instance.get_materialized_partitions(files_asset_key(rig.partner)) == {encode_partition_key("small.csv")}
    _assert_clean(s3, rig.landing.bucket)


def test_file_that_vanishes_while_read_is_not_landed(make_partner, s3, sftp_proxy):
    rig = make_partner(port=sftp_proxy.port)
    path = rig.tree / "gone.bin"
    _write(rig, "gone.bin", 24 * MiB)
    # Stall the link after 2 MiB; while it hangs, the partner deletes the file; the resume finds it gone.
    sftp_proxy.add(Fault(stall_after=2 * MiB))
    sftp_proxy.on_fault = path.unlink
    result, _, _ = land(rig.partner, rig.landing.bucket, ["gone.bin"], resources=_resources())
    assert not result.success
    assert "vanished while it was read" in failure_text(result)
    assert object_keys(s3, rig.landing.bucket) == []
    _assert_clean(s3, rig.landing.bucket)


@pytest.fixture
def s3_proxy(moto, monkeypatch):
    proxy = FaultProxy(moto.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    yield proxy
    proxy.close()


def test_s3_connection_resets_are_retried_by_botocore(make_partner, s3, s3_proxy):
    rig = make_partner()
    expected = _write(rig, "parts.bin", 40 * MiB)
    s3_proxy.refuse(b"partNumber=", times=2)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["parts.bin"], resources=_resources())
    assert result.success
    assert s3_proxy.faults_fired == 2
    [event] = materializations(instance, rig.partner, "parts.bin")
    assert event.metadata["sha256"].value == expected
    _assert_clean(s3, rig.landing.bucket)


SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 87\r\n"
             b"Connection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
             b"</Error>")


def test_s3_throttling_503_is_retried_by_botocore(make_partner, s3, s3_proxy):
    rig = make_partner()
    expected = _write(rig, "throttled.bin", 24 * MiB)
    s3_proxy.refuse(b"partNumber=", times=3, answer=SLOW_DOWN)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["throttled.bin"], resources=_resources())
    assert result.success and s3_proxy.faults_fired == 3
    [event] = materializations(instance, rig.partner, "throttled.bin")
    assert event.metadata["sha256"].value == expected
    _assert_clean(s3, rig.landing.bucket)


def test_s3_failing_every_part_fails_clearly_and_aborts_the_multipart_upload(make_partner, s3, s3_proxy):
    rig = make_partner()
    _write(rig, "never.bin", 24 * MiB)
    s3_proxy.refuse(b"partNumber=")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["never.bin"], resources=_resources())
    assert not result.success
    text = failure_text(result)
    assert rig.partner.name in text and "never.bin" in text and "What to do" in text
    assert object_keys(s3, rig.landing.bucket) == []
    _assert_clean(s3, rig.landing.bucket)


def test_repeated_run_at_the_same_version_uploads_nothing_and_says_so(make_partner, s3):
    rig = make_partner()
    _write(rig, "once.bin", 3 * MiB)
    instance = DagsterInstance.ephemeral()
    first, _, _ = land(rig.partner, rig.landing.bucket, ["once.bin"], instance=instance)
    second, _, _ = land(rig.partner, rig.landing.bucket, ["once.bin"], instance=instance)
    assert first.success and second.success
    events = materializations(instance, rig.partner, "once.bin")
    assert sorted(e.metadata["uploaded"].value for e in events) == [False, True]
    assert len(s3.list_object_versions(Bucket=rig.landing.bucket)["Versions"]) == 1
    logs = " ".join(str(e.message) for e in instance.all_logs(second.run_id))
    assert "already landed at this version" in logs and "nothing read or uploaded" in logs
    outcomes = sorted(e.metadata["outcome"].value for e in events)
    assert outcomes[0].startswith("already landed at this version") and outcomes[1].startswith("landed: read")


def test_run_killed_mid_upload_leaves_no_object_under_the_final_key(make_partner, s3, tmp_path):
    rig = make_partner()
    _write(rig, "killed.bin", 200 * MiB)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = tmp_path / "partners.yaml"
    config.write_text(yaml.safe_dump(rig.config.model_dump(mode="json")))
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(partitions_name(rig.partner), ["killed.bin"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "partner_ingest.definitions",
         "--select", f"partners/{rig.partner.name}/files", "--partition", "killed.bin"],
        env={**os.environ, "DAGSTER_HOME": str(home), CONFIG_ENV: str(config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not s3.list_multipart_uploads(Bucket=rig.landing.bucket).get("Uploads"):
        assert proc.poll() is None, "the run ended before its multipart upload started"
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    assert object_keys(s3, rig.landing.bucket) == []
    # The orphaned multipart upload is S3's to expire: the landing bucket's lifecycle rule aborts incomplete
    # uploads (deploy/ecs). Nothing is visible under the final key meanwhile.
    assert s3.list_multipart_uploads(Bucket=rig.landing.bucket)["Uploads"][0]["Key"].endswith("killed.bin")


def test_run_spreads_files_over_parallel_sessions(make_partner, s3, sftp_proxy):
    rig = make_partner(port=sftp_proxy.port, limits={"max_connections": 3})
    names = [f"small/{i:02d}.csv" for i in range(12)]
    for name in names:
        rig.write(name, name.encode() * 50)
    result, instance, keys = land(rig.partner, rig.landing.bucket, names, resources=_resources())
    assert result.success
    assert sftp_proxy.connections == 3
    assert instance.get_materialized_partitions(files_asset_key(rig.partner)) == set(keys)


def test_partner_refusing_extra_sessions_only_slows_the_run(make_partner, s3, sftp_proxy):
    rig = make_partner(port=sftp_proxy.port, limits={"max_connections": 4})
    names = [f"{i}.csv" for i in range(6)]
    for name in names:
        rig.write(name, b"x")
    sftp_proxy.add(Fault(), Fault(cut_after=0))  # the first session works, the second is dropped at once
    result, instance, keys = land(rig.partner, rig.landing.bucket, names,
                                  resources=_resources(reconnect_attempts=1))
    assert result.success
    assert instance.get_materialized_partitions(files_asset_key(rig.partner)) == set(keys)
    logs = " ".join(str(e.message) for e in instance.all_logs(result.run_id))
    assert "continuing with 1 connection(s)" in logs


FORBIDDEN = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n")


def test_a_403_on_head_is_an_error_not_not_landed(make_partner, s3, s3_proxy):
    """S3 refusing to show what is under the key must not read as "absent" and upload over it."""
    rig = make_partner()
    _write(rig, "a.csv", 1000)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["a.csv"], resources=_resources())
    assert result.success
    s3_proxy.refuse(b"HEAD /", answer=FORBIDDEN)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a.csv"], instance=instance, resources=_resources())
    assert not result.success
    message = failure_text(result)
    assert "refused" in message and "a.csv" in message and "What to do" in message
    versions = s3.list_object_versions(Bucket=rig.landing.bucket).get("Versions", [])
    assert len(versions) == 1, "the file was uploaded again over an object S3 would not show"


def test_a_permission_error_while_reconnecting_is_reported_as_one(make_partner, s3, sftp_proxy):
    rig = make_partner(port=sftp_proxy.port)
    _write(rig, "locked/big.bin", 24 * MiB)
    # The link stalls after 2 MiB; meanwhile the partner locks the directory; the resume may not stat it.
    sftp_proxy.add(Fault(stall_after=2 * MiB))
    sftp_proxy.on_fault = lambda: (rig.tree / "locked").chmod(0o000)
    try:
        result, _, _ = land(rig.partner, rig.landing.bucket, ["locked/big.bin"], resources=_resources())
    finally:
        (rig.tree / "locked").chmod(0o755)
    assert not result.success
    message = failure_text(result)
    assert "may not stat" in message and "grant read access" in message
    assert "connection" not in message.split("What to do")[0].lower()
    assert object_keys(s3, rig.landing.bucket) == []
    _assert_clean(s3, rig.landing.bucket)


def test_a_drop_under_files_sharing_one_session_reconnects_once_and_lands_them_all(make_partner, s3, sftp_proxy):
    """Eight files in flight on one session when it drops: each thread sees the drop, one replaces the
    session, the others resume on that replacement, and every file lands whole and once."""
    rig = make_partner(port=sftp_proxy.port, limits={"max_connections": 1, "files_per_connection": 8})
    names = [f"shared/{i}.bin" for i in range(8)]
    expected = {name: _write(rig, name, 3 * MiB) for name in names}
    sftp_proxy.add(Fault(cut_after=6 * MiB))  # mid-way through the eight files' 24 MiB
    result, instance, _ = land(rig.partner, rig.landing.bucket, names, resources=_resources())
    assert result.success
    assert sftp_proxy.connections == 2 and sftp_proxy.faults_fired == 1  # one replacement, not one per file
    for name in names:
        [event] = materializations(instance, rig.partner, name)
        assert event.metadata["sha256"].value == expected[name]
    events = [materializations(instance, rig.partner, name)[0] for name in names]
    assert sum(event.metadata["resumes"].value for event in events) >= 1  # (others were between requests)
    assert sum(event.metadata["bytes_read"].value for event in events) == 24 * MiB  # nothing read twice
    versions = s3.list_object_versions(Bucket=rig.landing.bucket)["Versions"]
    assert len(versions) == len(names)
    _assert_clean(s3, rig.landing.bucket)
