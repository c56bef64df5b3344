"""The partner-ingest command against the real sshd and moto: keyscan pins, check passes or names the
failing step, validate reports config errors."""

from __future__ import annotations

import socket

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
