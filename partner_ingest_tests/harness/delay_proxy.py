"""A TCP delay line on 127.0.0.1: every byte is forwarded a fixed one-way delay after it arrived.

Why: on loopback the round trip is tens of µs, so a benchmark cannot show what a partner 20 or 100 ms
away does to a client that keeps too little in flight. This proxy adds ``rtt / 2`` in each direction
without limiting throughput: it reads as fast as the sender writes (256 KiB ``recv``), stamps each
piece with its arrival time and sends it on at ``arrival + delay``, so any number of bytes can be "on
the wire" at once, as on a long fat link. It is not stop-and-wait: a request and its reply each cost
``delay`` once, however many follow them.

The kernel's ``netem`` qdisc would do this without costing CPU, but it is not available here: the
kernel of these machines is built without ``CONFIG_NET_SCH_NETEM`` and has no modules directory
(checked: ``tc qdisc add ... netem`` answers "Specified qdisc kind is unknown"; no ``modprobe``). So
this proxy is the delay, and its CPU shares the machine with client and server: run it in its own
process (``start_delay_proxy_process``, or ``python -m partner_ingest_tests.harness.delay_proxy``) so
that it has its own GIL, and count its CPU.

What it does not model: loss, jitter, a bandwidth limit, or TCP's own window on a long link (both TCP
connections here are loopback ones; the proxy absorbs the delay). A real 100 ms path also needs TCP
buffers of at least bandwidth x RTT.

Memory is bounded: each direction holds at most ``max_buffered`` bytes (default 256 MiB); when full it
stops reading, so TCP pushes back on the sender. Threads block in ``recv``/``sendmsg`` or wait at most
0.2 s for each other; ``close()`` shuts every socket down (which wakes them), joins every thread and
closes every socket.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from partner_ingest_tests.harness.files import KiB, MiB
from partner_ingest_tests.harness.processes import stop_process

RECV_SIZE = 256 * KiB
MAX_BUFFERED = 256 * MiB
_TICK = 0.2  # the longest a thread waits for its peer thread before it checks whether to stop
_MAX_BATCH = 512  # pieces per sendmsg (IOV_MAX is 1024)


class _Direction:
    """One way of one connection: a reader stamps what ``src`` sends, a writer hands it to ``dst`` when due.

    Cheap per piece, because a delayed link carries many small ones (OpenSSH's 32 KiB packets): blocking
    socket calls (``close()`` shuts the sockets down to wake them), the writer is woken only when the
    queue was empty (otherwise it already sleeps until the head is due), and it sends everything that is
    due in one ``sendmsg``.
    """

    def __init__(self, proxy: DelayProxy, link: _Link, src: socket.socket, dst: socket.socket, name: str) -> None:
        self.proxy, self.link, self.src, self.dst, self.name = proxy, link, src, dst, name
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (due, data); None = the sender's EOF
        self.buffered = 0
        self.forwarded = 0
        self.cond = threading.Condition()
        self._reader_waits = False
        self.threads = [threading.Thread(target=self._read, name=f"delay-{name}-read", daemon=True),
                        threading.Thread(target=self._write, name=f"delay-{name}-write", daemon=True)]

    def _stopping(self) -> bool:
        return self.proxy._stop.is_set() or self.link.aborted.is_set()

    def _read(self) -> None:
        limit, size, delay = self.proxy.max_buffered, self.proxy.recv_size, self.proxy.delay
        try:
            while not self._stopping():
                with self.cond:
                    if self.buffered >= limit:   # full: stop reading, so TCP pushes back on the sender
                        self._reader_waits = True
                        self.cond.wait(_TICK)
                        self._reader_waits = False
                        continue
                data = self.src.recv(size)
                due = time.monotonic() + delay
                with self.cond:
                    if not self.queue:
                        self.cond.notify()   # the writer sleeps on an empty queue; otherwise until the head is due
                    self.queue.append((due, data or None))
                    if data:
                        self.buffered += len(data)
                if data:
                    self.proxy._note_buffered(self.buffered)
                else:
                    return
        except OSError:
            self.link.abort()

    def _write(self) -> None:
        try:
            while True:
                batch: list[bytes | None] = []
                with self.cond:
                    while not batch:
                        if self._stopping():
                            return
                        if not self.queue:
                            self.cond.wait(_TICK)
                            continue
                        now = time.monotonic()
                        wait = self.queue[0][0] - now
                        if wait > 0:
                            self.cond.wait(min(wait, _TICK))
                            continue
                        while self.queue and self.queue[0][0] <= now and len(batch) < _MAX_BATCH:
                            batch.append(self.queue.popleft()[1])
                pieces = [piece for piece in batch if piece is not None]
                sent = _send_all(self.dst, pieces)
                with self.cond:
                    self.buffered -= sent
                    self.forwarded += sent
                    if self._reader_waits:
                        self.cond.notify()
                if batch[-1] is None:
                    with contextlib.suppress(OSError):
                        self.dst.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            self.link.abort()
        finally:
            self.link.direction_done()


def _send_all(sock: socket.socket, pieces: list[bytes]) -> int:
    """``sendmsg`` until every piece is sent (a blocking socket may still return short); the bytes sent."""
    total = sum(len(piece) for piece in pieces)
    views = [memoryview(piece) for piece in pieces]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]
    return total


class _Link:
    """One client connection and its connection to the target: two directions, four threads."""

    def __init__(self, proxy: DelayProxy, client: socket.socket, server: socket.socket) -> None:
        self.sockets = (client, server)
        self.aborted = threading.Event()
        self._lock = threading.Lock()
        self._open_directions = 2
        self.up = _Direction(proxy, self, client, server, "up")        # client -> target
        self.down = _Direction(proxy, self, server, client, "down")    # target -> client

    @property
    def threads(self) -> list[threading.Thread]:
        return [*self.up.threads, *self.down.threads]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def direction_done(self) -> None:
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if last:
            self.close_sockets()

    def abort(self) -> None:
        """A reset or error on either side ends the whole connection at once (no delay for a reset). Shutting
        the sockets down wakes the threads blocked in ``recv`` or ``sendmsg`` on them."""
        self.aborted.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close_sockets(self) -> None:
        """Shut down before closing: a thread blocked in ``recv`` on a socket another thread merely closes is
        never woken (and the peer never sees the end)."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)


class DelayProxy:
    """Listens on 127.0.0.1 and forwards each connection to ``target_port`` with ``rtt / 2`` each way.

    ``start()`` begins accepting, ``close()`` stops, joins every thread and closes every socket (also as a
    context manager). Counters: ``connections``, ``bytes_up`` / ``bytes_down`` (forwarded so far, client ->
    target / target -> client), ``peak_buffered`` (the most bytes one direction held at once).
    """

    def __init__(self, target_port: int, *, rtt: float, target_host: str = "127.0.0.1", listen_port: int = 0,
                 max_buffered: int = MAX_BUFFERED, recv_size: int = RECV_SIZE) -> None:
        if rtt < 0 or max_buffered < 1 or recv_size < 1:
            raise ValueError("rtt must be >= 0, max_buffered and recv_size positive")
        self.target = (target_host, target_port)
        self.rtt = rtt
        self.delay = rtt / 2
        self.max_buffered = max_buffered
        self.recv_size = recv_size
        self.connections = 0
        self.peak_buffered = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._finished_up = self._finished_down = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", listen_port))
        self._listener.listen(64)
        self._listener.settimeout(_TICK)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="delay-accept", daemon=True)

    def start(self) -> DelayProxy:
        self._acceptor.start()
        return self

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def bytes_up(self) -> int:
        with self._lock:
            return self._finished_up + sum(link.up.forwarded for link in self._links)

    @property
    def bytes_down(self) -> int:
        with self._lock:
            return self._finished_down + sum(link.down.forwarded for link in self._links)

    def _note_buffered(self, buffered: int) -> None:
        if buffered > self.peak_buffered:
            with self._lock:
                self.peak_buffered = max(self.peak_buffered, buffered)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests go out at once
                sock.settimeout(None)   # blocking; close() and errors shut the sockets down to wake the threads
            link = _Link(self, client, server)
            with self._lock:
                self.connections += 1
                self._prune()
                self._links.append(link)
            link.start()

    def _prune(self) -> None:
        """Forget finished connections (their counts are kept), so a long benchmark does not accumulate them."""
        for link in [link for link in self._links if not link.alive()]:
            self._finished_up += link.up.forwarded
            self._finished_down += link.down.forwarded
            self._links.remove(link)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)
        with self._lock:
            links = list(self._links)
        for link in links:
            link.abort()
            for thread in link.threads:
                if thread.ident is not None:
                    thread.join(timeout=5)
            link.close_sockets()


# --------------------------------------------------------------------------------------------------
# in its own process (own GIL, its CPU measurable by PID)


@dataclass
class DelayProxyProcess:
    """A delay proxy running in a child process; ``stop()`` ends it by its PID."""

    proc: subprocess.Popen
    port: int
    rtt: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_delay_proxy_process(target_port: int, *, rtt: float, max_buffered: int = MAX_BUFFERED,
                              timeout: float = 20.0) -> DelayProxyProcess:
    """Start ``python -m partner_ingest_tests.harness.delay_proxy`` and wait (bounded) for its port."""
    proc = subprocess.Popen([sys.executable, "-m", "partner_ingest_tests.harness.delay_proxy",
                             "--target-port", str(target_port), "--rtt-ms", repr(rtt * 1000),
                             "--max-buffered-mib", str(max(1, max_buffered // MiB))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the delay proxy exited with {proc.returncode} before listening")
            readable, _, _ = select.select([proc.stdout], [], [], _TICK)
            if readable:
                line = proc.stdout.readline()
                if line.startswith("listening "):
                    return DelayProxyProcess(proc=proc, port=int(line.rsplit(":", 1)[1]), rtt=rtt)
        raise TimeoutError(f"the delay proxy did not report its port within {timeout:.0f} s")
    except BaseException:
        stop_process(proc)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TCP delay line on 127.0.0.1 (adds rtt/2 each way, no rate limit)")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--listen-port", type=int, default=0)
    parser.add_argument("--max-buffered-mib", type=int, default=MAX_BUFFERED // MiB)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    with DelayProxy(args.target_port, rtt=args.rtt_ms / 1000, listen_port=args.listen_port,
                    max_buffered=args.max_buffered_mib * MiB) as proxy:
        print(f"listening 127.0.0.1:{proxy.port}", flush=True)
        # Ends on SIGTERM/SIGINT, or when the process that started it is gone (never outlives a benchmark).
        while not stop.wait(1.0) and os.getppid() == parent:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
