"""A server that lies (no size, wrong size, long or short replies, capped reads, no mtime, a file
swapped for a link) never lands wrong bytes and never costs the partner its original: each case is a
real Dagster run against a real (asyncssh) SFTP server that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import os

import pytest
from dagster import instance_for_test

from partner_ingest.defs.tags import DATA_VERSION_TAG
from partner_ingest.sftp.reader import DEFAULT_CHUNK_SIZE
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.files import KiB, MiB
from partner_ingest_tests.harness.misbehaving_sftp import Misbehaviour
from partner_ingest_tests.harness.results import failure_text, latest_materialization, version_keys
from partner_ingest_tests.harness.sensor_helpers import SensorDriver


@pytest.mark.parametrize(("misbehaviour", "says"), [
    (Misbehaviour(omit_size=True), "reported no size"),
    (Misbehaviour(size_delta=-100), "more bytes than the size its server reported"),
    (Misbehaviour(size_delta=+100), "shrank while it was read"),
    (Misbehaviour(long_reads=10), "protocol error"),
    (Misbehaviour(long_reads=10, read_cap=32 * KiB), "protocol error"),
], ids=["no-size", "under-reported-size", "over-reported-size", "long-replies", "long-replies-capped"])
def test_a_lying_server_lands_nothing_and_keeps_the_original(misbehaving_partner, s3, misbehaviour, says):
    rig = misbehaving_partner(misbehaviour, after_landing="delete")
    data = os.urandom(3 * MiB + 17)
    path = rig.write("report.csv", data)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["report.csv"])
    assert not result.success
    message = failure_text(result)
    assert says in message
    assert rig.partner.name in message and "/report.csv" in message and "What to do" in message
    assert version_keys(s3, rig.landing.bucket) == []  # no wrong object, not even an old version
    assert not s3.list_multipart_uploads(Bucket=rig.landing.bucket).get("Uploads")
    assert path.read_bytes() == data  # the original is still on the partner's server


def test_a_small_file_from_a_server_that_under_reports_its_size_is_refused(misbehaving_partner, s3):
    """Below the multipart threshold the whole file is one PutObject: the EOF proof still comes first."""
    rig = misbehaving_partner(Misbehaviour(size_delta=-1), after_landing="delete")
    path = rig.write("tiny.txt", b"0123456789")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["tiny.txt"])
    assert not result.success and "more bytes than the size" in failure_text(result)
    assert version_keys(s3, rig.landing.bucket) == [] and path.exists()


@pytest.mark.parametrize("misbehaviour", [Misbehaviour(short_reads=True), Misbehaviour(read_cap=32 * KiB),
                                          Misbehaviour(read_cap=64 * KiB, short_reads=True)],
                         ids=["short-replies", "capped-32k", "capped-64k-and-short"])
def test_short_and_capped_replies_land_byte_exact(misbehaving_partner, s3, misbehaviour):
    rig = misbehaving_partner(misbehaviour)
    sizes = {"small.bin": 300 * KiB + 3, "multipart.bin": 20 * MiB + 5}
    data = {name: os.urandom(size) for name, size in sizes.items()}
    for name, content in data.items():
        rig.write(name, content)
    result, instance, keys = land(rig.partner, rig.landing.bucket, sorted(data))
    assert result.success
    for name, content in data.items():
        body = s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(content).hexdigest()
        meta = latest_materialization(instance, rig.partner, name).metadata
        assert meta["sha256"].value == hashlib.sha256(content).hexdigest()


def test_a_read_cap_is_learned_from_the_first_short_reply(misbehaving_partner, s3):
    """A 32 KiB cap costs about one request per 32 KiB, not one round trip per piece of every 255 KiB ask."""
    rig = misbehaving_partner(Misbehaviour(read_cap=32 * KiB))
    size = 16 * MiB - 1
    rig.write("big.bin", os.urandom(size))
    rig.counters.reset()
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["big.bin"])
    assert result.success
    counters = rig.counters.snapshot()
    reads = counters["reads"]
    ideal = -(-size // (32 * KiB))
    # The requests in flight when the cap first shows: the partner's reads in flight in 255 KiB asks, or
    # the whole file if smaller (65 here with the 32 MiB default).
    first = min(-(-size // DEFAULT_CHUNK_SIZE), rig.partner.limits.read_in_flight_bytes // DEFAULT_CHUNK_SIZE)
    # Only those are answered short (the reader before learning kept asking 255 KiB and completing each
    # answer piece by piece: 449 short answers here).
    assert counters["short_answers"] <= first + 2, counters
    # Each of them needs 7 follow-ups; after that every request is answered in full. Without learning it
    # would be 8 requests per 255 KiB, in series.
    assert reads <= ideal + first + 2, (reads, ideal, first)
    assert latest_materialization(instance, rig.partner, "big.bin").metadata["read_chunk_size"].value == 32 * KiB


def test_a_read_cap_offered_by_limits_extension_is_used_from_the_first_request(misbehaving_partner, s3):
    rig = misbehaving_partner(Misbehaviour(read_cap=64 * KiB, limits=True))
    size = 4 * MiB + 1
    rig.write("f.bin", os.urandom(size))
    rig.counters.reset()
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["f.bin"])
    assert result.success
    counters = rig.counters.snapshot()
    assert counters["max_read_requested"] <= 64 * KiB
    assert counters["short_answers"] == 0
    assert latest_materialization(instance, rig.partner, "f.bin").metadata["read_chunk_size"].value == 64 * KiB


def test_a_file_swapped_for_a_symlink_after_the_listing_is_refused(misbehaving_partner, s3):
    rig = misbehaving_partner(after_landing="delete")
    rig.write("secret.txt", b"not the partner's to send")
    path = rig.write("data.csv", b"a,b\n1,2\n")
    rig.replace_with_symlink("data.csv", "secret.txt")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["data.csv"])
    assert not result.success
    message = failure_text(result)
    assert "symbolic link" in message and "/data.csv" in message and "What to do" in message
    assert version_keys(s3, rig.landing.bucket) == []
    assert os.path.islink(path) and (rig.tree / "secret.txt").exists()


def test_no_mtime_gives_a_content_identity_and_same_size_rewrites_are_landed(misbehaving_partner, s3):
    rig = misbehaving_partner(Misbehaviour(omit_mtime=True), stability={"min_age_seconds": 0})
    first = b"id,amount\n1,100\n"
    rig.write("ledger.csv", first)
    with instance_for_test() as instance:
        driver = SensorDriver(rig.config, instance)
        tick = driver.tick()
        assert len(tick.run_requests) == 1
        assert all(r.success for r in driver.launch(tick.run_requests))
        version = latest_materialization(instance, rig.partner, "ledger.csv").tags[DATA_VERSION_TAG]
        assert version.startswith(f"{len(first)}-nomtime-")
        assert version.endswith(hashlib.sha256(first).hexdigest()[:16])
        assert driver.tick().run_requests == []      # same bytes: landed, nothing asked again

        corrected = b"id,amount\n1,900\n"               # same size, no mtime to tell
        rig.write("ledger.csv", corrected)
        tick = driver.tick()
        assert len(tick.run_requests) == 1
        assert all(r.success for r in driver.launch(tick.run_requests))
        body = s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/ledger.csv")["Body"]
        assert body.read() == corrected
        assert driver.tick().run_requests == []


def test_the_listing_report_says_when_the_server_sends_no_mtime(misbehaving_partner, capfd):
    rig = misbehaving_partner(Misbehaviour(omit_mtime=True))
    rig.write("a.csv", b"x")
    with instance_for_test() as instance:
        SensorDriver(rig.config, instance).tick()
    assert "sends no modification time for 1 file(s)" in capfd.readouterr().err
