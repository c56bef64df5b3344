"""A real TCP proxy on 127.0.0.1 that injects network faults between a client and a server.

Faults apply per connection, in the order connections arrive, so a test can say "cut the first
connection after 5 MiB from the server, let the reconnect through". Modes: ``cut_after`` (close both
sides once N bytes went server→client), ``reset_after`` (RST instead of FIN), ``stall_after``
(stop forwarding, keep the socket open). Independently of connection order, ``refuse(pattern, times)``
resets any connection whose client sends a chunk containing ``pattern`` (e.g. ``b"partNumber="`` for
S3 part uploads), the first ``times`` times or always. With ``hold=True`` every connection waits at the
proxy, without reaching the server, until ``release()`` (``held`` counts them), e.g. to keep a run inside
its step for as long as a test needs.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Fault:
    cut_after: int | None = None
    reset_after: int | None = None
    stall_after: int | None = None


@dataclass
class FaultProxy:
    target_port: int
    faults: deque[Fault] = field(default_factory=deque)
    default_fault: Fault | None = None
    connections: int = 0
    bytes_to_client: int = 0
    faults_fired: int = 0
    on_fault: Callable[[], None] | None = None   # runs when a fault fires, e.g. to change the file meanwhile
    hold: bool = False
    hold_timeout: float = 120.0                  # a held connection is closed after this long
    held: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def release(self) -> None:
        """Let held connections (and every later one) through to the server."""
        self._released.set()

    def add(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def refuse(self, pattern: bytes, times: int | None = None, *, answer: bytes | None = None) -> None:
        """Reset (or, with ``answer``, reply with those bytes and close) connections sending ``pattern``."""
        with self._lock:
            self._refuse_pattern, self._refuse_left, self._answer = pattern, times, answer

    def _should_refuse(self, data: bytes) -> bool:
        with self._lock:
            pattern = getattr(self, "_refuse_pattern", None)
            if pattern is None or pattern not in data:
                return False
            if self._refuse_left is not None:
                if self._refuse_left <= 0:
                    return False
                self._refuse_left -= 1
            self.faults_fired += 1
            return True

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                fault = self.faults.popleft() if self.faults else self.default_fault
            self._sockets.append(client)
            thread = threading.Thread(target=self._connect, args=(client, fault), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _connect(self, client: socket.socket, fault: Fault | None) -> None:
        if self.hold and not self._released.is_set():
            with self._lock:
                self.held += 1
            if not self._released.wait(timeout=self.hold_timeout) or self._stop.is_set():
                client.close()
                return
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        self._sockets.append(server)
        self._pump(client, server, fault)

    def _pump(self, client: socket.socket, server: socket.socket, fault: Fault | None) -> None:
        sent_to_client = 0
        stalled = False
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if stalled:
                        continue
                    if sock is client:
                        if self._should_refuse(data):
                            answer = getattr(self, "_answer", None)
                            if answer:
                                with contextlib.suppress(OSError):
                                    client.sendall(answer)
                                    client.close()
                            else:
                                _reset(client)
                            return
                        server.sendall(data)
                        continue
                    limit = _limit(fault)
                    if limit is not None and sent_to_client + len(data) >= limit:
                        data = data[: max(limit - sent_to_client, 0)]
                        client.sendall(data)
                        sent_to_client += len(data)
                        self._count(len(data))
                        self._fired()
                        if fault.stall_after is not None:
                            stalled = True
                            continue
                        if fault.reset_after is not None:
                            _reset(client)
                        return
                    client.sendall(data)
                    sent_to_client += len(data)
                    self._count(len(data))
        except OSError:
            return
        finally:
            if not stalled:
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.close()

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_to_client += n

    def _fired(self) -> None:
        with self._lock:
            self.faults_fired += 1
        if self.on_fault is not None:
            self.on_fault()

    def close(self) -> None:
        self._stop.set()
        self._released.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


def _limit(fault: Fault | None) -> int | None:
    if fault is None:
        return None
    for value in (fault.cut_after, fault.reset_after, fault.stall_after):
        if value is not None:
            return value
    return None


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
