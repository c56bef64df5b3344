"""Large files stream through with flat memory; a failed multipart upload leaves nothing behind.

The 200 MiB case runs through the real CLI (``dagster asset materialize``) in its own process so its
peak RSS can be read from the kernel (``wait4``) and compared with a 1 KiB run of the same command.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml
from dagster import DagsterInstance

from partner_ingest.config import CONFIG_ENV
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.resources import default_resources
from partner_ingest.errors import RemoteFileChangedError
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.ingest.transfer import land_file
from partner_ingest_tests.harness.files import MiB, write_random


def test_200_mib_file_lands_with_matching_sha256_and_flat_memory(make_partner, s3, tmp_path, capsys):
    rig = make_partner()
    rig.tree.joinpath("big").mkdir(mode=0o755)
    expected = write_random(rig.tree / "big" / "200MiB.bin", 200 * MiB)
    (rig.tree / "small.csv").write_bytes(b"x" * 1024)
    (rig.tree / "small.csv").chmod(0o644)

    rss = {}
    for name in ("small.csv", "big/200MiB.bin"):
        started = time.monotonic()
        code, peak, output = _run_with_rusage(rig, tmp_path, name)
        rss[name] = (peak, time.monotonic() - started)
        assert code == 0, output[-3000:]

    body = s3.get_object(Bucket=rig.landing.bucket, Key=f"partners/{rig.partner.name}/big/200MiB.bin")["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(MiB), b""):
        digest.update(chunk)
    assert digest.hexdigest() == expected
    growth = rss["big/200MiB.bin"][0] - rss["small.csv"][0]
    with capsys.disabled():
        print(f"\n[200 MiB landing] peak RSS {rss['big/200MiB.bin'][0]:.0f} MiB "
              f"(1 KiB file: {rss['small.csv'][0]:.0f} MiB, growth {growth:.0f} MiB), "
              f"wall {rss['big/200MiB.bin'][1]:.1f} s including process start")
    # What a streaming landing holds: the reads in flight (32 MiB by default), the upload's parts (4 x 8 MiB)
    # and their copies; a landing that buffered the file would grow by its 200 MiB.
    bound = 100 + rig.partner.limits.read_in_flight_bytes / MiB
    assert growth < bound, f"memory grew {growth:.0f} MiB for a 200 MiB file (bound {bound:.0f}): not streaming"


def _vm_hwm_mib(pid: int) -> float:
    """A process's peak RSS since its exec (VmHWM). ``wait4``'s ru_maxrss would also count the pages
    of the forked copy of this (large) pytest process before exec."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def _run_with_rusage(rig, tmp_path: Path, relative_path: str):
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = tmp_path / "partners.yaml"
    config.write_text(yaml.safe_dump(rig.config.model_dump(mode="json")))
    env = {**os.environ, "DAGSTER_HOME": str(home), CONFIG_ENV: str(config)}
    key = encode_partition_key(relative_path)
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(partitions_name(rig.partner), [key])
    log = tmp_path / f"{key.replace('/', '_')}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "partner_ingest.definitions",
             "--select", f"partners/{rig.partner.name}/files", "--partition", key],
            env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        high_water = 0.0
        while time.monotonic() < deadline:
            # The CLI runs the step in a child process (multiprocess executor): watch the whole tree.
            with contextlib.suppress(psutil.Error):
                for member in [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]:
                    high_water = max(high_water, _vm_hwm_mib(member))
            if proc.poll() is not None:
                return proc.returncode, high_water, log.read_text()
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise TimeoutError(f"dagster asset materialize did not finish in 300 s: {log.read_text()[-2000:]}")


def test_file_changing_during_a_multipart_upload_aborts_it(make_partner, s3):
    """The partner appends while we read: nothing lands, no multipart upload stays open."""
    rig = make_partner()
    path = rig.tree / "growing.bin"
    write_random(path, 48 * MiB)
    bucket = rig.landing.bucket
    appended = threading.Event()

    def append_once_upload_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
                with path.open("ab") as out:
                    out.write(b"late bytes")
                appended.set()
                return
            time.sleep(0.01)

    writer = threading.Thread(target=append_once_upload_started, daemon=True)
    writer.start()
    with default_resources()["sftp"].link(rig.partner) as link:
        try:
            land_file(link, s3, bucket=bucket, relative_path="growing.bin", multipart_threshold=5 * MiB)
        except RemoteFileChangedError as exc:
            error = exc
        else:
            error = None
    writer.join(timeout=60)
    assert appended.is_set(), "the upload finished before the file could be changed"
    assert error is not None and "changed while it was read" in str(error) and "growing.bin" in str(error)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_reader_keeps_requests_in_flight_bounded(make_partner):
    from partner_ingest.sftp.reader import PipelinedReader

    rig = make_partner()
    expected = write_random(rig.tree / "f.bin", 20 * MiB + 12345)
    with default_resources()["sftp"].open(rig.partner) as session:
        handle = session.sftp.open(f"{rig.tree}/f.bin", "rb")
        reader = PipelinedReader(session.sftp, handle.handle, size=20 * MiB + 12345, max_in_flight=8)
        digest, peak = hashlib.sha256(), 0
        while chunk := reader.read(3 * MiB + 7):
            assert len(chunk) == 3 * MiB + 7 or reader.offset == 20 * MiB + 12345
            digest.update(chunk)
            peak = max(peak, reader.in_flight)
        handle.close()
    assert digest.hexdigest() == expected
    assert peak == 8
