"""The landing cases against a second SFTP server implementation, ProFTPD's ``mod_sftp``.

OpenSSH is the server every other test uses; ProFTPD has its own SSH and SFTP code (no
``limits@openssh.com``, full replies to large reads, its own listing and rename code). Tests from the
other modules are re-run here unchanged: this module's ``make_partner`` points every partner at
ProFTPD, and pytest resolves fixtures for a test by the module it is collected in.
"""

from __future__ import annotations

import functools
import hashlib

import pytest

from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.resources import default_resources
from partner_ingest.errors import AuthenticationError, HostKeyError
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.s3.upload import read_sha256_tag
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.files import MiB, write_random
from partner_ingest_tests.harness.proftpd import HOST_KEY_TYPES
from partner_ingest_tests.harness.results import failure_text, object_keys
from partner_ingest_tests.integration import (
    test_after_landing,
    test_faults,
    test_landing,
    test_never_lose_an_original,
    test_sensor,
)

MULTIPART_THRESHOLD = 16 * MiB  # land_file's default: files of at least this size go multipart


@pytest.fixture
def make_partner(make_partner):
    """The conftest factory, with every partner on the ProFTPD fixture."""
    return functools.partial(make_partner, server="proftpd")


test_odd_names_land_with_per_file_metadata = \
    test_landing.test_odd_names_land_under_their_real_names_with_per_file_metadata
test_delete_after_landing = test_after_landing.test_delete_after_landing
test_move_keeps_the_relative_path_and_suffixes_clashes = \
    test_after_landing.test_move_keeps_the_relative_path_and_suffixes_clashes
test_second_run_of_the_same_file_uploads_nothing = \
    test_faults.test_repeated_run_at_the_same_version_uploads_nothing_and_says_so
test_same_size_replacement_is_landed_before_delete = \
    test_never_lose_an_original.test_same_size_same_mtime_replacement_is_landed_before_delete
test_sidecar_mismatch_aborts_the_upload = \
    test_never_lose_an_original.test_a_sidecar_mismatch_aborts_the_upload_and_keeps_the_original

instance = test_sensor.instance  # test_sensor's fixtures, which the two sensor tests below take
driver_for = test_sensor.driver_for
test_sensor_tick_lists_the_tree_and_requests_one_ranged_run = \
    test_sensor.test_new_files_become_partitions_and_one_ranged_run
# Symlinks, fifos and unreadable directories as ProFTPD's listings report them are still never ingested.
test_sensor_skips_links_fifos_and_unreadable_dirs = \
    test_sensor.test_excluded_and_pruned_paths_never_appear_and_problems_are_reported


def test_sizes_around_the_multipart_threshold_land_byte_exact_in_one_run(make_partner, s3):
    """Empty, one byte, either side of the multipart threshold, and a several-part file, in one ranged run."""
    rig = make_partner()
    sizes = {"empty.bin": 0, "one.bin": 1, "below.bin": MULTIPART_THRESHOLD - 1, "at.bin": MULTIPART_THRESHOLD,
             "above.bin": MULTIPART_THRESHOLD + 1, "multipart.bin": 40 * MiB + 12345}
    digests = {name: write_random(rig.tree / name, size) for name, size in sizes.items()}
    names = sorted(sizes)

    result, instance, keys = land(rig.partner, rig.landing.bucket, names)
    assert result.success

    records = instance.fetch_materializations(files_asset_key(rig.partner), limit=100).records
    metadata = {r.partition_key: r.asset_materialization.metadata for r in records}
    assert set(metadata) == set(keys)
    for name in names:
        key = f"partners/{rig.partner.name}/{name}"
        body = s3.get_object(Bucket=rig.landing.bucket, Key=key)["Body"]
        digest, size = hashlib.sha256(), 0
        for chunk in iter(functools.partial(body.read, MiB), b""):
            digest.update(chunk)
            size += len(chunk)
        assert (size, digest.hexdigest()) == (sizes[name], digests[name]), name
        assert read_sha256_tag(s3, rig.landing.bucket, key) == digests[name]
        meta = metadata[encode_partition_key(name)]
        assert meta["sha256"].value == digests[name] and meta["size"].value == sizes[name]
        assert meta["uploaded"].value is True
        multipart = "-" in s3.head_object(Bucket=rig.landing.bucket, Key=key)["ETag"]
        assert multipart == (sizes[name] >= MULTIPART_THRESHOLD), name


def test_wrong_password_is_refused_and_nothing_lands(make_partner, s3, proftpd):
    rig = make_partner(secret={"password": "not-the-password-5c1e"})
    rig.write("a.csv", b"x")
    with pytest.raises(AuthenticationError):
        default_resources()["sftp"].open(rig.partner)
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert not result.success
    text = failure_text(result)
    assert f"refused user '{proftpd.username}'" in text and rig.partner.secret_id in text and "What to do" in text
    assert object_keys(s3, rig.landing.bucket) == []
    logs = "".join(str(e) for e in instance.all_logs(result.run_id))
    assert "not-the-password-5c1e" not in logs and proftpd.password not in logs


def test_unpinned_host_key_is_refused_with_the_offered_key(make_partner, s3, sshd, proftpd):
    rig = make_partner(host_keys=[sshd.host_key_lines["ed25519"]])  # a real key, of another server
    rig.write("a.csv", b"x")
    with pytest.raises(HostKeyError) as err:
        default_resources()["sftp"].open(rig.partner)
    assert proftpd.host_key_lines["ed25519"] in str(err.value)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert not result.success and "not pinned" in failure_text(result)
    assert object_keys(s3, rig.landing.bucket) == []


@pytest.mark.parametrize("kind", HOST_KEY_TYPES)
def test_each_host_key_type_can_be_pinned_alone(make_partner, proftpd, kind):
    """Also proves the partners here really reach ProFTPD (its banner), not the OpenSSH fixture."""
    rig = make_partner(host_keys=[proftpd.host_key_lines[kind]])
    with default_resources()["sftp"].open(rig.partner) as session:
        session.check_remote_dir()
        transport = session.client.get_transport()
        assert transport.remote_version.startswith("SSH-2.0-mod_sftp")
        assert transport.get_remote_server_key().get_base64() == proftpd.host_key_lines[kind].split()[1]


def test_a_symlink_is_refused_although_proftpd_lstat_follows_it(make_partner, s3):
    """ProFTPD's LSTAT answers for the link's target; READLINK, sent with it, tells the link apart."""
    rig = make_partner(after_landing="delete")
    elsewhere = rig.tree.parent / f"{rig.tree.name}-private.txt"
    elsewhere.write_bytes(b"not the partner's to send")
    elsewhere.chmod(0o644)
    link = rig.tree / "a.csv"
    link.symlink_to(elsewhere)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert not result.success
    assert "symbolic link" in failure_text(result)
    assert object_keys(s3, rig.landing.bucket) == []
    assert link.is_symlink() and elsewhere.exists()
