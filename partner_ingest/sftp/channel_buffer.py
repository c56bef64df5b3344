"""A receive buffer for paramiko channels whose reads do not move the rest of the buffer.

paramiko's ``BufferedPipe`` keeps received bytes in one ``array`` and deletes the front on every
read, so each read costs a copy of everything still buffered — up to the channel window we allow
(at least a partner's reads in flight), at least twice per SFTP response (length, then body).
Profiling the transfer put ~40% of the SFTP client's time there. This drop-in keeps the received
chunks in a queue with an offset into the first one. Measured on the 1 GiB benchmark: read +
SHA-256 of 512 MiB went from 183–194 to 265–297 MiB/s. It keeps ``BufferedPipe``'s contract
(``feed``, ``read`` with timeout, ``read_ready``, ``empty``, ``close``, ``set_event``, ``len``),
which is all ``paramiko.Channel`` uses.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout


class ChunkPipe(BufferedPipe):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event: threading.Event | None = None
        self._chunks: deque[bytes] = deque()
        self._head = 0      # bytes of _chunks[0] already consumed
        self._size = 0
        self._closed = False

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size > 0:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def _take(self, nbytes: int) -> bytes:
        pieces = []
        while nbytes > 0 and self._chunks:
            chunk = self._chunks[0]
            available = len(chunk) - self._head
            if available <= nbytes:
                pieces.append(chunk if self._head == 0 else chunk[self._head:])
                self._chunks.popleft()
                self._head = 0
                nbytes -= available
                self._size -= available
            else:
                pieces.append(chunk[self._head:self._head + nbytes])
                self._head += nbytes
                self._size -= nbytes
                nbytes = 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if self._size == 0:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while self._size == 0 and not self._closed:
                    then = time.monotonic()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.monotonic() - then
                        if timeout <= 0.0 and self._size == 0:
                            raise PipeTimeout()
            out = self._take(min(nbytes, self._size))
            if self._size == 0 and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def empty(self) -> bytes:
        with self._lock:
            out = self._take(self._size)
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()

    def __len__(self) -> int:
        with self._lock:
            return self._size


def install(channel: paramiko.Channel) -> ChunkPipe:
    """Swap the channel's receive buffer; call it while the channel is idle (right after SFTP init)."""
    pipe = ChunkPipe()
    pending = channel.in_buffer.empty()
    if pending:
        pipe.feed(pending)
    channel.in_buffer = pipe
    return pipe
