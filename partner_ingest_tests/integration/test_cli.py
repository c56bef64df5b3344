"""The partner-ingest command against the real sshd and moto: keyscan pins, check passes or names the
failing step, validate reports config errors."""

from __future__ import annotations

import os
import socket
import time

import pytest
import yaml
from click.testing import CliRunner

from partner_ingest.cli import cli
from partner_ingest.defs.resources import default_resources


def _write(tmp_path, rig, name="partners.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(rig.config.model_dump(mode="json")))
    return path


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_keyscan_output_pins_a_working_connection(sshd, make_partner):
    result = _run("keyscan", "127.0.0.1", "--port", str(sshd.port))
    assert result.exit_code == 0, result.output
    listed = yaml.safe_load("\n".join(s for s in result.output.splitlines() if s.startswith(("host_keys", "  -"))))
    lines = listed["host_keys"]
    assert {line.split()[0] for line in lines} >= {"ssh-ed25519"}
    assert sshd.host_key_lines["ed25519"] in lines and "SHA256:" in result.output
    assert "out of band" in result.output
    for line in lines:
        rig = make_partner(host_keys=[line])
        with default_resources()["sftp"].open(rig.partner) as session:
            session.check_remote_dir()


def test_keyscan_names_an_unreachable_host():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(cli, ["keyscan", "127.0.0.1", "--port", str(port), "--timeout", "2"])
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.output and "refused" in result.output.lower()


def test_check_passes_for_a_good_partner(tmp_path, make_partner):
    rig = make_partner()
    rig.write("a.csv", b"x" * 10)
    rig.write("b.csv", b"y" * 5)
    result = _run("check", "--config", str(_write(tmp_path, rig)))
    print(result.output)
    assert result.exit_code == 0, result.output
    steps = [line.split(":")[1].strip() for line in result.output.splitlines()]
    assert steps == ["config OK", "secret found", "TCP reachable", "host key matches the pin", "authentication OK",
                     "remote directory readable", "server capabilities", "files matching the globs"]
    assert "2 file(s), 15 bytes" in result.output and "FAIL" not in result.output
    assert "2 not yet landed in s3://" in result.output
    assert "directory mtimes follow their files (1 directories compared)" in result.output

    from partner_ingest_tests.harness.dagster_helpers import land
    assert land(rig.partner, rig.landing.bucket, ["a.csv"])[0].success
    # A file rewritten in place: its mtime moves past its directory's, which creating it had set.
    later = time.time() + 120
    os.utime(rig.tree / "b.csv", (later, later))
    again = _run("check", "--config", str(_write(tmp_path, rig)))
    assert again.exit_code == 0, again.output
    assert "1 not yet landed in s3://" in again.output
    assert "directory mtimes: 1 of 1 directories older than a file inside them" in again.output


@pytest.mark.parametrize(("kwargs", "step", "words"), [
    ({"secret": {"password": "wrong"}}, "authentication OK", "refused user"),
    ({"host_keys": "other"}, "host key matches the pin", "not pinned"),
    ({"remote_dir": "/nonexistent"}, "remote directory readable", "/nonexistent"),
    ({"secret_id": "partner-ingest/not-there"}, "secret found", "does not exist"),
])
def test_check_fails_at_the_right_step(tmp_path, sshd, make_partner, kwargs, step, words):
    if kwargs.get("host_keys") == "other":
        kwargs = {"host_keys": [sshd.other_host_key_line]}
    rig = make_partner(**kwargs)
    result = _run("check", rig.partner.name, "--config", str(_write(tmp_path, rig)))
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"FAIL {rig.partner.name}: {step}:") and words in last and "What to do" in last, last
    assert "wrong" not in result.output


def test_validate_ok_and_invalid(tmp_path, make_partner):
    rig = make_partner()
    good = _write(tmp_path, rig)
    result = _run("validate", str(good))
    assert result.exit_code == 0 and result.output.strip() == f"{good}: 1 partners OK"
    raw = yaml.safe_load(good.read_text())
    raw["partners"][0]["port"] = 70000
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1 and rig.partner.name in result.output and "port" in result.output, result.output


def test_landed_lists_each_object_with_size_and_sha256(tmp_path, make_partner, s3):
    import hashlib

    from partner_ingest_tests.harness.dagster_helpers import land

    rig = make_partner()
    body = b"landed bytes " * 50
    rig.write("in/Q3 résumé.csv", body)
    result, _, _ = land(rig.partner, rig.landing.bucket, ["in/Q3 résumé.csv"])
    assert result.success
    config = _write(tmp_path, rig)
    listed = _run("landed", rig.partner.name, "--config", str(config))
    assert listed.exit_code == 0, listed.output
    line = next(s for s in listed.output.splitlines() if "résumé" in s)
    assert hashlib.sha256(body).hexdigest() in line and f" {len(body)} " in line
    assert f"s3://{rig.landing.bucket}/partners/{rig.partner.name}/in/Q3 résumé.csv" in line
    assert listed.output.strip().endswith(f"1 object(s) in s3://{rig.landing.bucket}")

    unknown = CliRunner().invoke(cli, ["landed", "nobody", "--config", str(config)])
    assert unknown.exit_code == 1 and "nobody" in unknown.output
    no_demo = CliRunner().invoke(cli, ["landed", "--demo", "--state-dir", str(tmp_path / "no-demo")])
    assert no_demo.exit_code == 1 and "no running demo" in no_demo.output and "scripts/demo.sh" in no_demo.output


def test_landed_names_the_bucket_it_cannot_list(tmp_path, make_partner, monkeypatch):
    rig = make_partner()
    monkeypatch.setenv("PARTNER_INGEST_BUCKET", "no-such-bucket-here")
    result = CliRunner().invoke(cli, ["landed", "--config", str(_write(tmp_path, rig))])
    assert result.exit_code == 1
    assert "cannot list s3://no-such-bucket-here/" in result.output and "What to do" in result.output
