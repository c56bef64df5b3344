"""Every bad input ends in a typed error naming the partner (and file), with nothing written to S3."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from partner_ingest.config import PartnerConfig
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.resources import default_resources
from partner_ingest.errors import (
    AuthenticationError,
    HostKeyError,
    SecretError,
)
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.results import failure_text, object_keys
from partner_ingest_tests.harness.sshd import KEY_USER


def _capture_debug(caplog) -> None:
    """DEBUG everywhere except botocore/urllib3, whose DEBUG wire dumps include every response body
    (GetSecretValue too) by design; keep them at INFO in production as well."""
    caplog.set_level(logging.DEBUG)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        caplog.set_level(logging.INFO, logger=noisy)


def _open(partner: PartnerConfig):
    return default_resources()["sftp"].open(partner)


def test_wrong_password_is_refused_and_nothing_lands(make_partner, s3, sshd, caplog):
    _capture_debug(caplog)
    rig = make_partner(secret={"password": "not-the-password-7f3a"})
    rig.write("a.csv", b"x")
    with pytest.raises(AuthenticationError) as err:
        _open(rig.partner)
    message = str(err.value)
    assert rig.partner.name in message and rig.partner.secret_id in message and "What to do" in message
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert not result.success
    assert "refused user" in failure_text(result)
    assert object_keys(s3, rig.landing.bucket) == []
    everything = caplog.text + "".join(str(e) for e in instance.all_logs(result.run_id))
    assert "not-the-password-7f3a" not in everything
    assert sshd.password not in everything


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_each_private_key_type_logs_in(make_partner, s3, sshd, kind, caplog):
    _capture_debug(caplog)
    rig = make_partner(auth=kind)
    rig.write("k.bin", b"key auth")
    result, instance, _ = land(rig.partner, rig.landing.bucket, ["k.bin"])
    assert result.success
    assert object_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/k.bin"]
    key = sshd.client_keys[kind]
    everything = caplog.text + "".join(str(e) for e in instance.all_logs(result.run_id))
    body = "".join(key.private_pem.splitlines()[1:-1])
    assert body[:40] not in everything
    if key.passphrase:
        assert key.passphrase not in everything


def test_wrong_key_is_refused(make_partner, sshd):
    rig = make_partner(secret={"private_key": _unauthorized_key_pem(sshd)}, username=KEY_USER)
    with pytest.raises(AuthenticationError, match="ssh-ed25519 private key") as err:
        _open(rig.partner)
    assert rig.partner.name in str(err.value) and rig.partner.secret_id in str(err.value)


def _unauthorized_key_pem(sshd) -> str:
    path = sshd.workdir / "unauthorized_ed25519"
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text()


def test_encrypted_key_without_passphrase_is_a_secret_error(make_partner, sshd):
    key = sshd.client_keys["rsa"]
    rig = make_partner(secret={"private_key": key.private_pem}, username=KEY_USER)
    with pytest.raises(SecretError, match="encrypted and no 'passphrase'") as err:
        _open(rig.partner)
    assert key.passphrase not in str(err.value)


def test_wrong_passphrase_is_a_secret_error(make_partner, sshd):
    key = sshd.client_keys["rsa"]
    rig = make_partner(secret={"private_key": key.private_pem, "passphrase": "wrong-pass-123"}, username=KEY_USER)
    with pytest.raises(SecretError, match="could not be loaded") as err:
        _open(rig.partner)
    assert "wrong-pass-123" not in str(err.value)


def test_changed_host_key_is_refused_with_the_offered_fingerprint(make_partner, s3, sshd):
    rig = make_partner(host_keys=[sshd.other_host_key_line])
    rig.write("a.csv", b"x")
    with pytest.raises(HostKeyError) as err:
        _open(rig.partner)
    message = str(err.value)
    served = sshd.host_key_lines["ed25519"]
    assert "SHA256:" in message and served in message and "out of band" in message
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert not result.success and "not pinned" in failure_text(result)
    assert object_keys(s3, rig.landing.bucket) == []


def _stranger_p384_line(sshd) -> str:
    path = sshd.workdir / "stranger_p384"
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(path)], check=True)
    return " ".join((sshd.workdir / "stranger_p384.pub").read_text().split()[:2])


def test_unknown_host_key_type_is_refused(make_partner, sshd):
    rig = make_partner(host_keys=[_stranger_p384_line(sshd)])
    with pytest.raises(HostKeyError, match="not pinned") as err:
        _open(rig.partner)
    assert rig.partner.name in str(err.value)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_any_pinned_key_of_the_server_is_accepted(make_partner, sshd, kind):
    """A partner may pin several keys; one matching key of a type the server holds is enough."""
    p384 = _stranger_p384_line(sshd)
    rig = make_partner(host_keys=[p384, sshd.host_key_lines[kind]])
    with _open(rig.partner) as session:
        session.check_remote_dir()


def test_missing_remote_directory(make_partner, s3):
    rig = make_partner(remote_dir="/nonexistent/partner/dir")
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a.csv"])
    assert not result.success
    text = failure_text(result)
    assert "/nonexistent/partner/dir" in text and "does not exist" in text and rig.partner.name in text
    assert object_keys(s3, rig.landing.bucket) == []


def test_unreadable_file_fails_the_run_but_its_neighbours_land(make_partner, s3):
    rig = make_partner()
    rig.write("a_ok.csv", b"first")
    secret_file = rig.write("b_locked.csv", b"locked")
    secret_file.chmod(0o000)
    rig.write("c_ok.csv", b"third")
    result, instance, keys = land(rig.partner, rig.landing.bucket, ["a_ok.csv", "b_locked.csv", "c_ok.csv"])
    assert not result.success
    text = failure_text(result)
    assert "b_locked.csv" in text and "may not read" in text and rig.partner.name in text
    assert sorted(object_keys(s3, rig.landing.bucket)) == [
        f"partners/{rig.partner.name}/a_ok.csv", f"partners/{rig.partner.name}/c_ok.csv"]
    status = instance.get_materialized_partitions(files_asset_key(rig.partner))
    assert status == {keys[0], keys[2]}


def test_missing_bucket(make_partner, s3):
    rig = make_partner()
    rig.write("a.csv", b"data")
    result, _, _ = land(rig.partner, "no-such-bucket-for-partner-ingest", ["a.csv"])
    assert not result.success
    text = failure_text(result)
    assert "no-such-bucket-for-partner-ingest" in text and "does not exist" in text and "a.csv" in text


def test_missing_secret(make_partner, secretsmanager):
    rig = make_partner()
    broken = rig.partner.model_copy(update={"secret_id": "partner-ingest/not-there"})
    with pytest.raises(SecretError, match="does not exist") as err:
        _open(broken)
    assert broken.name in str(err.value)


@pytest.mark.parametrize("payload", [{"user": "x"}, {"password": ""}, "not json", ["list"]])
def test_secret_without_credentials(make_partner, secretsmanager, payload):
    rig = make_partner()
    secretsmanager.put_secret_value(SecretId=rig.partner.secret_id,
                                    SecretString=payload if isinstance(payload, str) else json.dumps(payload))
    with pytest.raises(SecretError, match=rig.partner.secret_id):
        _open(rig.partner)
