"""The delay line the throughput benchmark puts between client and sshd: it delays, it does not throttle.

Each test runs its own tiny TCP peer on 127.0.0.1 in a thread (no sshd, no moto, no root), a few seconds
in all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from partner_ingest_tests.harness.delay_proxy import DelayProxy, start_delay_proxy_process
from partner_ingest_tests.harness.files import KiB, MiB


@contextlib.contextmanager
def peer(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection TCP server on 127.0.0.1 running ``handle``; yields its port, joins it on exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return   # the test never connected
        with conn:
            conn.settimeout(5)   # the proxy must pass the end on: a peer left waiting fails the test
            try:
                handle(conn)
            except OSError as exc:
                failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not failures, failures


def echo(conn: socket.socket) -> None:
    while data := conn.recv(256 * KiB):
        conn.sendall(data)


def digest_and_count(conn: socket.socket) -> None:
    """Reads to EOF, then answers with the SHA-256 and length of what it got."""
    digest, count = hashlib.sha256(), 0
    while data := conn.recv(256 * KiB):
        digest.update(data)
        count += len(data)
    conn.sendall(f"{digest.hexdigest()} {count}".encode())


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock: socket.socket) -> float:
    started = time.monotonic()
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    return time.monotonic() - started


def send_through(port: int, size: int) -> tuple[float, str, str]:
    """Sends ``size`` random bytes, half-closes; returns seconds to the peer's answer, its answer, our digest."""
    block = os.urandom(MiB)
    ours = hashlib.sha256()
    with connect(port) as sock:
        started = time.monotonic()
        for _ in range(size // MiB):
            sock.sendall(block)
            ours.update(block)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(1024):
            answer += data
        seconds = time.monotonic() - started
    return seconds, answer.decode(), f"{ours.hexdigest()} {size}"


def delay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("delay-")]


def test_each_round_trip_takes_the_rtt():
    with peer(echo) as port, DelayProxy(port, rtt=0.1) as proxy, connect(proxy.port) as sock:
        trips = [round_trip(sock) for _ in range(3)]
    assert all(0.1 <= t < 0.1 + 0.4 for t in trips), trips
    assert proxy.bytes_up == proxy.bytes_down == 3


def test_many_bytes_are_on_the_wire_at_once():
    """64 MiB through 100 ms: stop-and-wait at 256 KiB would need 256 round trips (25.6 s); a delay line
    needs the transfer time plus one RTT. The proxy must also have held far more than one read in flight."""
    size = 64 * MiB
    with peer(digest_and_count) as port, DelayProxy(port, rtt=0.1) as proxy:
        seconds, answer, expected = send_through(proxy.port, size)
    assert answer == expected
    assert 0.1 <= seconds < 5.0, seconds   # stop-and-wait: (64 MiB / 256 KiB) x 100 ms = 25.6 s
    assert proxy.peak_buffered > 4 * MiB, proxy.peak_buffered
    assert proxy.bytes_up == size


def test_memory_is_bounded_by_backpressure():
    limit = 1 * MiB
    with peer(digest_and_count) as port, DelayProxy(port, rtt=0.02, max_buffered=limit) as proxy:
        _, answer, expected = send_through(proxy.port, 16 * MiB)
    assert answer == expected
    assert limit <= proxy.peak_buffered <= limit + proxy.recv_size


def test_close_ends_open_connections_and_joins_every_thread():
    with peer(echo) as port:
        proxy = DelayProxy(port, rtt=0.05).start()
        sock = connect(proxy.port)
        round_trip(sock)
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 2.0
        assert not delay_threads()
        with pytest.raises(OSError):
            proxy_port_connect = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
            proxy_port_connect.close()
        assert sock.recv(1) == b""   # the proxy closed its side
        sock.close()


def test_runs_in_its_own_process_and_stops_by_pid():
    with peer(echo) as port:
        proxy = start_delay_proxy_process(port, rtt=0.06)
        try:
            with connect(proxy.port) as sock:
                assert 0.06 <= round_trip(sock) < 0.06 + 0.4
        finally:
            proxy.stop()
        assert proxy.proc.returncode is not None
