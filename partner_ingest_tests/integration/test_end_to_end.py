"""No manual step: `dagster dev` (webserver + daemon + code server) with the partner's sensor running
picks up files dropped into the real sshd tree and lands them in S3 with matching SHA-256."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import yaml

from partner_ingest.config import CONFIG_ENV
from partner_ingest_tests.harness.processes import free_port, stop_process


def test_files_dropped_on_the_sftp_server_land_on_their_own(make_partner, s3, tmp_path, capsys):
    rig = make_partner(stability={"min_age_seconds": 0}, sensor={"interval_seconds": 10, "running": True},
                       include=["**/*.csv"])
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = tmp_path / "partners.yaml"
    config.write_text(yaml.safe_dump(rig.config.model_dump(mode="json")))
    env = {**os.environ, "DAGSTER_HOME": str(home), CONFIG_ENV: str(config)}
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
    finally:
        stop_process(proc, group=True, timeout=60)
    assert subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout == b""
