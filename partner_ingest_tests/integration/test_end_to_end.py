"""No manual step: `dagster dev` (webserver + daemon + code server) with the partner's sensor running
picks up files dropped into the real sshd tree and lands them in S3 with matching SHA-256. Beside it, a
partner whose server's host key changed: its sensor's ticks fail, no run is ever launched, and the
notifications sensor (running in the same daemon) tells the webhook once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from contextlib import ExitStack

import yaml

from partner_ingest.config import CONFIG_ENV, IngestConfig
from partner_ingest.defs.notifications import INTERVAL_ENV, RUNNING_ENV, WEBHOOK_ENV
from partner_ingest_tests.harness.processes import free_port, stop_process
from partner_ingest_tests.harness.webhook import webhook_receiver


def test_files_dropped_on_the_sftp_server_land_on_their_own(make_partner, sshd, s3, tmp_path, capsys):
    rig = make_partner(stability={"min_age_seconds": 0}, sensor={"interval_seconds": 10, "running": True},
                       include=["**/*.csv"])
    moved = make_partner(host_keys=[sshd.other_host_key_line], sensor={"interval_seconds": 10, "running": True})
    moved.write("waiting.csv", b"never read: the key is not pinned\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = tmp_path / "partners.yaml"
    both = IngestConfig(landing=rig.landing, partners=[rig.partner, moved.partner])
    config.write_text(yaml.safe_dump(both.model_dump(mode="json")))
    hook = ExitStack()
    hook_url, received = hook.enter_context(webhook_receiver())
    env = {**os.environ, "DAGSTER_HOME": str(home), CONFIG_ENV: str(config), WEBHOOK_ENV: hook_url,
           RUNNING_ENV: "1", INTERVAL_ENV: "30"}
    log = tmp_path / "dagster-dev.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(free_port()),
                                 "-m", "partner_ingest.definitions"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    try:
        files = {f"drop/{i}/report {i}.csv": os.urandom(50_000 + i) for i in range(5)}
        files["ignored.txt"] = b"not included"
        for name, data in files.items():
            rig.write(name, data)
        wanted = {f"partners/{rig.partner.name}/{n}": hashlib.sha256(d).hexdigest()
                  for n, d in files.items() if n.endswith(".csv")}
        deadline = time.monotonic() + 240
        landed: dict[str, str] = {}
        while time.monotonic() < deadline and set(landed) != set(wanted):
            assert proc.poll() is None, log.read_text()[-3000:]
            for item in s3.list_objects_v2(Bucket=rig.landing.bucket).get("Contents", []):
                if item["Key"] in wanted and item["Key"] not in landed:
                    body = s3.get_object(Bucket=rig.landing.bucket, Key=item["Key"])["Body"].read()
                    landed[item["Key"]] = hashlib.sha256(body).hexdigest()
            time.sleep(1)
        elapsed = time.monotonic() - started
        assert landed == wanted, f"landed {sorted(landed)} of {sorted(wanted)}:\n{log.read_text()[-4000:]}"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=rig.landing.bucket)["Contents"]]
        assert f"partners/{rig.partner.name}/ignored.txt" not in keys
        with capsys.disabled():
            print(f"\n[end to end] dagster dev start to 5 files landed by the sensor: {elapsed:.1f} s")

        opened = f"OPEN host_key: partner '{moved.partner.name}'"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(opened in body["text"] for _, body in received):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        texts = [body["text"] for _, body in received]
        [message] = [t for t in texts if opened in t]
        assert "which is not pinned" in message and f"sensor '{moved.partner.name}_files_sensor'" in message
        assert not any(rig.partner.name in t for t in texts)  # the healthy partner raised nothing
        assert not s3.list_objects_v2(Bucket=rig.landing.bucket,
                                      Prefix=moved.partner.landing_prefix).get("Contents")
    finally:
        stop_process(proc, group=True, timeout=60)
        hook.close()
    assert subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout == b""
