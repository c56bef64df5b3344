"""Start and stop helper processes by PID, with bounded waits; the tests' and benchmarks' one way to stop a
process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        with contextlib.closing(socket.socket()) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def run_tool(*args: str, input: str | None = None) -> str:
    """Run a short setup command (useradd, ssh-keygen ...) to completion; its stdout, or CalledProcessError."""
    return subprocess.run(args, check=True, capture_output=True, text=True, input=input).stdout


def stop_process(proc: subprocess.Popen, *, group: bool = False, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``.

    With ``group`` (the process was started with ``start_new_session=True``), the signals go to its whole
    process group and this waits until every member is gone, not only the leader: `dagster dev` returns
    before its webserver, daemon and code server have exited.
    """
    if group:
        _stop_group(proc, timeout)
        return
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


def kill_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL the process group ``proc`` leads, now, and reap the leader (for cleanup on an error)."""
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=timeout)


def run_in_own_group(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None,
                     stderr: int = subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout or interrupt kill that whole group by its id."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """Process groups are signalled with ``os.killpg``, not psutil (a test dependency): psutil has no
    process-group call, and its tree walk (``children(recursive=True)``) loses the members whose parent
    has already exited. `dagster dev` exits before its webserver, daemon and code server; they are then
    re-parented and no longer its children, but still in its group (the tests check with ``pgrep -g``
    that none outlives it). The kernel delivers ``killpg`` to every member at once, forks included."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    while _group_alive(pgid) and time.monotonic() < deadline + timeout:
        time.sleep(0.1)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member runs as another user: it exists
        return True
    return True


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """So ``kill PID`` cleans up like Ctrl-C does (the ``finally`` blocks stop what was started)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_interruptibly(work: Callable[[], object], interrupted: str) -> int:
    """A benchmark's exit status: 0 once ``work`` returns, 130 (after printing ``interrupted``) when Ctrl-C
    or SIGTERM stopped it."""
    try:
        with sigterm_as_interrupt():
            work()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    return 0
