"""The SFTP read leg against servers that cap read replies, before and after the reader learned to adapt.

Why: some servers answer at most 32 KiB or 64 KiB per READ, whatever was asked (SFTP v3 allows short
replies; the reader's docstring names Windows-based servers). Our ``PipelinedReader`` asks 255 KiB per
request. The reader as it was at commit ``cfbcafb`` ("before") completed each short reply with one
follow-up request at a time, so a 255 KiB request answered in 32 KiB pieces cost 7 more round trips,
one after the other. The current reader ("after") learns the server's largest answer from its first
short reply, or up front from ``limits@openssh.com`` (``server_read_limit``), and from then on asks that
size with more requests in flight (the same bytes in flight); it also proves EOF at the end
(``confirm_eof``). This puts a number on the difference, both readers in the same run against the same
server.

The server is the test harness's misbehaving asyncssh server
(``partner_ingest_tests.harness.misbehaving_sftp.MisbehavingSftpServer``), which applies
``Misbehaviour(read_cap=..., limits=...)`` and counts every READ it answers. It runs in a child process
of this script (its own interpreter, so it does not share our GIL), over 127.0.0.1, started here and
stopped by PID at the end, even on Ctrl-C, SIGTERM or an error. It needs neither root nor sshd. Our
client connects with the product's own ``open_session`` (pinned host key, password), which also
installs the product's channel buffer (``channel_buffer.install``), so both readers see the same
transport. "before" is loaded from ``git show cfbcafb:partner_ingest/sftp/reader.py`` into a throwaway
module (``reader_before``); "after" is ``partner_ingest.sftp.reader`` as it is in the working tree.
Run from the repository root:

    .venv/bin/python benchmarks/capped_server.py                    # 256 MiB, 3 runs
    .venv/bin/python benchmarks/capped_server.py --size-mib 64 --repeat 1

Cases (server misbehaviour), each read by both readers ``--repeat`` times, interleaved (before/after
order alternates between runs); the median is reported:

1. read cap 32 KiB, no ``limits@openssh.com``: "after" learns the cap from the first short reply;
2. read cap 64 KiB, no ``limits@openssh.com``: likewise;
3. read cap 32 KiB with ``limits@openssh.com`` (max-read-length = 32 KiB): "after" learns it up front;
4. no cap (the reference): every 255 KiB request answered in full.

Each read is timed from opening the remote file to its close (after: ``server_read_limit``, read,
``confirm_eof``), in ``--read-mib`` (8 MiB) reads, each hashed with SHA-256; the login is not timed. Every
digest is checked against the file's SHA-256 and the script fails if one differs. READs are the
server's count for that read (the EOF probe included). CPU is ms per MiB, for this process (the reader,
paramiko's transport thread, the hashing) and for the server process; it moves much less with load
than MiB/s does.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import secrets
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partner_ingest_tests.harness.files import KiB, MiB
from partner_ingest_tests.harness.processes import run_interruptibly, stop_process

BEFORE_COMMIT = "cfbcafb"
READER_PATH = "partner_ingest/sftp/reader.py"
FILE_NAME = "big.bin"
USERNAME = "bench"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    label: str
    read_cap: int | None
    limits: bool


CASES = (
    Case("cap 32 KiB", 32 * KiB, limits=False),
    Case("cap 64 KiB", 64 * KiB, limits=False),
    Case("cap 32 KiB + limits@openssh.com", 32 * KiB, limits=True),
    Case("no cap (reference)", None, limits=False),
)
READERS = ("before", "after")


# --------------------------------------------------------------------------------------------------
# the server child: the harness's misbehaving asyncssh server, driven over stdin/stdout


def serve_main(root: str) -> int:
    """Serve ``root``; one JSON command per stdin line, one JSON answer per stdout line; EOF stops it.

    The password is the first stdin line (kept off the command line). Commands:
    ``{"misbehaviour": {...}}`` (fields of ``Misbehaviour``, read per request; ``limits`` is read when a
    session starts), ``{"reset": true}`` (zero the counters), ``{"counters": true}`` (their snapshot).
    """
    from partner_ingest_tests.harness.misbehaving_sftp import MisbehavingSftpServer, Misbehaviour

    password = sys.stdin.readline().strip()
    server = MisbehavingSftpServer(Path(root), Misbehaviour(), username=USERNAME, password=password)
    endpoint = server.start(timeout=15.0)
    try:
        print(json.dumps({"host": endpoint.host, "port": endpoint.port, "username": endpoint.username,
                          "host_key_line": endpoint.host_key_line}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "misbehaviour" in command:
                server.misbehaviour = Misbehaviour(**command["misbehaviour"])
                answer: dict[str, Any] = {"ok": True}
            elif command.get("reset"):
                server.counters.reset()
                answer = {"ok": True}
            elif command.get("counters"):
                answer = server.counters.snapshot()
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        server.stop(timeout=5.0)
    return 0


class ServerProcess:
    """The server child, started in its own session and stopped by its PID."""

    def __init__(self, root: Path, timeout: float) -> None:
        self._timeout = timeout
        self.password = secrets.token_urlsafe(16)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     start_new_session=True)
        try:
            self._send(self.password)
            self.endpoint: dict[str, Any] = self._answer()
        except BaseException:
            self.stop()
            raise

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self._timeout)
        if not ready:
            raise TimeoutError(f"the server child (PID {self.proc.pid}) did not answer in {self._timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the server child (PID {self.proc.pid}) exited with {self.proc.poll()}")
        return json.loads(line)

    def command(self, **command: Any) -> dict[str, Any]:
        self._send(json.dumps(command))
        answer = self._answer()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def cpu(self) -> float:
        """CPU seconds (user + system, all threads) of the server child so far."""
        data = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = data[data.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Close its stdin (it stops its server and exits), then SIGTERM/SIGKILL its group by PID."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        stop_process(self.proc, group=True, timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --------------------------------------------------------------------------------------------------
# the two readers


def load_reader_before() -> types.ModuleType:
    """``partner_ingest/sftp/reader.py`` as it was at ``cfbcafb``, as a throwaway module."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_COMMIT}:{READER_PATH}"],
                            capture_output=True, text=True, check=True, timeout=30).stdout
    module = types.ModuleType("reader_before")
    module.__file__ = f"{BEFORE_COMMIT}:{READER_PATH}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own repository's history
    return module


@dataclass
class Sample:
    seconds: float
    client_cpu: float
    server_cpu: float
    reads: int
    short_answers: int
    max_read_requested: int
    learned: int | None = None    # after: the chunk size it settled on (None: kept 255 KiB)


@dataclass
class Rig:
    args: argparse.Namespace
    server: ServerProcess
    size: int
    digest: str
    before: types.ModuleType
    results: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)


def open_bench_session(rig: Rig) -> Any:
    from partner_ingest.config import PartnerConfig
    from partner_ingest.sftp.connection import open_session
    from partner_ingest.sftp.credentials import SftpCredentials

    endpoint = rig.server.endpoint
    partner = PartnerConfig(name="bench", host=endpoint["host"], port=endpoint["port"], username=endpoint["username"],
                            secret_id="unused-by-the-benchmark", host_keys=[endpoint["host_key_line"]],
                            remote_dir="/", landing_prefix="bench")
    return open_session(partner, SftpCredentials(password=rig.server.password))


def read_before(rig: Rig, sftp: Any, handle: bytes, digest: Any) -> int | None:
    reader = rig.before.PipelinedReader(sftp, handle, size=rig.size)
    while chunk := reader.read(rig.args.read_mib * MiB):
        digest.update(chunk)
    reader.drain()
    return None


def read_after(rig: Rig, sftp: Any, handle: bytes, digest: Any) -> int | None:
    from partner_ingest.sftp.reader import PipelinedReader, server_read_limit

    reader = PipelinedReader(sftp, handle, size=rig.size, server_limit=server_read_limit(sftp))
    while chunk := reader.read(rig.args.read_mib * MiB):
        digest.update(chunk)
    reader.confirm_eof()
    reader.drain()
    return reader.learned_chunk_size


def process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def run_once(rig: Rig, case: Case, which: str) -> Sample:
    read = read_before if which == "before" else read_after
    rig.server.command(misbehaviour={"read_cap": case.read_cap, "limits": case.limits})
    with open_bench_session(rig) as session:
        rig.server.command(reset=True)
        digest = hashlib.sha256()
        cpu0, server0, started = process_cpu(), rig.server.cpu(), time.monotonic()
        remote = session.sftp.open(f"/{FILE_NAME}", "rb")
        learned = read(rig, session.sftp, remote.handle, digest)
        remote.close()
        ended = time.monotonic()
        cpu1, server1 = process_cpu(), rig.server.cpu()
        counters = rig.server.command(counters=True)
    if digest.hexdigest() != rig.digest:
        raise RuntimeError(f"{which} / {case.label}: SHA-256 {digest.hexdigest()} != the file's {rig.digest}")
    return Sample(seconds=ended - started, client_cpu=cpu1 - cpu0, server_cpu=server1 - server0,
                  reads=counters["reads"], short_answers=counters["short_answers"],
                  max_read_requested=counters["max_read_requested"], learned=learned)


# --------------------------------------------------------------------------------------------------
# the run and the report


def versions() -> str:
    import asyncssh
    import paramiko

    return (f"python {platform.python_version()}, paramiko {paramiko.__version__}, asyncssh {asyncssh.__version__}, "
            f"{os.cpu_count()} CPUs")


def head_commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          timeout=30)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", READER_PATH],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return done.stdout.strip() + (" + uncommitted changes to reader.py" if dirty else "")


def median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(s, attribute) for s in samples)


def report(rig: Rig, load_start: float) -> None:
    args = rig.args
    size_mib = rig.size / MiB
    print()
    print(f"capped_server: {args.size_mib} MiB file, median of {args.repeat} run(s), loopback 127.0.0.1, "
          f"{args.read_mib} MiB reads + SHA-256")
    print(versions())
    print(f"before = {READER_PATH} at {BEFORE_COMMIT}; after = the working tree (HEAD {head_commit()})")
    print(f"load average (1 min): {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end "
          "(other work on these CPUs lowers MiB/s; CPU ms/MiB moves much less)")
    print()
    print(f"{'':<33} {'':<7} {'':>8} {'':>7} {'':>7} {'':>7} {'CPU ms/MiB':^15}")
    print(f"{'server':<33} {'reader':<7} {'MiB/s':>8} {'after/':>7} {'READs':>7} {'short':>7} "
          f"{'client':>7} {'server':>7} {'asks':>9}   runs (MiB/s)")
    print(f"{'':<33} {'':<7} {'':>8} {'before':>7} {'':>7} {'':>7} {'':>7} {'':>7} {'(KiB)':>9}".rstrip())
    for case in CASES:
        speeds = {}
        for which in READERS:
            samples = rig.results[(case.label, which)]
            speeds[which] = size_mib / median(samples, "seconds")
        for which in READERS:
            samples = rig.results[(case.label, which)]
            ratio = f"{speeds['after'] / speeds['before']:.2f}" if which == "after" else ""
            cpu = [median(samples, a) / size_mib * 1000 for a in ("client_cpu", "server_cpu")]
            reads = int(median(samples, "reads"))
            short = int(median(samples, "short_answers"))
            learned = {s.learned for s in samples}
            if which == "after" and learned != {None}:
                asks = "/".join(f"{x // KiB}" for x in sorted(x for x in learned if x))
            else:
                asks = f"{max(s.max_read_requested for s in samples) // KiB}"
            runs = ", ".join(f"{size_mib / s.seconds:.1f}" for s in samples)
            label = case.label if which == READERS[0] else ""
            print(f"{label:<33} {which:<7} {speeds[which]:>8.1f} {ratio:>7} {reads:>7} {short:>7} "
                  f"{cpu[0]:>7.2f} {cpu[1]:>7.2f} {asks:>9}   {runs}")
    print("READs: READ requests the server answered for one read of the file (median); short: answered with fewer")
    print("bytes than asked, not at EOF; asks: bytes per request the reader settled on. In flight: before 32 x 255")
    print("KiB (each short reply completed one follow-up at a time); after 255 x 32 KiB or 127 x 64 KiB once learned.")
    print("All digests matched the file's SHA-256.")
    print()


def benchmark(args: argparse.Namespace) -> None:
    from partner_ingest_tests.harness.files import write_random

    before = load_reader_before()
    scratch = Path(tempfile.mkdtemp(prefix="pi-capped-"))
    server = None
    try:
        print(f"writing {args.size_mib} MiB ...", file=sys.stderr, flush=True)
        size = args.size_mib * MiB
        digest = write_random(scratch / FILE_NAME, size)
        print("starting the misbehaving server ...", file=sys.stderr, flush=True)
        server = ServerProcess(scratch, timeout=args.timeout)
        rig = Rig(args=args, server=server, size=size, digest=digest, before=before)
        load_start = os.getloadavg()[0]
        for run in range(args.repeat):
            print(f"run {run + 1}/{args.repeat}", file=sys.stderr, flush=True)
            order = READERS if run % 2 == 0 else tuple(reversed(READERS))
            for case in CASES:
                for which in order:
                    sample = run_once(rig, case, which)
                    rig.results.setdefault((case.label, which), []).append(sample)
                    print(f"  {case.label:<33} {which:<7} {sample.seconds:7.2f} s {size / MiB / sample.seconds:7.1f} "
                          f"MiB/s  {sample.reads:6d} READs  cpu client {sample.client_cpu:5.2f} s, "
                          f"server {sample.server_cpu:5.2f} s", file=sys.stderr, flush=True)
        report(rig, load_start)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SFTP read throughput against servers that cap read replies (32/64 KiB): the reader at "
                    f"{BEFORE_COMMIT} vs the current one, over loopback. Prints a table at the end.")
    parser.add_argument("--size-mib", type=int, default=256, help="size of the file (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case and reader; the median is reported "
                                                              "(default 3)")
    parser.add_argument("--read-mib", type=int, default=8, help="read size (default 8, what boto3 asks per part)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds the server child may take to answer a command (default 60)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.size_mib, args.repeat, args.read_mib) < 1 or args.timeout <= 0:
        parser.error("sizes, --repeat and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        return serve_main(args.serve)
    return run_interruptibly(lambda: benchmark(args), "interrupted; the server child stopped")


if __name__ == "__main__":
    sys.exit(main())
