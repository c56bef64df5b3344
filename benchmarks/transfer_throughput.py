"""Throughput, CPU and memory of our SFTP -> S3 transfer core against OpenSSH and rclone, over loopback.

Why: the transfer core (``partner_ingest.ingest.transfer.land_file`` on top of
``partner_ingest.sftp.reader.PipelinedReader``) is pure Python on paramiko + boto3. This puts a
number on what that costs next to OpenSSH's ``sftp`` (the reference, 1.00) and rclone, shows how much
of the gap is the S3 side (moto, itself a Python server on the same CPUs, caps the end-to-end case),
and shows that peak memory does not grow with the file size.

Everything runs on this machine over 127.0.0.1: a real OpenSSH sshd and a moto S3 server from the test
harness (``partner_ingest_tests/harness``), started here and stopped by PID at the end, even on
Ctrl-C, SIGTERM or an error. Needs root (sshd authenticates its own system accounts), openssh
server and client, and rclone (``scripts/test.sh`` installs them). Run from the repository root:

    sudo .venv/bin/python benchmarks/transfer_throughput.py --size-mib 256
    sudo .venv/bin/python benchmarks/transfer_throughput.py             # 1 GiB, 1000 small files, 3 runs

Cases (each run ``--repeat`` times, interleaved; the median is reported):

1. OpenSSH ``sftp`` get -> /dev/null (reference = 1.00).
2. ours: SFTP read alone (``PipelinedReader`` + sha256, no S3).
3. ours end to end: ``land_file`` SFTP -> moto S3 (multipart), in a child process so that its peak
   RSS is its own; also run once at 1/4 of the size and for a 10 KiB file.
4. rclone ``copyto`` sftp -> moto S3.
5. moto alone: boto3 ``upload_fileobj`` of an in-memory stream, the same TransferConfig as ours.
6. small files: OpenSSH ``get -r`` to a local dir, ours (one session, ``land_file`` per file),
   rclone ``copy``; plus two diagnostic rows splitting ours into its SFTP part and its S3 part.

Times include connecting and authenticating (OpenSSH and rclone: the whole command; ours: from
opening the session, not the Python interpreter's start). All data comes from the page cache. CPU is
measured per process (client, sshd, moto), so a busy machine shows up as lower MiB/s but much the
same CPU ms/MiB: on a shared machine, trust the CPU columns more than the speeds.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import platform
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from partner_ingest_tests.harness.files import KiB, MiB
from partner_ingest_tests.harness.processes import kill_group, run_in_own_group, run_interruptibly

BIG_FILE = "big.bin"
QUARTER_FILE = "quarter.bin"
TINY_FILE = "tiny.bin"
SMALL_DIR = "small"
LANDING_PREFIX = "bench"

# Case labels, in table order.
OPENSSH = "OpenSSH sftp get -> /dev/null"
OURS_READ = "ours: SFTP read + sha256"
OURS_S3 = "ours: SFTP -> S3 (moto)"
RCLONE = "rclone sftp -> S3 (moto)"
MOTO = "moto alone (boto3 upload)"
SMALL_OPENSSH = "OpenSSH sftp get -r -> local dir"
SMALL_OURS = "ours: 1 session, land_file each"
SMALL_RCLONE = "rclone copy sftp -> S3 (moto)"
SMALL_OURS_SFTP = "  diag: ours SFTP only (no S3)"
SMALL_MOTO = "  diag: moto alone (1 PutObject)"


# --------------------------------------------------------------------------------------------------
# shared by the parent and the child


def boto_config() -> Any:
    from botocore.config import Config

    return Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 2, "mode": "standard"})


def s3_client() -> Any:
    import boto3

    return boto3.client("s3", config=boto_config())


def partner_for(spec: dict[str, Any]) -> Any:
    from partner_ingest.config import PartnerConfig

    return PartnerConfig(name="bench", host="127.0.0.1", port=spec["port"], username=spec["username"],
                         secret_id="unused-by-the-benchmark", host_keys=[spec["host_key"]],
                         remote_dir=spec["remote_dir"], landing_prefix=LANDING_PREFIX)


def open_partner_session(spec: dict[str, Any]) -> Any:
    """Our client logs in as OpenSSH and rclone do here: as the key user, with the Ed25519 key.

    (Not the password user: the harness resets that account's password whenever any other test
    run on this machine starts its sshd, which would break a long benchmark half way.)
    """
    from partner_ingest.sftp.connection import open_session
    from partner_ingest.sftp.credentials import credentials_from_secret

    secret = json.dumps({"private_key": Path(spec["key_file"]).read_text()})
    return open_session(partner_for(spec), credentials_from_secret("bench", "bench-key", secret))


@contextlib.contextmanager
def partner_link(spec: dict[str, Any]) -> Iterator[Any]:
    """What ``land_file`` takes: a ``PartnerLink`` that opens (and, if the link drops, reopens) our session,
    as ``SftpResource.link`` builds it. Connected on entry, so the login is not part of the first file."""
    from partner_ingest.sftp.link import PartnerLink

    with PartnerLink(lambda: open_partner_session(spec)) as link:
        link.session  # noqa: B018 - connects now
        yield link


def process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def proc_status_kib(field_name: str) -> int:
    """A field of /proc/self/status in KiB: VmRSS (now) or VmHWM (this image's peak since exec)."""
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


# --------------------------------------------------------------------------------------------------
# the child: case 3 in its own process, so its peak RSS is its own


def child_main(spec_json: str) -> int:
    """Land one file; print one JSON line with timings, CPU, and RSS before and at the peak.

    The peak is VmHWM rather than ``ru_maxrss``: on Linux ``ru_maxrss`` survives ``execve``, so a
    child's ``ru_maxrss`` (and what ``wait4`` returns for it) is at least its parent's RSS at spawn.
    """
    from partner_ingest.ingest.transfer import land_file

    spec = json.loads(spec_json)
    s3 = s3_client()
    s3.head_bucket(Bucket=spec["bucket"])  # warm the client (endpoint, credentials) outside the timing
    rss_before_kib = proc_status_kib("VmRSS")
    cpu_started, started = process_cpu(), time.monotonic()
    with partner_link(spec) as link:
        connected = time.monotonic()
        landed = land_file(link, s3, bucket=spec["bucket"], relative_path=spec["relative_path"],
                           multipart_threshold=spec["multipart_threshold"], skip_if_landed=False)
        cipher = link.session.client.get_transport().remote_cipher
    ended = time.monotonic()
    print(json.dumps({"seconds": ended - started, "connect_seconds": connected - started,
                      "land_seconds": landed.seconds, "cpu_seconds": process_cpu() - cpu_started,
                      "sha256": landed.sha256, "size": landed.version.size, "key": landed.key,
                      "rss_before_kib": rss_before_kib, "peak_rss_kib": proc_status_kib("VmHWM"),
                      "cipher": cipher}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# measuring


@dataclass
class Sample:
    seconds: float
    client_cpu: float = 0.0
    sshd_cpu: float = 0.0
    moto_cpu: float = 0.0
    rss_mib: float | None = None


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of a live process, or None once it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class SshdCpu(threading.Thread):
    """Samples the CPU of sshd and every session process it forks, every 20 ms.

    sshd's reaped children do not add up in its own counters: with privilege separation the session
    process outlives its parent and is reparented to init. So each descendant is found while it is
    still attached and followed by PID; what it used after its last sample (< 20 ms) is missed.
    """

    def __init__(self, master_pid: int) -> None:
        super().__init__(name="sshd-cpu", daemon=True)
        self._master = master_pid
        self._seen: dict[int, float] = {}
        self._live: set[int] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            stack, visited = [self._master, *self._live], set()
            while stack:
                pid = stack.pop()
                if pid not in visited:
                    visited.add(pid)
                    self._live.add(pid)
                    stack.extend(children(pid))
            for pid in list(self._live):
                cpu = proc_cpu(pid)
                if cpu is None:
                    self._live.discard(pid)
                else:
                    self._seen[pid] = cpu

    def total(self) -> float:
        self.sample()
        with self._lock:
            return sum(self._seen.values())

    def sessions_open(self) -> bool:
        with self._lock:
            return any(pid != self._master for pid in self._live)

    def stop(self) -> None:
        self._stop_event.set()


class Measure:
    """Wall time and CPU over a block: this process, the children it reaped, sshd and moto.

    On leaving, it waits (bounded) until the sshd sessions the block opened have ended.
    """

    def __init__(self, rig: Rig) -> None:
        self._rig = rig
        self.sample = Sample(0.0)

    def _snapshot(self) -> tuple[float, float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.monotonic(), process_cpu() + children.ru_utime + children.ru_stime,
                self._rig.sshd_cpu.total(), proc_cpu(self._rig.moto.proc.pid) or 0.0)

    def __enter__(self) -> Measure:
        self._start = self._snapshot()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            return
        ended = time.monotonic()
        self._rig.wait_for_sshd_sessions()
        now = self._snapshot()
        self.sample = Sample(seconds=ended - self._start[0], client_cpu=now[1] - self._start[1],
                             sshd_cpu=now[2] - self._start[2], moto_cpu=now[3] - self._start[3])


@dataclass
class Rig:
    """Everything the cases need: servers, files, the pieces of config for each client."""

    args: argparse.Namespace
    sshd: Any
    moto: Any
    scratch: Path
    tree: Path
    bucket: str
    key_file: Path
    known_hosts: Path
    rclone_config: Path
    sshd_cpu: SshdCpu
    digests: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        from partner_ingest_tests.harness.sshd import KEY_USER

        return {"port": self.sshd.port, "username": KEY_USER, "host_key": self.sshd.host_key_lines["ed25519"],
                "key_file": str(self.key_file), "remote_dir": str(self.tree), "bucket": self.bucket,
                "multipart_threshold": self.args.multipart_threshold_mib * MiB}

    def remote(self, name: str) -> str:
        return f"{self.tree}/{name}"

    def measure(self) -> Measure:
        return Measure(self)

    def wait_for_sshd_sessions(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sshd_cpu.sample()
            if not self.sshd_cpu.sessions_open():
                return
            time.sleep(0.02)


def run_command(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, what: str) -> str:
    """Run ``cmd`` in its own process group; kill that group by its id on timeout or interrupt."""
    done = run_in_own_group(cmd, timeout=timeout, env=env, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited with {done.returncode}: {' '.join(cmd)}\n{done.stdout[-3000:]}")
    return done.stdout


def sftp_command(rig: Rig, batch: str, *, verbose: bool = False) -> list[str]:
    from partner_ingest_tests.harness.sshd import KEY_USER

    batch_file = rig.scratch / f"batch-{secrets.token_hex(4)}"
    batch_file.write_text(batch)
    return ["sftp", *(["-v"] if verbose else []), "-F", "/dev/null", "-b", str(batch_file), "-i", str(rig.key_file),
            "-o", f"UserKnownHostsFile={rig.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=15",
            "-P", str(rig.sshd.port), f"{KEY_USER}@127.0.0.1"]


def rclone_env() -> dict[str, str]:
    # rclone fails against a custom endpoint while AWS_CA_BUNDLE is set; it gets its keys from its config.
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}


def rclone_command(rig: Rig, *args: str) -> list[str]:
    # rclone rewrites its config file on first use: give each run a fresh throwaway copy.
    config = rig.scratch / f"rclone-{secrets.token_hex(4)}.conf"
    shutil.copyfile(rig.rclone_config, config)
    config.chmod(0o600)
    return ["rclone", "--config", str(config), "--retries", "1", "--low-level-retries", "3",
            "--contimeout", "15s", "--timeout", "120s", *args]


def purge(s3: Any, bucket: str, prefix: str) -> None:
    """Delete every version under ``prefix`` so moto frees the data between runs."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        versions = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in (*page.get("Versions", []), *page.get("DeleteMarkers", []))]
        if versions:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": versions, "Quiet": True})


# --------------------------------------------------------------------------------------------------
# the cases


def case_openssh(rig: Rig, first: bool) -> Sample:
    cmd = sftp_command(rig, f"get {rig.remote(BIG_FILE)} /dev/null\n", verbose=first)
    with rig.measure() as measured:
        output = run_command(cmd, timeout=rig.args.timeout, what="sftp get")
    if first:
        match = re.search(r"kex: server->client cipher: (\S+)", output)
        rig.notes["openssh cipher"] = match.group(1) if match else "?"
    return measured.sample


def case_ours_read(rig: Rig) -> Sample:
    from partner_ingest.sftp.reader import PipelinedReader

    with rig.measure() as measured, open_partner_session(rig.spec) as session:
        remote = session.sftp.open(rig.remote(BIG_FILE), "rb")
        reader = PipelinedReader(session.sftp, remote.handle, size=rig.sizes[BIG_FILE])
        digest = hashlib.sha256()
        while chunk := reader.read(rig.args.read_mib * MiB):
            digest.update(chunk)
        remote.close()
        rig.notes["ours cipher"] = session.client.get_transport().remote_cipher
    if digest.hexdigest() != rig.digests[BIG_FILE]:
        raise RuntimeError("ours (read): SHA-256 mismatch")
    return measured.sample


def run_child(rig: Rig, relative_path: str) -> tuple[dict[str, Any], Sample]:
    """Case 3 in a subprocess of this script: its JSON result, and a Sample with its own time and CPU.

    The result also carries what ``wait4`` says about the child's peak RSS (``wait4_maxrss_kib``).
    """
    spec = {**rig.spec, "relative_path": relative_path}
    out_path, err_path = rig.scratch / "child.out", rig.scratch / "child.err"
    with rig.measure() as measured:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                                    stdout=out, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + rig.args.timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the land_file child did not finish in {rig.args.timeout:.0f} s")
                time.sleep(0.05)
        except BaseException:
            kill_group(proc)
            raise
    output, errors = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"land_file child exited with {proc.returncode}:\n{errors[-3000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    if result["sha256"] != rig.digests[relative_path]:
        raise RuntimeError(f"ours (land_file {relative_path}): SHA-256 mismatch")
    result["wait4_maxrss_kib"] = usage.ru_maxrss
    # Its own wall time and CPU from opening the session on (not the interpreter's start and imports).
    sample = measured.sample
    sample.seconds, sample.client_cpu = result["seconds"], result["cpu_seconds"]
    sample.rss_mib = result["peak_rss_kib"] / 1024
    return result, sample


def case_ours_s3(rig: Rig, s3: Any) -> Sample:
    result, sample = run_child(rig, BIG_FILE)
    purge(s3, rig.bucket, result["key"])
    return sample


def case_rclone(rig: Rig, s3: Any) -> Sample:
    key = f"rclone/{BIG_FILE}"
    cmd = rclone_command(rig, "copyto", f"src:{rig.remote(BIG_FILE)}", f"dst:{rig.bucket}/{key}")
    with rig.measure() as measured:
        run_command(cmd, timeout=rig.args.timeout, env=rclone_env(), what="rclone copyto")
    size = s3.head_object(Bucket=rig.bucket, Key=key)["ContentLength"]
    if size != rig.sizes[BIG_FILE]:
        raise RuntimeError(f"rclone landed {size} bytes, expected {rig.sizes[BIG_FILE]}")
    purge(s3, rig.bucket, key)
    return measured.sample


class PatternStream(io.RawIOBase):
    """``size`` bytes cycling over one random 1 MiB block: S3 input that costs next to nothing."""

    def __init__(self, size: int) -> None:
        self._block = os.urandom(MiB) * 2
        self._size = size
        self._offset = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        want = self._size - self._offset if n is None or n < 0 else min(n, self._size - self._offset)
        pieces = []
        while want > 0:
            start = self._offset % MiB
            take = min(want, MiB)
            pieces.append(self._block[start:start + take])
            self._offset += take
            want -= take
        return b"".join(pieces)


def case_moto(rig: Rig, s3: Any) -> Sample:
    from partner_ingest.s3.upload import transfer_config

    key = f"moto-alone/{BIG_FILE}"
    config = transfer_config(multipart_threshold=rig.args.multipart_threshold_mib * MiB)
    with rig.measure() as measured:
        s3.upload_fileobj(PatternStream(rig.sizes[BIG_FILE]), rig.bucket, key, Config=config)
    purge(s3, rig.bucket, key)
    return measured.sample


def case_small_openssh(rig: Rig, run: int) -> Sample:
    dest = rig.scratch / f"small-get-{run}"
    dest.mkdir()
    try:
        cmd = sftp_command(rig, f"get -r {rig.remote(SMALL_DIR)} {dest}\n")
        with rig.measure() as measured:
            run_command(cmd, timeout=rig.args.timeout, what="sftp get -r")
        got = sum(1 for p in dest.rglob("*") if p.is_file())
        if got != rig.args.small_files:
            raise RuntimeError(f"sftp get -r fetched {got} files, expected {rig.args.small_files}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return measured.sample


def case_small_ours(rig: Rig, s3: Any) -> Sample:
    from partner_ingest.ingest.transfer import land_file

    count = 0
    with rig.measure() as measured, partner_link(rig.spec) as link:
        for name in sorted(a.filename for a in link.session.sftp.listdir_attr(rig.remote(SMALL_DIR))):
            land_file(link, s3, bucket=rig.bucket, relative_path=f"{SMALL_DIR}/{name}",
                      multipart_threshold=rig.args.multipart_threshold_mib * MiB, skip_if_landed=False)
            count += 1
    if count != rig.args.small_files:
        raise RuntimeError(f"ours landed {count} small files, expected {rig.args.small_files}")
    purge(s3, rig.bucket, f"{LANDING_PREFIX}/{SMALL_DIR}/")
    return measured.sample


def case_small_ours_sftp(rig: Rig) -> Sample:
    """What land_file does on the SFTP side per file (stat, open, pipelined read, fstat, close)."""
    from partner_ingest.sftp.reader import PipelinedReader

    with rig.measure() as measured, open_partner_session(rig.spec) as session:
        directory = rig.remote(SMALL_DIR)
        for name in sorted(a.filename for a in session.sftp.listdir_attr(directory)):
            path = f"{directory}/{name}"
            size = session.sftp.stat(path).st_size or 0
            remote = session.sftp.open(path, "rb")
            reader = PipelinedReader(session.sftp, remote.handle, size=size)
            hashlib.sha256(reader.read(-1)).hexdigest()
            remote.stat()
            remote.close()
    return measured.sample


def case_small_moto(rig: Rig, s3: Any) -> Sample:
    """What land_file does on the S3 side per small file (below the multipart threshold): one PutObject
    carrying the metadata, the sha256 tag and ChecksumSHA256 (``landing.upload.upload_stream``)."""
    from partner_ingest.s3.upload import SHA256_TAG

    body = os.urandom(rig.args.small_kib * KiB)
    prefix = "moto-small/"
    metadata = {"partner": "bench", "source-host": f"127.0.0.1:{rig.sshd.port}", "source-path": rig.remote(SMALL_DIR),
                "source-size": str(len(body)), "source-mtime": str(int(time.time()))}
    with rig.measure() as measured:
        for index in range(rig.args.small_files):
            digest = hashlib.sha256(body).digest()
            s3.put_object(Bucket=rig.bucket, Key=f"{prefix}f{index:05d}.bin", Body=body, Metadata=metadata,
                          Tagging=f"{SHA256_TAG}={digest.hex()}", ChecksumSHA256=base64.b64encode(digest).decode())
    purge(s3, rig.bucket, prefix)
    return measured.sample


def case_small_rclone(rig: Rig, s3: Any, run: int) -> Sample:
    prefix = f"rclone-small-{run}"
    cmd = rclone_command(rig, "copy", f"src:{rig.remote(SMALL_DIR)}", f"dst:{rig.bucket}/{prefix}")
    with rig.measure() as measured:
        run_command(cmd, timeout=rig.args.timeout, env=rclone_env(), what="rclone copy")
    count = s3.list_objects_v2(Bucket=rig.bucket, Prefix=f"{prefix}/").get("KeyCount", 0)
    if count != rig.args.small_files:
        raise RuntimeError(f"rclone copied {count} small files, expected {rig.args.small_files}")
    purge(s3, rig.bucket, f"{prefix}/")
    return measured.sample


# --------------------------------------------------------------------------------------------------
# set-up, the runs, the report


def prepare(args: argparse.Namespace, sshd: Any, moto: Any, scratch: Path) -> Rig:
    from partner_ingest_tests.harness.files import write_random
    from partner_ingest_tests.harness.sshd import KEY_USER, make_tree_dir

    tree = make_tree_dir(sshd, "bench")
    key_file = scratch / "client_ed25519"
    key_file.write_text(sshd.client_keys["ed25519"].private_pem)
    key_file.chmod(0o600)
    known_hosts = scratch / "known_hosts"
    # All of the server's host keys, pinned: rclone 1.60 (Go's ssh) does not ask for the key type it
    # knows and fails with "knownhosts: key mismatch" when the server offers another of its keys.
    known_hosts.write_text("".join(f"[127.0.0.1]:{sshd.port} {line}\n" for line in sshd.host_key_lines.values()))
    rclone_config = scratch / "rclone.conf.template"
    rclone_config.write_text("\n".join([
        "[src]", "type = sftp", "host = 127.0.0.1", f"port = {sshd.port}", f"user = {KEY_USER}",
        f"key_file = {key_file}", f"known_hosts_file = {known_hosts}",
        *([f"shell_type = {args.rclone_shell_type}"] if args.rclone_shell_type else []),
        "", "[dst]", "type = s3", "provider = Other", f"endpoint = {moto.endpoint_url}",
        "access_key_id = testing", "secret_access_key = testing", "region = us-east-1", "",
    ]))
    rig = Rig(args=args, sshd=sshd, moto=moto, scratch=scratch, tree=tree, bucket=f"bench-{secrets.token_hex(6)}",
              key_file=key_file, known_hosts=known_hosts, rclone_config=rclone_config,
              sshd_cpu=SshdCpu(sshd.proc.pid))
    rig.sshd_cpu.start()
    size = args.size_mib * MiB
    for name, file_size in ((BIG_FILE, size), (QUARTER_FILE, size // 4), (TINY_FILE, 10 * KiB)):
        rig.digests[name] = write_random(tree / name, file_size)
        rig.sizes[name] = file_size
    small = tree / SMALL_DIR
    small.mkdir()
    small.chmod(0o755)
    for index in range(args.small_files):
        write_random(small / f"f{index:05d}.bin", args.small_kib * KiB)
    return rig


def versions() -> str:
    import boto3
    import moto
    import paramiko

    ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10).stderr.strip().split(",")[0]
    rclone_v = subprocess.run(["rclone", "version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    return (f"python {platform.python_version()}, paramiko {paramiko.__version__}, boto3 {boto3.__version__}, "
            f"moto {moto.__version__}, {ssh_v}, {rclone_v}, {os.cpu_count()} CPUs")


def median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(s, attribute) for s in samples)


def report(rig: Rig, big: dict[str, list[Sample]], small: dict[str, list[Sample]],
           rss_rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    args = rig.args
    size_mib = rig.sizes[BIG_FILE] / MiB
    print()
    print(f"transfer_throughput: {args.size_mib} MiB file, {args.small_files} x {args.small_kib} KiB files, "
          f"median of {args.repeat} run(s), loopback 127.0.0.1")
    print(versions())
    print(f"load average (1 min): {rig.notes.get('load at start', '?')} at start, {os.getloadavg()[0]:.2f} at end "
          "(other work on these CPUs lowers MiB/s; CPU ms/MiB moves much less)")
    print(f"ciphers: OpenSSH {rig.notes.get('openssh cipher', '?')}, ours {rig.notes.get('ours cipher', '?')}; "
          f"ours: {args.read_mib} MiB reads in case 2, boto3 8 MiB parts x 4 threads, "
          f"multipart above {args.multipart_threshold_mib} MiB")
    print()
    if big:
        reference = size_mib / median(big[OPENSSH], "seconds") if OPENSSH in big else None
        print(f"{'':<34} {'':>8} {'':>10} {'CPU ms/MiB':^22}")
        print(f"{'case':<34} {'MiB/s':>8} {'x OpenSSH':>10} {'client':>7} {'sshd':>6} {'moto':>7} "
              f"{'peak RSS':>9}   runs (MiB/s)")
        for label, samples in big.items():
            speed = size_mib / median(samples, "seconds")
            ratio = f"{speed / reference:.2f}" if reference else "-"
            cpu = [median(samples, a) / size_mib * 1000 for a in ("client_cpu", "sshd_cpu", "moto_cpu")]
            peaks = [s.rss_mib for s in samples if s.rss_mib is not None]
            rss = f"{max(peaks):.0f} MiB" if peaks else ""
            runs = ", ".join(f"{size_mib / s.seconds:.1f}" for s in samples)
            print(f"{label:<34} {speed:>8.1f} {ratio:>10} {cpu[0]:>7.1f} {cpu[1]:>6.1f} {cpu[2]:>7.1f} "
                  f"{rss:>9}   {runs}")
        print("client CPU: sftp+ssh / rclone / our process (case 3: the child from opening the session on); "
              "sshd: its session processes")
        print()
    if rss_rows:
        print("peak RSS of ours: land_file SFTP -> S3 in a child process (peak = its VmHWM; RSS before = VmRSS "
              "after imports and the boto3 client, before connecting)")
        print(f"{'file size':>12} {'peak RSS':>10} {'RSS before':>11} {'growth':>8} {'land s':>8} {'MiB/s':>8}"
              f" {'wait4 ru_maxrss*':>17}")
        for label, file_size, result in rss_rows:
            peak, before = result["peak_rss_kib"] / 1024, result["rss_before_kib"] / 1024
            print(f"{label:>12} {peak:>6.0f} MiB {before:>7.0f} MiB {peak - before:>4.0f} MiB "
                  f"{result['land_seconds']:>8.2f} {file_size / MiB / result['land_seconds']:>8.1f} "
                  f"{result['wait4_maxrss_kib'] / 1024:>13.0f} MiB")
        print("* wait4/RUSAGE_CHILDREN ru_maxrss is inflated on Linux: it keeps the RSS of the image before "
              "execve, i.e. this\n  benchmark's own RSS when it spawned the child "
              f"(now {proc_status_kib('VmRSS') / 1024:.0f} MiB); VmHWM is the child's own peak.")
        print()
    if small:
        reference_s = median(small[SMALL_OPENSSH], "seconds") if SMALL_OPENSSH in small else None
        print(f"small files: {args.small_files} x {args.small_kib} KiB "
              "(x OpenSSH = OpenSSH seconds / these seconds; higher is faster)")
        print(f"{'':<34} {'':>8} {'':>8} {'':>10} {'CPU seconds':^22}")
        print(f"{'case':<34} {'seconds':>8} {'files/s':>8} {'x OpenSSH':>10} {'client':>7} {'sshd':>6} {'moto':>7}"
              "   runs (s)")
        for label, samples in small.items():
            seconds = median(samples, "seconds")
            ratio = f"{reference_s / seconds:.2f}" if reference_s else "-"
            cpu = [median(samples, a) for a in ("client_cpu", "sshd_cpu", "moto_cpu")]
            runs = ", ".join(f"{s.seconds:.2f}" for s in samples)
            print(f"{label:<34} {seconds:>8.2f} {args.small_files / seconds:>8.0f} {ratio:>10} "
                  f"{cpu[0]:>7.2f} {cpu[1]:>6.2f} {cpu[2]:>7.2f}   {runs}")
        print()


def timed(label: str, case: Callable[[], Sample], into: dict[str, list[Sample]]) -> None:
    sample = case()
    into.setdefault(label, []).append(sample)
    rss = f"  peak RSS {sample.rss_mib:.0f} MiB" if sample.rss_mib else ""
    print(f"  {label:<34} {sample.seconds:8.2f} s  cpu client {sample.client_cpu:5.2f} s, "
          f"sshd {sample.sshd_cpu:5.2f} s, moto {sample.moto_cpu:5.2f} s{rss}", file=sys.stderr, flush=True)


def benchmark(args: argparse.Namespace) -> None:
    from partner_ingest_tests.harness.moto_server import start_moto
    from partner_ingest_tests.harness.sshd import start_sshd

    sshd = moto = rig = None
    scratch = Path(tempfile.mkdtemp(prefix="pi-bench-"))
    try:
        print("starting sshd and moto ...", file=sys.stderr, flush=True)
        sshd = start_sshd()
        moto = start_moto()
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
            os.environ.pop(name, None)
        os.environ.update(moto.env())
        print(f"writing {args.size_mib} MiB (+1/4) and {args.small_files} small files ...", file=sys.stderr,
              flush=True)
        rig = prepare(args, sshd, moto, scratch)
        rig.notes["load at start"] = f"{os.getloadavg()[0]:.2f}"
        s3 = s3_client()
        s3.create_bucket(Bucket=rig.bucket)
        # Versioned like the real landing bucket. (Unversioned, moto answers a completed multipart
        # upload with "x-amz-version-id: null" and then rejects HEAD ?versionId=null, which fails rclone.)
        s3.put_bucket_versioning(Bucket=rig.bucket, VersioningConfiguration={"Status": "Enabled"})

        big: dict[str, list[Sample]] = {}
        small: dict[str, list[Sample]] = {}
        for run in range(args.repeat):
            print(f"run {run + 1}/{args.repeat}", file=sys.stderr, flush=True)
            if "big" in args.cases:
                timed(OPENSSH, lambda run=run: case_openssh(rig, first=run == 0), big)
                timed(OURS_READ, lambda: case_ours_read(rig), big)
                timed(OURS_S3, lambda: case_ours_s3(rig, s3), big)
                if not args.skip_rclone:
                    timed(RCLONE, lambda: case_rclone(rig, s3), big)
                timed(MOTO, lambda: case_moto(rig, s3), big)
            if "small" in args.cases and args.small_files:
                timed(SMALL_OPENSSH, lambda run=run: case_small_openssh(rig, run), small)
                timed(SMALL_OURS, lambda: case_small_ours(rig, s3), small)
                if not args.skip_rclone:
                    timed(SMALL_RCLONE, lambda run=run: case_small_rclone(rig, s3, run), small)
                timed(SMALL_OURS_SFTP, lambda: case_small_ours_sftp(rig), small)
                timed(SMALL_MOTO, lambda: case_small_moto(rig, s3), small)

        rss_rows: list[tuple[str, int, dict[str, Any]]] = []
        if "big" in args.cases:
            print("peak RSS at 10 KiB, 1/4 size and full size ...", file=sys.stderr, flush=True)
            for name in (TINY_FILE, QUARTER_FILE, BIG_FILE):
                result, _ = run_child(rig, name)
                purge(s3, rig.bucket, result["key"])
                label = "10 KiB" if name == TINY_FILE else f"{rig.sizes[name] / MiB:.0f} MiB"
                rss_rows.append((label, rig.sizes[name], result))
        report(rig, big, small, rss_rows)
    finally:
        stop_all(rig, moto, sshd, scratch)


def stop_all(rig: Rig | None, moto: Any, sshd: Any, scratch: Path, proxies: Iterable[Any] = ()) -> None:
    """A benchmark's teardown: the CPU sampler, every proxy, moto and sshd (each stopped by its PID even if
    another one's stop failed), then the scratch trees."""
    if rig is not None:
        rig.sshd_cpu.stop()
    for server in (*proxies, moto, sshd):
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
    if sshd is not None:
        shutil.rmtree(sshd.workdir, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput, CPU and peak RSS of our SFTP -> S3 transfer core vs OpenSSH sftp and rclone "
                    "over loopback. Needs root (it starts a real sshd). Prints tables at the end.")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large file (default 1024)")
    parser.add_argument("--small-files", type=int, default=1000, help="number of small files (default 1000, 0 = skip)")
    parser.add_argument("--small-kib", type=int, default=10, help="size of each small file in KiB (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")
    parser.add_argument("--cases", nargs="+", choices=["big", "small"], default=["big", "small"],
                        help="which groups of cases to run (default both)")
    parser.add_argument("--read-mib", type=int, default=8,
                        help="read size for 'ours: SFTP read' (default 8, what boto3 asks per part)")
    parser.add_argument("--multipart-threshold-mib", type=int, default=16,
                        help="land_file multipart_threshold (default 16, land_file's default)")
    parser.add_argument("--skip-rclone", action="store_true", help="leave out the rclone cases")
    parser.add_argument("--rclone-shell-type", default="",
                        help="rclone sftp shell_type (e.g. 'none'); default: rclone detects it")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds any one transfer may take before it is killed (default 900)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.size_mib, args.repeat, args.small_kib, args.read_mib, args.multipart_threshold_mib) < 1 \
            or args.small_files < 0 or args.timeout <= 0:
        parser.error("sizes, --repeat and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    if os.geteuid() != 0:
        print("needs root: it starts a real sshd that authenticates its own system accounts\n"
              "  sudo .venv/bin/python benchmarks/transfer_throughput.py --size-mib 256", file=sys.stderr)
        return 2
    for tool in ("sftp", "ssh-keygen", *([] if args.skip_rclone else ["rclone"])):
        if shutil.which(tool) is None:
            print(f"'{tool}' not found (scripts/test.sh installs openssh and rclone)", file=sys.stderr)
            return 2
    return run_interruptibly(lambda: benchmark(args), "interrupted; sshd and moto stopped")


if __name__ == "__main__":
    sys.exit(main())
