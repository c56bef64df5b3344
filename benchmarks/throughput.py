"""Throughput of one large file at 0, 20 and 100 ms RTT: OpenSSH, rclone and ours, through a delay line.

Why: on loopback every client looks fast, because the round trip costs nothing. What decides speed on a
far partner's link is how many bytes a client keeps in flight (SFTP requests, and the SSH channel window
that lets the server answer them). This puts the SFTP side behind a delay (``DelayProxy`` from the test
harness, in its own process) and measures, in one run, at each RTT:

* OpenSSH ``sftp`` get -> /dev/null, as it comes and with ``-R 256 -B 262144``;
* ours, read leg only (``PipelinedReader`` + SHA-256, no S3), at 8, 16, 32 and 64 MiB in flight, the SSH
  window sized as the product sizes it (``ConnectionSettings`` + the partner's
  ``limits.read_in_flight_bytes``, i.e. ``connection.channel_window``; the window each case really got is
  printed); plus two rows that set the window explicitly: 32 MiB in flight in a 32.5 MiB window (the
  in-flight plus two packets) and 64 MiB in flight in a 16 MiB window (``--window-case``);
* ours end to end (``land_file`` -> moto S3) with the product's defaults;
* rclone ``copyto`` sftp -> moto S3;
* with ``--small-files N`` (the flag alone: 2000), N x 16 KiB files at each RTT in ``--small-rtt-ms`` (default
  0 and 20; 100 if asked and in ``--rtt-ms``): ours as a Dagster run lands them (``RunPipeline`` over
  ``encode_partition_key`` keys, a ``PartnerLink`` factory as ``SftpResource.link`` builds it, ``Wanted()``,
  the partner's default ``limits.max_connections``), rclone ``copy --transfers 4`` sftp -> moto, OpenSSH
  ``sftp get -r`` to a temp dir; files/s and ours over rclone. ``--only-small`` runs only these:

    .venv/bin/python -m benchmarks.throughput --size-mib 64 --small-files 2000 --only-small --rtt-ms 0 20 --no-direct

The delay is the harness's ``DelayProxy`` (a user-space delay line: it forwards every byte RTT/2 after it
arrived, without a rate limit), because the kernel here has no ``netem`` (see its docstring). It runs in
its own process and its CPU is reported. The 0 ms level goes through the same proxy with no delay, so
"x self@0" compares like with like; the "direct" level (no proxy) shows what the proxy itself costs.
Only the SFTP side is delayed; moto is reached directly.

Everything is on 127.0.0.1: the harness's real sshd and moto, started here and stopped by PID at the end,
even on Ctrl-C, SIGTERM or an error. Needs root (sshd), openssh client and server, rclone. Run from the
repository root:

    sudo .venv/bin/python -m benchmarks.throughput --size-mib 128     # a quick look, ~3 min
    sudo .venv/bin/python -m benchmarks.throughput --size-mib 512 --json /tmp/throughput.json   # ~8 min
    sudo .venv/bin/python -m benchmarks.throughput --size-mib 512 --no-direct --skip-s3 --skip-openssh --repeat 3

Each case runs at every level back to back (then the next case), ``--repeat`` times; the median is
reported. The machine is shared, so every row also says how much CPU *other* processes used meanwhile
(*others*, in cores, from /proc/stat minus this benchmark's processes; steal included).

Timing. *MiB/s* is the transfer without the login: ours from opening the file to closing it (end to end:
``land_file``'s own time); OpenSSH's whole command minus the median of a login-only ``sftp`` command at the
same level (batch ``pwd``). rclone's is its whole command (marked ``*``; its login is a few RTTs of a much
longer transfer). *login s* is that login time. CPU is per process: the client (OpenSSH: sftp + ssh;
rclone; ours: the child process from opening the session on), the proxy, sshd's session processes, moto.
*peak RSS* is the client's VmHWM (OpenSSH: sftp + ssh, sampled every 20 ms; ours: the child's own). For our
read legs a second table gives the *streaming* rate, from the first 8 MiB read to the last: it leaves out
the round trips every file costs whatever is in flight (open, first reply, close).

Reused from ``benchmarks/transfer_throughput.py``: its rig set-up (``prepare``), CPU measurement of sshd
and moto (``Measure``/``SshdCpu``), ``run_child`` for the ``land_file`` case, the rclone command and
environment, ``purge``, ``versions``, and the per-process CPU readers ``proc_cpu`` and ``children``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from benchmarks import transfer_throughput as tt
from partner_ingest_tests.harness.files import KiB, MiB
from partner_ingest_tests.harness.processes import kill_group, run_interruptibly

REPO = Path(__file__).resolve().parents[1]
BIG = tt.BIG_FILE
PRODUCT_WINDOW = None  # a read case whose window is sized as the product sizes it

OPENSSH = "OpenSSH sftp get"
OPENSSH_BIG = "OpenSSH sftp -R 256 -B 262144"
OURS_S3 = "ours end to end (land_file)"
RCLONE = "rclone copyto sftp->S3"


def read_label(in_flight_mib: int, window_mib: float | None) -> str:
    window = "window as product" if window_mib is PRODUCT_WINDOW else f"window {window_mib:g} MiB"
    return f"ours read {in_flight_mib} MiB in flight, {window}"


# --------------------------------------------------------------------------------------------------
# the child: our read leg in its own process (its own CPU, GIL and peak RSS)


def child_read(spec_json: str) -> int:
    """Open a session with the given window, read the file with the given bytes in flight + SHA-256; print
    one JSON line. The window is what the channel really got (``in_window_size``), however it was sized."""
    from partner_ingest.sftp.connection import ConnectionSettings, open_session
    from partner_ingest.sftp.credentials import credentials_from_secret
    from partner_ingest.sftp.reader import DEFAULT_CHUNK_SIZE, PipelinedReader

    spec = json.loads(spec_json)
    partner = tt.partner_for(spec)
    partner = partner.model_copy(update={"limits": partner.limits.model_copy(
        update={"read_in_flight_bytes": spec["partner_in_flight"]})})
    settings = ConnectionSettings(**({"window_size": spec["window"]} if spec["window"] else {}))
    credentials = credentials_from_secret("bench", "bench-key",
                                          json.dumps({"private_key": Path(spec["key_file"]).read_text()}))
    rss_before_kib = tt.proc_status_kib("VmRSS")
    cpu_started, started = tt.process_cpu(), time.monotonic()
    with open_session(partner, credentials, settings) as session:
        logged_in = time.monotonic()
        chunk = DEFAULT_CHUNK_SIZE
        remote = session.sftp.open(spec["path"], "rb")
        reader = PipelinedReader(session.sftp, remote.handle, size=spec["size"], chunk_size=chunk,
                                 max_in_flight=max(1, spec["in_flight"] // chunk), server_limit=session.read_limit)
        digest = hashlib.sha256()
        first: tuple[float, int] | None = None   # when the first read returned, and the bytes it brought
        while piece := reader.read(spec["read_size"]):
            digest.update(piece)
            if first is None:
                first = (time.monotonic(), len(piece))
        last = time.monotonic()
        reader.confirm_eof()
        remote.close()
        read_done = time.monotonic()
        channel = session.sftp.get_channel()
        window, cipher = channel.in_window_size, session.client.get_transport().remote_cipher
    stream = (spec["size"] - first[1]) / MiB / (last - first[0]) if first and last > first[0] else None
    print(json.dumps({"login_seconds": logged_in - started, "read_seconds": read_done - logged_in,
                      "stream_mib_s": stream,
                      "cpu_seconds": tt.process_cpu() - cpu_started, "sha256": digest.hexdigest(),
                      "requests": reader.requests, "chunk": reader.chunk_size, "window": window, "cipher": cipher,
                      "rss_before_kib": rss_before_kib, "peak_rss_kib": tt.proc_status_kib("VmHWM")}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# measuring




def vm_hwm_kib(pid: int) -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class TreePeakRss(threading.Thread):
    """The peak RSS of a process tree (e.g. sftp and its ssh): each member's VmHWM, sampled every 20 ms, summed.

    Not ``wait4``'s ``ru_maxrss``: on Linux it survives ``execve``, so it is at least this script's RSS at
    the fork. What a member grows in its last < 20 ms is missed.
    """

    def __init__(self, root: int) -> None:
        super().__init__(name="tree-rss", daemon=True)
        self._root = root
        self._peaks: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self.sample()

    def sample(self) -> None:
        stack, seen = [self._root], set()
        while stack and len(seen) < 64:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            hwm = vm_hwm_kib(pid)
            if hwm is not None:
                self._peaks[pid] = max(self._peaks.get(pid, 0), hwm)
            stack.extend(tt.children(pid))

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=5)
        return sum(self._peaks.values()) / 1024


@dataclass
class Run:
    seconds: float              # the transfer, without the login (see the module docstring)
    whole_seconds: float        # the whole command / session
    client_cpu: float
    proxy_cpu: float | None
    sshd_cpu: float
    moto_cpu: float
    rss_mib: float | None
    login_seconds: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    others_cores: float | None = None   # CPU that processes other than this benchmark's used meanwhile, in cores


def system_busy_seconds() -> float:
    """CPU seconds the whole machine was busy (all CPUs; steal included: on a VM it is someone else's work)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def our_cpu_seconds(base: tt.Rig, levels: list[Level]) -> float:
    """CPU of everything this benchmark runs: itself, its reaped children (clients), sshd, moto, the proxies."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    proxies = sum(level.proxy_cpu() or 0.0 for level in levels)
    return (tt.process_cpu() + reaped.ru_utime + reaped.ru_stime + base.sshd_cpu.total()
            + (tt.proc_cpu(base.moto.proc.pid) or 0.0) + proxies)


@dataclass
class Level(tt.Rig):
    """The rig as seen through one delay: clients connect to ``port`` (the proxy's, or sshd's for direct)."""

    label: str = ""
    rtt_ms: float | None = None     # None: direct, no proxy
    proxy: Any = None
    port: int = 0
    s3_endpoint: str | None = None  # S3 behind its own delay line (``--s3-rtt-ms``); None: moto directly

    @property
    def spec(self) -> dict[str, Any]:
        return {**super().spec, "port": self.port}

    def proxy_cpu(self) -> float | None:
        return tt.proc_cpu(self.proxy.pid) if self.proxy is not None else None


def proxy_delta(level: Level, before: float | None) -> float | None:
    after = level.proxy_cpu()
    return None if before is None or after is None else after - before


def run_external(level: Level, cmd: list[str], *, env: dict[str, str] | None, what: str) -> tuple[str, Run]:
    """Run a client command in its own process group: its own CPU (wait4, with its reaped children), the
    peak RSS of its tree, the proxy's CPU, sshd's and moto's. Killed by its group id on timeout or error."""
    out_path = level.scratch / f"out-{secrets.token_hex(4)}"
    proxy_before = level.proxy_cpu()
    with level.measure() as measured:
        started = time.monotonic()
        with out_path.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        rss = TreePeakRss(proc.pid)
        rss.start()
        try:
            deadline = time.monotonic() + level.args.timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what} did not finish in {level.args.timeout:.0f} s")
                time.sleep(0.01)
        except BaseException:
            kill_group(proc)
            raise
        finally:
            peak = rss.stop()
        seconds = time.monotonic() - started
    output = out_path.read_text(errors="replace")
    out_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}: {' '.join(cmd)}\n{output[-3000:]}")
    sample = measured.sample
    return output, Run(seconds=seconds, whole_seconds=seconds, client_cpu=usage.ru_utime + usage.ru_stime,
                       proxy_cpu=proxy_delta(level, proxy_before), sshd_cpu=sample.sshd_cpu,
                       moto_cpu=sample.moto_cpu, rss_mib=peak)


def sftp_command(level: Level, batch: str, *extra: str, verbose: bool = False) -> list[str]:
    """transfer_throughput.sftp_command with the port of this level and extra options (it takes neither)."""
    cmd = tt.sftp_command(level, batch, verbose=verbose)
    at = cmd.index("-P")
    cmd[at + 1] = str(level.port)
    return [*cmd[:at], *extra, *cmd[at:]]


def case_openssh_login(level: Level) -> float:
    _, run = run_external(level, sftp_command(level, "pwd\n"), env=None, what="sftp (login only)")
    return run.whole_seconds


def case_openssh(level: Level, login: float, *extra: str, verbose: bool = False) -> Run:
    cmd = sftp_command(level, f"get {level.remote(BIG)} /dev/null\n", *extra, verbose=verbose)
    output, run = run_external(level, cmd, env=None, what="sftp get")
    run.login_seconds = login
    run.seconds = max(run.whole_seconds - login, 1e-6)
    if verbose:
        match = re.search(r"kex: server->client cipher: (\S+)", output)
        run.notes["cipher"] = match.group(1) if match else "?"
    return run


def case_rclone(level: Level, s3: Any) -> Run:
    key = f"rclone/{BIG}"
    cmd = tt.rclone_command(level, "copyto", f"src:{level.remote(BIG)}", f"dst:{level.bucket}/{key}")
    _, run = run_external(level, cmd, env=tt.rclone_env(), what="rclone copyto")
    size = s3.head_object(Bucket=level.bucket, Key=key)["ContentLength"]
    if size != level.sizes[BIG]:
        raise RuntimeError(f"rclone landed {size} bytes, expected {level.sizes[BIG]}")
    tt.purge(s3, level.bucket, key)
    return run


def case_ours_read(level: Level, in_flight_mib: int, window_mib: float | None) -> Run:
    """Our read leg in a child process (``child_read``); window None = the product's sizing for that in-flight."""
    in_flight = in_flight_mib * MiB
    spec = {**level.spec, "path": level.remote(BIG), "size": level.sizes[BIG], "in_flight": in_flight,
            "read_size": level.args.read_mib * MiB,
            # the product's sizing: the partner's in-flight sets the window (channel_window); explicit: the
            # smallest partner in-flight the config allows, so that the window is the one given
            "partner_in_flight": in_flight if window_mib is PRODUCT_WINDOW else 256 * KiB,
            "window": None if window_mib is PRODUCT_WINDOW else int(window_mib * MiB)}
    out_path, err_path = level.scratch / "read.out", level.scratch / "read.err"
    proxy_before = level.proxy_cpu()
    with level.measure() as measured:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.throughput", "--child-read", json.dumps(spec)],
                                    stdout=out, stderr=err, cwd=REPO, start_new_session=True)
        try:
            proc.wait(timeout=level.args.timeout)
        except BaseException:
            kill_group(proc)
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"read child exited with {proc.returncode}:\n{err_path.read_text()[-3000:]}")
    result = json.loads(out_path.read_text().strip().splitlines()[-1])
    if result["sha256"] != level.digests[BIG]:
        raise RuntimeError(f"{read_label(in_flight_mib, window_mib)}: SHA-256 mismatch")
    sample = measured.sample
    return Run(seconds=result["read_seconds"], whole_seconds=result["login_seconds"] + result["read_seconds"],
               client_cpu=result["cpu_seconds"], proxy_cpu=proxy_delta(level, proxy_before),
               sshd_cpu=sample.sshd_cpu, moto_cpu=sample.moto_cpu, rss_mib=result["peak_rss_kib"] / 1024,
               login_seconds=result["login_seconds"],
               notes={"window": result["window"], "requests": result["requests"], "chunk": result["chunk"],
                      "cipher": result["cipher"],
                      "stream_mib_s": result["stream_mib_s"], "rss_before_mib": result["rss_before_kib"] / 1024})


def case_ours_s3(level: Level, s3: Any) -> Run:
    proxy_before = level.proxy_cpu()
    result, sample = tt.run_child(level, BIG)
    tt.purge(s3, level.bucket, result["key"])
    return Run(seconds=result["land_seconds"], whole_seconds=result["seconds"], client_cpu=sample.client_cpu,
               proxy_cpu=proxy_delta(level, proxy_before), sshd_cpu=sample.sshd_cpu, moto_cpu=sample.moto_cpu,
               rss_mib=sample.rss_mib, login_seconds=result["connect_seconds"])


DAGSTER = "ours through Dagster (dagster asset materialize)"


def case_dagster(level: Level) -> Run:
    """The file landed by a Dagster run, as an operator starts one: ``dagster asset materialize`` of its
    partition on a fresh SQLite instance (``DAGSTER_HOME`` in scratch), the code location
    ``partner_ingest.definitions`` reading a partners.yaml for this level, the key from moto's Secrets
    Manager, the product's executor and resources. Timed from the run's start to its success as the
    instance records them (``get_run_stats``): the step's start, the login and the transfer are in it,
    the CLI's own start is not. CPU: the CLI process and the step processes it reaped."""
    import boto3
    import yaml
    from dagster import DagsterInstance

    from partner_ingest.config import BUCKET_ENV, CONFIG_ENV
    from partner_ingest.defs.partitions import partitions_name
    from partner_ingest.ingest.partition_keys import encode_partition_key

    spec = level.spec
    name = f"bench{secrets.token_hex(3)}"
    secret_id = f"bench/{name}"
    boto3.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps({"private_key": Path(spec["key_file"]).read_text()}))
    home = Path(tempfile.mkdtemp(prefix="dagster-home-", dir=level.scratch))
    config = home / "partners.yaml"
    prefix = f"dagster/{name}"
    config.write_text(yaml.safe_dump({"landing": {"bucket": level.bucket}, "partners": [{
        "name": name, "host": "127.0.0.1", "port": level.port, "username": spec["username"],
        "secret_id": secret_id, "host_keys": [spec["host_key"]], "remote_dir": spec["remote_dir"],
        "landing_prefix": prefix, "include": [BIG]}]}))
    key = encode_partition_key(BIG)
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(partitions_name(tt.partner_for(spec).model_copy(update={"name": name})),
                                        [key])
    env = {**os.environ, "DAGSTER_HOME": str(home), CONFIG_ENV: str(config)}
    env.pop(BUCKET_ENV, None)
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "partner_ingest.definitions",
           "--select", f"partners/{name}/files", "--partition", key]
    _, run = run_external(level, cmd, env=env, what="dagster asset materialize")
    with DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        stats = instance.get_run_stats(record.dagster_run.run_id)
        steps = instance.get_run_step_stats(record.dagster_run.run_id)
        if record.dagster_run.status.value != "SUCCESS":
            raise RuntimeError(f"the Dagster run ended {record.dagster_run.status.value}")
    s3 = tt.s3_client()
    head = s3.head_object(Bucket=level.bucket, Key=f"{prefix}/{BIG}")
    if head["ContentLength"] != level.sizes[BIG]:
        raise RuntimeError(f"the Dagster run landed {head['ContentLength']} bytes, expected {level.sizes[BIG]}")
    purge_all(s3, level.bucket, f"{prefix}/")
    run.seconds = stats.end_time - stats.start_time
    run.notes["step_started_after_s"] = round(steps[0].start_time - stats.start_time, 2) if steps else None
    run.notes["cli_seconds"] = round(run.whole_seconds, 2)
    return run


# --------------------------------------------------------------------------------------------------
# small files (``--small-files N``): N x 16 KiB files in ``small/`` at each RTT level

SMALL_OURS = "ours: RunPipeline (as in a Dagster run)"
SMALL_RCLONE = "rclone copy sftp->S3 --transfers 4"
SMALL_OPENSSH = "OpenSSH sftp get -r -> temp dir"
SMALL_KIB = 16


def purge_all(s3: Any, bucket: str, prefix: str) -> None:
    """``transfer_throughput.purge`` until nothing is left: moto's version listing skips entries when a page
    is deleted while it is paginated (2000 files left the second 1000 behind)."""
    for _ in range(20):
        tt.purge(s3, bucket, prefix)
        page = s3.list_object_versions(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if not page.get("Versions") and not page.get("DeleteMarkers"):
            return
    raise RuntimeError(f"could not empty s3://{bucket}/{prefix}")


def expect_then_purge(s3: Any, bucket: str, prefix: str, expected: int, who: str) -> None:
    """A case landed exactly ``expected`` objects under ``prefix``; then they are removed for the next case."""
    count = sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix))
    if count != expected:
        raise RuntimeError(f"{who}: {count} objects under s3://{bucket}/{prefix}, expected {expected}")
    purge_all(s3, bucket, prefix)


def small_names(level: Level) -> list[str]:
    return sorted(p.name for p in (level.tree / tt.SMALL_DIR).iterdir())


def case_small_ours(level: Level, s3: Any) -> Run:
    """What ``defs/assets.py::_land`` does: ``RunPipeline`` over the partner's keys, ``links`` a ``PartnerLink``
    factory as ``SftpResource.link`` builds it (``open_session`` with the default ``ConnectionSettings``, the
    default ``ReconnectPolicy``), ``Wanted()``, consuming ``outcomes()``; the partner's default
    ``limits.max_connections`` and ``files_per_connection``; the S3 client of the code location's resources.
    Timed from construction (the logins are part of it) to the last outcome."""
    from partner_ingest.defs.resources import default_resources
    from partner_ingest.ingest.partition_keys import encode_partition_key
    from partner_ingest.ingest.run_pipeline import RunPipeline, Wanted
    from partner_ingest.sftp.connection import ConnectionSettings, open_session
    from partner_ingest.sftp.credentials import credentials_from_secret
    from partner_ingest.sftp.link import PartnerLink

    spec = level.spec
    partner = tt.partner_for(spec)
    resource = default_resources()["s3"].resource_fn(None)  # the run's client: its retries, its connection pool
    s3 = resource.model_copy(update={"endpoint_url": level.s3_endpoint}).get_client() if level.s3_endpoint \
        else resource.get_client()
    s3.head_bucket(Bucket=level.bucket)
    credentials = credentials_from_secret("bench", "bench-key",
                                          json.dumps({"private_key": Path(spec["key_file"]).read_text()}))
    connection = ConnectionSettings()
    keys = [encode_partition_key(f"{tt.SMALL_DIR}/{name}") for name in small_names(level)]
    proxy_before = level.proxy_cpu()
    with level.measure() as measured:
        cpu_started, started = tt.process_cpu(), time.monotonic()
        run = RunPipeline(partner, bucket=level.bucket, keys=keys,
                          links=lambda: PartnerLink(lambda: open_session(partner, credentials, connection)),
                          s3=s3, wanted=Wanted(), warn=lambda line: print(f"  warn: {line}", file=sys.stderr))
        landed = 0
        with contextlib.closing(run.outcomes()) as outcomes:
            for outcome in outcomes:
                if outcome.landed is None or not outcome.landed.uploaded:
                    landed_file = outcome.landed
                    raise RuntimeError(f"ours: {outcome.remote_path} did not land and upload: error {outcome.error}, "
                                       f"uploaded {landed_file.uploaded if landed_file else None}")
                landed += 1
        seconds, client_cpu = time.monotonic() - started, tt.process_cpu() - cpu_started
    report = run.report
    if report.unreachable is not None or report.failures or report.refused or landed != len(keys):
        raise RuntimeError(f"ours landed {landed} of {len(keys)}: unreachable {report.unreachable}, "
                           f"failures {report.failures[:3]}, refused {report.refused[:3]}")
    expect_then_purge(s3, level.bucket, f"{tt.LANDING_PREFIX}/", len(keys), "ours")
    sample = measured.sample
    return Run(seconds=seconds, whole_seconds=seconds, client_cpu=client_cpu,
               proxy_cpu=proxy_delta(level, proxy_before), sshd_cpu=sample.sshd_cpu, moto_cpu=sample.moto_cpu,
               rss_mib=None,
               notes={"note": f"{report.sessions} sessions x {partner.limits.files_per_connection} files"})


def case_small_rclone(level: Level, s3: Any) -> Run:
    prefix = f"rclone-small-{secrets.token_hex(4)}"
    cmd = tt.rclone_command(level, "copy", "--transfers", "4", f"src:{level.remote(tt.SMALL_DIR)}",
                            f"dst:{level.bucket}/{prefix}")
    _, run = run_external(level, cmd, env=tt.rclone_env(), what="rclone copy")
    expect_then_purge(s3, level.bucket, f"{prefix}/", level.args.small_files, "rclone")
    run.notes["note"] = "whole command"
    return run


def case_small_openssh(level: Level, s3: Any) -> Run:
    dest = Path(tempfile.mkdtemp(prefix="small-get-", dir=level.scratch))
    try:
        _, run = run_external(level, sftp_command(level, f"get -r {level.remote(tt.SMALL_DIR)} {dest}\n"),
                              env=None, what="sftp get -r")
        got = sum(1 for p in dest.rglob("*") if p.is_file())
        if got != level.args.small_files:
            raise RuntimeError(f"sftp get -r fetched {got} files, expected {level.args.small_files}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    run.notes["note"] = "whole command, to local disk"
    return run


SMALL_DAGSTER = "ours: one Dagster run (SQLite instance)"


def case_small_dagster(level: Level, s3: Any) -> Run:
    """The same files as one ranged Dagster run, as the sensor requests it: ``materialize`` of the partner's
    asset on a SQLite instance in scratch, with the code location's resources, the range tags and every
    per-file event (materialization, check evaluation, log lines) written to that instance. Timed from the
    run's start to its end (``get_run_stats``); the difference to ``RunPipeline`` alone is what Dagster's
    bookkeeping costs."""
    import boto3
    from dagster import DagsterInstance, materialize

    from partner_ingest.config import LandingConfig
    from partner_ingest.defs.asset_keys import files_asset_key
    from partner_ingest.defs.assets import build_files_asset
    from partner_ingest.defs.partitions import partitions_name
    from partner_ingest.defs.resources import default_resources, environment_only
    from partner_ingest.defs.tags import RANGE_END_TAG, RANGE_START_TAG
    from partner_ingest.ingest.partition_keys import encode_partition_key

    spec = level.spec
    name = f"bench{secrets.token_hex(3)}"
    secret_id = f"bench/{name}"
    boto3.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps({"private_key": Path(spec["key_file"]).read_text()}))
    partner = tt.partner_for(spec).model_copy(update={"name": name, "secret_id": secret_id,
                                                      "landing_prefix": f"dagster/{name}"})
    keys = [encode_partition_key(f"{tt.SMALL_DIR}/{n}") for n in small_names(level)]
    home = Path(tempfile.mkdtemp(prefix="dagster-home-", dir=level.scratch))
    resources = default_resources()
    if level.s3_endpoint:
        delayed = resources["s3"].resource_fn(None).model_copy(update={"endpoint_url": level.s3_endpoint})
        resources["s3"] = environment_only(delayed, "S3 behind the benchmark's delay line")
    proxy_before = level.proxy_cpu()
    with DagsterInstance.from_config(str(home)) as instance, level.measure() as measured:
        instance.add_dynamic_partitions(partitions_name(partner), keys)
        cpu_started = tt.process_cpu()
        result = materialize([build_files_asset(partner, LandingConfig(bucket=level.bucket))], instance=instance,
                             resources=resources, selection=[files_asset_key(partner)],
                             tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}, raise_on_error=False)
        client_cpu = tt.process_cpu() - cpu_started
        stats = instance.get_run_stats(result.run_id)
    if not result.success:
        raise RuntimeError(f"the Dagster run of {len(keys)} small files failed")
    expect_then_purge(s3, level.bucket, f"dagster/{name}/", len(keys), "the Dagster run")
    sample = measured.sample
    seconds = stats.end_time - stats.start_time
    return Run(seconds=seconds, whole_seconds=seconds, client_cpu=client_cpu,
               proxy_cpu=proxy_delta(level, proxy_before), sshd_cpu=sample.sshd_cpu, moto_cpu=sample.moto_cpu,
               rss_mib=None, notes={"note": "run start to end, in-process executor, every event written"})


SMALL_CASES = [(SMALL_OURS, case_small_ours), (SMALL_DAGSTER, case_small_dagster), (SMALL_RCLONE, case_small_rclone),
               (SMALL_OPENSSH, case_small_openssh)]


def s3_delayed_levels(args: argparse.Namespace, levels: list[Level], moto_endpoint: str,
                      s3_proxy_port: int) -> list[Level]:
    """Each small-files level again with S3 behind its delay line: ours gets that endpoint, rclone a config
    naming it; OpenSSH writes to disk and is not run again."""
    delayed = []
    for level in levels:
        config = level.scratch / f"rclone-{level.port}-s3-delayed.conf.template"
        config.write_text(level.rclone_config.read_text().replace(
            f"endpoint = {moto_endpoint}\n", f"endpoint = http://127.0.0.1:{s3_proxy_port}\n"))
        delayed.append(replace(level, label=f"{level.label}, S3 {args.s3_rtt_ms:g} ms",
                               s3_endpoint=f"http://127.0.0.1:{s3_proxy_port}", rclone_config=config))
    return delayed


def run_small(args: argparse.Namespace, levels: list[Level], s3: Any, s3_proxy: Any = None) -> list[dict[str, Any]]:
    small_levels = [lv for lv in levels if lv.rtt_ms is not None and lv.rtt_ms in args.small_rtt_ms]
    if s3_proxy is not None:
        small_levels += s3_delayed_levels(args, small_levels, os.environ["AWS_ENDPOINT_URL"], s3_proxy.port)
    rows: list[dict[str, Any]] = []
    for level in small_levels:
        for label, case in SMALL_CASES:
            if case is case_small_openssh and (level.s3_endpoint or args.skip_openssh):
                continue
            if case is case_small_rclone and args.skip_rclone:
                continue
            if case is case_small_dagster and level.s3_endpoint:
                continue  # what Dagster's bookkeeping costs does not depend on S3's distance
            runs: list[Run] = []
            for run in range(args.repeat):
                print(f"small files, {level.label}, run {run + 1}/{args.repeat}: {label}", file=sys.stderr, flush=True)
                result = case(level, s3)
                print(f"  {result.seconds:7.2f} s ({args.small_files / result.seconds:7.1f} files/s)",
                      file=sys.stderr, flush=True)
                runs.append(result)
            middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
            per_file = {k: (v * 1000 / args.small_files if v is not None else None) for k, v in (
                ("client", middle.client_cpu), ("proxy", middle.proxy_cpu), ("sshd", middle.sshd_cpu),
                ("moto", middle.moto_cpu))}
            rows.append({"case": label, "level": level.label, "rtt_ms": level.rtt_ms,
                         "seconds": middle.seconds, "files_s": args.small_files / middle.seconds,
                         "runs_seconds": [r.seconds for r in runs], "note": middle.notes.get("note", ""),
                         "cpu_ms_per_file": per_file, "peak_rss_mib": middle.rss_mib})
    return rows


def print_small(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print()
    print(f"small files: {args.small_files} x {SMALL_KIB} KiB, median of {args.repeat} run(s); seconds are "
          "whole (ours: from RunPipeline construction, logins included, to the last outcome; others: the whole "
          "command); x rclone = files/s over rclone's at the same level")
    print()
    print("CPU: milliseconds per file of each process (client: ours in this process, the command's own otherwise)")
    print()
    print(f"{'case':<40} {'RTT':>7} {'seconds':>8} {'files/s':>8} {'x rclone':>9} {'client':>7} {'proxy':>6} "
          f"{'sshd':>6} {'moto':>6}   note")
    for level in dict.fromkeys(row["level"] for row in rows):
        at = [row for row in rows if row["level"] == level]
        rclone = next((row["files_s"] for row in at if row["case"] == SMALL_RCLONE), None)
        for row in at:
            cpu = row["cpu_ms_per_file"]
            print(f"{row['case']:<40} {level:>7} {row['seconds']:>8.2f} {row['files_s']:>8.1f} "
                  f"{fmt(row['files_s'] / rclone if rclone else None, '.2f', 9)} {fmt(cpu['client'], '.2f', 7)} "
                  f"{fmt(cpu['proxy'], '.2f', 6)} {fmt(cpu['sshd'], '.2f', 6)} {fmt(cpu['moto'], '.2f', 6)}   "
                  f"{row['note']}")
        print()
    ours = {r["level"]: r["files_s"] for r in rows if r["case"] == SMALL_OURS}
    rclone = {r["level"]: r["files_s"] for r in rows if r["case"] == SMALL_RCLONE}
    print("ours / rclone: " + ", ".join(f"{lv} {ours[lv] / rclone[lv]:.2f}x" for lv in ours if lv in rclone))


# --------------------------------------------------------------------------------------------------
# set-up, the runs, the report


def make_levels(args: argparse.Namespace, base: tt.Rig) -> list[Level]:
    """One level per RTT (a proxy process each) plus direct; known_hosts pins the host keys for every port."""
    from partner_ingest_tests.harness.delay_proxy import start_delay_proxy_process

    levels: list[Level] = []
    common = {f.name: getattr(base, f.name) for f in fields(tt.Rig)}
    if not args.no_direct:
        levels.append(Level(**common, label="direct", rtt_ms=None, port=base.sshd.port))
    for rtt_ms in args.rtt_ms:
        proxy = start_delay_proxy_process(base.sshd.port, rtt=rtt_ms / 1000)
        levels.append(Level(**common, label=f"{rtt_ms:g} ms", rtt_ms=rtt_ms, proxy=proxy, port=proxy.port))
    base.known_hosts.write_text("".join(f"[127.0.0.1]:{level.port} {line}\n" for level in levels
                                        for line in base.sshd.host_key_lines.values()))
    template = base.rclone_config.read_text()
    for level in levels:
        level.rclone_config = base.scratch / f"rclone-{level.port}.conf.template"
        level.rclone_config.write_text(template.replace(f"port = {base.sshd.port}\n", f"port = {level.port}\n"))
    return levels


def cases(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(label, callable(level, login, s3, first)) in the order they run at each level."""
    out: list[tuple[str, Any]] = [] if args.skip_openssh else [
        (OPENSSH, lambda lv, login, s3, first: case_openssh(lv, login, verbose=first)),
        (OPENSSH_BIG, lambda lv, login, s3, first: case_openssh(lv, login, "-R", "256", "-B", "262144")),
    ]
    reads = [(mib, PRODUCT_WINDOW) for mib in args.in_flight_mib] + [(int(i), w) for i, w in args.window_case]
    for in_flight_mib, window_mib in reads:
        out.append((read_label(in_flight_mib, window_mib),
                    lambda lv, login, s3, first, i=in_flight_mib, w=window_mib: case_ours_read(lv, i, w)))
    if not args.skip_s3:
        out.append((OURS_S3, lambda lv, login, s3, first: case_ours_s3(lv, s3)))
        if not args.skip_rclone:
            out.append((RCLONE, lambda lv, login, s3, first: case_rclone(lv, s3)))
        if args.dagster:
            out.append((DAGSTER, lambda lv, login, s3, first: case_dagster(lv)))
    return out


def cores() -> str:
    usable = len(os.sched_getaffinity(0))
    return (f"{os.cpu_count()} CPUs ({usable} usable here); client, sshd, moto and the delay proxy all share them "
            "(no pinning)")


def median_run(runs: list[Run]) -> dict[str, Any]:
    def med(name: str) -> float | None:
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        return statistics.median(values) if values else None

    return {name: med(name) for name in ("seconds", "whole_seconds", "client_cpu", "proxy_cpu", "sshd_cpu",
                                         "moto_cpu", "login_seconds", "others_cores")} | {
        "rss_mib": max((r.rss_mib for r in runs if r.rss_mib is not None), default=None)}


def build_rows(size_mib: float, levels: list[Level], labels: list[str],
               results: dict[tuple[str, str], list[Run]]) -> list[dict[str, Any]]:
    rows = []
    zero = next((lv.label for lv in levels if lv.rtt_ms == 0), None)
    for level in levels:
        openssh = results.get((level.label, OPENSSH))
        openssh_speed = size_mib / median_run(openssh)["seconds"] if openssh else None
        for label in labels:
            runs = results.get((level.label, label))
            if not runs:
                continue
            m = median_run(runs)
            speed = size_mib / m["seconds"]
            at_zero = results.get((zero, label)) if zero else None
            row = {"case": label, "level": level.label, "rtt_ms": level.rtt_ms, "mib_s": speed,
                   "mib_s_whole": size_mib / m["whole_seconds"],
                   "x_openssh": speed / openssh_speed if openssh_speed else None,
                   "x_self_at_0ms": speed / (size_mib / median_run(at_zero)["seconds"]) if at_zero else None,
                   **{f"{k}_ms_per_mib": (m[k] / size_mib * 1000 if m[k] is not None else None)
                      for k in ("client_cpu", "proxy_cpu", "sshd_cpu", "moto_cpu")},
                   "peak_rss_mib": m["rss_mib"], "login_seconds": m["login_seconds"],
                   "others_cores": m["others_cores"],
                   "runs_mib_s": [size_mib / r.seconds for r in runs],
                   "notes": runs[0].notes}
            rows.append(row)
    return rows


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def print_table(rows: list[dict[str, Any]], header: list[str]) -> None:
    print()
    for line in header:
        print(line)
    print()
    print(f"{'':<48} {'':>7} {'':>7} {'':>6} {'':>6} {'CPU ms/MiB':^27} {'':>8} {'':>6}")
    print(f"{'case':<48} {'RTT':>7} {'MiB/s':>7} {'x SSH':>6} {'x @0':>6} {'client':>6} {'proxy':>6} "
          f"{'sshd':>6} {'moto':>6} {'peakRSS':>8} {'login':>6} {'others':>6}   runs (MiB/s)")
    last_level = None
    for row in rows:
        if last_level is not None and row["level"] != last_level:
            print()
        last_level = row["level"]
        star = "*" if row["case"] == RCLONE else " "
        rss = f"{row['peak_rss_mib']:.0f} MiB" if row["peak_rss_mib"] is not None else "-"
        print(f"{row['case']:<48} {row['level']:>7} {row['mib_s']:>6.1f}{star} {fmt(row['x_openssh'], '.2f', 6)} "
              f"{fmt(row['x_self_at_0ms'], '.2f', 6)} {fmt(row['client_cpu_ms_per_mib'], '.2f', 6)} "
              f"{fmt(row['proxy_cpu_ms_per_mib'], '.2f', 6)} {fmt(row['sshd_cpu_ms_per_mib'], '.2f', 6)} "
              f"{fmt(row['moto_cpu_ms_per_mib'], '.2f', 6)} {rss:>8} {fmt(row['login_seconds'], '.2f', 6)} "
              f"{fmt(row['others_cores'], '.2f', 6)}   "
              + ", ".join(f"{s:.1f}" for s in row["runs_mib_s"]))


def print_streams(rows: list[dict[str, Any]], levels: list[Level]) -> None:
    """Our read legs once the pipeline is full: MiB/s from the first 8 MiB read to the last, i.e. without the
    round trips every file costs whatever is in flight (open, first reply, close)."""
    reads = [row for row in rows if row["case"].startswith("ours read")]
    if not reads:
        return
    print("ours read legs, streaming MiB/s (first read returned -> last read returned; no open/first-reply/close "
          "round trips):")
    labels = [level.label for level in levels]
    print(f"  {'case':<48} " + " ".join(f"{label:>8}" for label in labels) + "   window, READs, RSS before connect")
    for case in dict.fromkeys(row["case"] for row in reads):
        by_level = {row["level"]: row for row in reads if row["case"] == case}
        cells = " ".join(fmt(by_level[label]["notes"].get("stream_mib_s") if label in by_level else None, ".1f", 8)
                         for label in labels)
        notes = next(iter(by_level.values()))["notes"]
        print(f"  {case:<48} {cells}   {notes['window'] / MiB:.1f} MiB, {notes['requests']} x "
              f"{notes['chunk'] // KiB} KiB, {notes['rss_before_mib']:.0f} MiB")


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per in-flight (window as the product sizes it): the read leg's speed at 20 and 100 ms over its own speed
    at 0 ms, and over the median of the 0 ms read legs (they should all be alike at 0 ms; the median is
    steadier than any one of them)."""
    lines = []
    reads = [r for r in rows if r["case"].startswith("ours read") and "window as product" in r["case"]]
    zero = {r["case"]: r["mib_s"] for r in reads if r["rtt_ms"] == 0}
    zero_stream = {r["case"]: r["notes"].get("stream_mib_s") for r in reads if r["rtt_ms"] == 0}
    median_zero = statistics.median(zero.values()) if zero else None
    for rtt, bar in ((20, 0.9), (100, 0.7)):
        at = [r for r in reads if r["rtt_ms"] == rtt and r["case"] in zero]
        if not at or median_zero is None:
            continue
        parts, first_ok = [], None
        for r in at:
            name = r["case"].split(" in flight")[0].removeprefix("ours read ")
            ratio, ratio_median = r["mib_s"] / zero[r["case"]], r["mib_s"] / median_zero
            stream, stream_zero = r["notes"].get("stream_mib_s"), zero_stream.get(r["case"])
            streaming = (f"; streaming {stream:.0f} MiB/s = {stream / stream_zero:.2f}x its 0 ms"
                         if stream and stream_zero else "")
            parts.append(f"{name}: {r['mib_s']:.0f} MiB/s = {ratio:.2f}x its own 0 ms, {ratio_median:.2f}x the 0 ms "
                         f"read legs' median{streaming}; peak RSS {r['peak_rss_mib']:.0f} MiB")
            if first_ok is None and ratio >= bar:
                first_ok = name
        verdict = f"smallest reaching >= {bar}x: {first_ok}" if first_ok else f"none reached {bar}x"
        lines.append(f"read leg at {rtt} ms ({verdict}):")
        lines.extend(f"  {p}" for p in parts)
    return lines


def benchmark(args: argparse.Namespace) -> None:
    from partner_ingest_tests.harness.delay_proxy import start_delay_proxy_process
    from partner_ingest_tests.harness.moto_server import start_moto
    from partner_ingest_tests.harness.sshd import start_sshd

    sshd = moto = base = s3_proxy = None
    levels: list[Level] = []
    scratch = Path(tempfile.mkdtemp(prefix="pi-bench-delay-"))
    try:
        print("starting sshd and moto ...", file=sys.stderr, flush=True)
        sshd = start_sshd()
        moto = start_moto()
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
            os.environ.pop(name, None)
        os.environ.update(moto.env())
        print(f"writing {args.size_mib} MiB ...", file=sys.stderr, flush=True)
        base = tt.prepare(args, sshd, moto, scratch)
        load_start = os.getloadavg()[0]
        s3 = tt.s3_client()
        s3.create_bucket(Bucket=base.bucket)
        s3.put_bucket_versioning(Bucket=base.bucket, VersioningConfiguration={"Status": "Enabled"})
        levels = make_levels(args, base)
        plan = [] if args.only_small else cases(args)
        results: dict[tuple[str, str], list[Run]] = {}
        logins: dict[str, list[float]] = {}
        started = time.monotonic()
        for run in range(0 if args.only_small else args.repeat):
            for level in levels:
                logins.setdefault(level.label, []).extend(
                    case_openssh_login(level) for _ in range(0 if args.skip_openssh else 3))
            # Each case at every level back to back, so that a change in the machine's other load between
            # minutes does not land on one level only (it still lands on one case: see the "others" column).
            for label, case in plan:
                print(f"run {run + 1}/{args.repeat}: {label}", file=sys.stderr, flush=True)
                for level in levels:
                    login = statistics.median(logins[level.label]) if logins[level.label] else 0.0
                    busy, ours, wall = system_busy_seconds(), our_cpu_seconds(base, levels), time.monotonic()
                    result = case(level, login, s3, run == 0 and level is levels[0])
                    others = (system_busy_seconds() - busy) - (our_cpu_seconds(base, levels) - ours)
                    result.others_cores = max(others, 0.0) / (time.monotonic() - wall)
                    results.setdefault((level.label, label), []).append(result)
                    proxy = f", proxy {result.proxy_cpu:5.2f} s" if result.proxy_cpu is not None else ""
                    print(f"  {level.label:>7} {result.seconds:7.2f} s ({args.size_mib / result.seconds:7.1f} MiB/s)  "
                          f"cpu client {result.client_cpu:5.2f} s{proxy}; others {result.others_cores:.2f} cores",
                          file=sys.stderr, flush=True)
        elapsed = time.monotonic() - started
        if args.small_files and args.s3_rtt_ms:
            s3_proxy = start_delay_proxy_process(moto.port, rtt=args.s3_rtt_ms / 1000)
        small_rows = run_small(args, levels, s3, s3_proxy) if args.small_files else []
        if args.only_small:
            print(tt.versions())
            print(cores())
            print_small(args, small_rows)
            if args.json:
                Path(args.json).write_text(json.dumps({"args": vars(args), "small_files": small_rows}, indent=2))
            return
        import partner_ingest.config as product_config
        from partner_ingest.sftp.connection import ConnectionSettings

        rows = build_rows(base.sizes[BIG] / MiB, levels, [label for label, _ in plan], results)
        first = results.get((levels[0].label, OPENSSH), [Run(0, 0, 0, None, 0, 0, None)])[0].notes
        our_cipher = next((r["notes"].get("cipher") for r in rows if r["notes"].get("cipher")
                           and r["case"].startswith("ours")), "?")
        header = [
            f"throughput: {args.size_mib} MiB file, median of {args.repeat} run(s), 127.0.0.1, SFTP side through "
            f"the harness DelayProxy (user-space delay line, own process; no netem in this kernel)",
            tt.versions(),
            cores(),
            f"load average (1 min): {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end; cases took "
            f"{elapsed:.0f} s",
            f"ciphers: OpenSSH {first.get('cipher', '?')}, ours {our_cipher}; ours reads {args.read_mib} MiB at a "
            f"time, 255 KiB requests; product defaults: read_in_flight_bytes "
            f"{product_config.RunLimits().read_in_flight_bytes // MiB} MiB, ConnectionSettings.window_size "
            f"{ConnectionSettings().window_size // MiB} MiB",
            "levels: direct = no proxy; 0 ms = through the proxy without delay; x @0 = this case's MiB/s over the "
            "same case's at 0 ms; x SSH = over 'OpenSSH sftp get' at the same level",
            "MiB/s: the transfer without the login (OpenSSH: command minus a login-only sftp; * rclone: whole "
            "command); login: seconds to log in; others: CPU (in cores, of "
            f"{len(os.sched_getaffinity(0))}) that other processes on the machine used during the case, steal included",
        ]
        print_table(rows, header)
        print()
        print_streams(rows, levels)
        print()
        for line in summary(rows):
            print(line)
        if small_rows:
            print_small(args, small_rows)
        if args.json:
            Path(args.json).write_text(json.dumps({"header": header, "args": vars(args), "rows": rows,
                                                   "small_files": small_rows,
                                                   "logins": logins, "raw": {f"{k[0]} | {k[1]}": [asdict(r) for r in v]
                                                                             for k, v in results.items()}},
                                                  indent=2))
            print(f"\nwritten: {args.json}")
    finally:
        tt.stop_all(base, moto, sshd, scratch, proxies=[*(level.proxy for level in levels), s3_proxy])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One large file over SFTP at several RTTs (a delay proxy on 127.0.0.1): OpenSSH, ours at "
                    "several in-flight sizes, ours end to end, rclone. Needs root (it starts a real sshd).")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file (default 1024)")
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0, 20, 100],
                        help="round-trip delays through the proxy (default 0 20 100)")
    parser.add_argument("--no-direct", action="store_true", help="leave out the level without the proxy")
    parser.add_argument("--in-flight-mib", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="our read leg's bytes in flight, window sized as the product does (default 8 16 32 64)")
    parser.add_argument("--window-case", type=float, nargs=2, action="append", metavar=("IN_FLIGHT_MIB", "WINDOW_MIB"),
                        help="extra read case with an explicit SSH window (default: 32 32.5, i.e. the in-flight plus "
                             "two packets, and 64 16)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case, interleaved; median (default 1)")
    parser.add_argument("--read-mib", type=int, default=8, help="our read size (default 8, what boto3 asks per part)")
    parser.add_argument("--skip-s3", action="store_true", help="leave out the cases that write to moto")
    parser.add_argument("--skip-rclone", action="store_true", help="leave out rclone")
    parser.add_argument("--skip-openssh", action="store_true", help="leave out OpenSSH (e.g. to repeat our reads only)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds any one transfer may take (default 600)")
    parser.add_argument("--json", help="also write the table (and every run) to this JSON file")
    parser.add_argument("--small-files", type=int, nargs="?", const=2000, default=0, metavar="N",
                        help=f"also land N x {SMALL_KIB} KiB files at each level in --small-rtt-ms: ours (RunPipeline "
                             "as a Dagster run), rclone copy --transfers 4, OpenSSH get -r (default 0 = skipped; "
                             "the flag alone: 2000)")
    parser.add_argument("--small-rtt-ms", type=float, nargs="+", default=[0, 20],
                        help="the RTT levels of the small-files case (default 0 20; 100 if it is in --rtt-ms)")
    parser.add_argument("--only-small", action="store_true", help="run only the small-files case")
    parser.add_argument("--dagster", action="store_true",
                        help="also land the file through a Dagster run (dagster asset materialize), timed from the "
                             "run's start")
    parser.add_argument("--s3-rtt-ms", type=float, default=0, metavar="MS",
                        help="also run the small-files case with S3 behind a delay line of this RTT (e.g. 10: S3 "
                             "from a task in its region); ours and rclone, at each --small-rtt-ms level")
    parser.add_argument("--child-read", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.window_case is None:
        args.window_case = [[32, 32.5], [64, 16]]
    if min(args.size_mib, args.repeat, args.read_mib, *args.in_flight_mib) < 1 or min(args.rtt_ms) < 0:
        parser.error("sizes and --repeat must be positive, RTTs not negative")
    # what transfer_throughput.prepare and Rig.spec read
    args.small_kib, args.rclone_shell_type, args.multipart_threshold_mib = SMALL_KIB, "", 16
    if args.small_files < 0:
        parser.error("--small-files must not be negative")
    if args.only_small and not args.small_files:
        args.small_files = 2000
    if args.small_files and not set(args.small_rtt_ms) <= set(args.rtt_ms):
        parser.error("every --small-rtt-ms must be one of --rtt-ms")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_read is not None:
        return child_read(args.child_read)
    if os.geteuid() != 0:
        print("needs root: it starts a real sshd that authenticates its own system accounts\n"
              "  sudo .venv/bin/python -m benchmarks.throughput --size-mib 128", file=sys.stderr)
        return 2
    needs_rclone = args.small_files or not (args.skip_rclone or args.skip_s3 or args.only_small)
    for tool in ("sftp", "ssh-keygen", *(["rclone"] if needs_rclone else [])):
        if shutil.which(tool) is None:
            print(f"'{tool}' not found (scripts/test.sh installs openssh and rclone)", file=sys.stderr)
            return 2
    return run_interruptibly(lambda: benchmark(args), "interrupted; sshd, moto and the proxies stopped")


if __name__ == "__main__":
    sys.exit(main())
