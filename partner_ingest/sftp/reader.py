"""Read one remote file front to back with a bounded number of SFTP read requests in flight.

Why not paramiko's ``prefetch()``: it keeps requesting until the whole file is buffered when the
consumer (here an S3 upload) is slower than the link, and it can be marked done while its thread
still buffers (paramiko PR #2519); both were seen here as >1 GiB RSS. Plain ``read()`` without it
waits a round trip per 32 KiB. This reader keeps at most ``max_in_flight`` requests of
``chunk_size`` outstanding and issues the next one only when a chunk is consumed, so memory is
``max_in_flight * chunk_size`` plus the caller's read size, whatever the file size. It uses
paramiko's request/response plumbing (``_async_request``/``_read_response``), the same calls its
own prefetch uses, because paramiko has no public API for a bounded pipeline.
"""

from __future__ import annotations

import contextlib
from collections import deque

import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, int64

# OpenSSH's sftp-server answers at most 256 KiB - 1 KiB per read request.
DEFAULT_CHUNK_SIZE = 255 * 1024
DEFAULT_MAX_IN_FLIGHT = 32


class RemoteFileShrunk(EOFError):
    """The server reported end of file before the size we stat'ed."""


class _Responses:
    """Receives responses that arrive while another request is awaited (paramiko calls this hook)."""

    def __init__(self) -> None:
        self.arrived: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.arrived[num] = (t, msg)


class PipelinedReader:
    """A read-only, forward-only file object over ``[offset, size)`` of an open remote file.

    ``read(n)`` returns exactly ``n`` bytes unless the end is reached, which is what boto3's
    transfer manager needs to form equal multipart parts.
    """

    def __init__(self, sftp: paramiko.SFTPClient, handle: bytes, *, size: int, offset: int = 0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._sftp = sftp
        self._handle = handle
        self._size = size
        self._offset = offset          # next byte the caller will get
        self._next_request = offset    # next byte to request
        self._chunk_size = chunk_size
        self._max_in_flight = max_in_flight
        self._pending: deque[tuple[int, int, int]] = deque()  # (request number, offset, length)
        self._responses = _Responses()
        self._ready: deque[bytes] = deque()
        self._ready_bytes = 0
        self.bytes_received = 0        # every byte the server sent us, re-reads included

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self._size - self._offset if n is None or n < 0 else min(n, self._size - self._offset)
        if want <= 0:
            return b""
        while self._ready_bytes < want:
            self._fill_pipeline()
            self._ready.append(self._next_chunk())
            self._ready_bytes += len(self._ready[-1])
        pieces, taken = [], 0
        while taken < want:
            piece = self._ready.popleft()
            if taken + len(piece) > want:
                keep = want - taken
                self._ready.appendleft(piece[keep:])
                piece = piece[:keep]
            pieces.append(piece)
            taken += len(piece)
        self._ready_bytes -= taken
        self._offset += taken
        # These bytes are the caller's now: a link error while topping up the pipeline must not lose
        # them. The next read tops up first and raises there, before anything is consumed.
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._fill_pipeline()
        return b"".join(pieces)

    def resume(self, sftp: paramiko.SFTPClient, handle: bytes) -> None:
        """Continue on a new connection after the old one dropped.

        Chunks already received are kept; requests that were in flight on the dead connection are
        issued again, starting at the first byte not yet received, so nothing is read twice beyond
        the requests the drop interrupted.
        """
        self._sftp = sftp
        self._handle = handle
        self._pending.clear()
        self._responses = _Responses()
        self._next_request = self._offset + self._ready_bytes

    def drain(self) -> None:
        """Collect answers to requests still outstanding so the channel is clean for reuse.

        Stops at the first error: on a dead or stalled link every further wait would only time out.
        """
        while self._pending:
            num, _, _ = self._pending.popleft()
            if num in self._responses.arrived:
                self._responses.arrived.pop(num)
                continue
            try:
                self._sftp._read_response(num)
            except EOFError:
                continue
            except (OSError, paramiko.SSHException):
                self._pending.clear()
                return

    def _fill_pipeline(self) -> None:
        while len(self._pending) < self._max_in_flight and self._next_request < self._size:
            length = min(self._chunk_size, self._size - self._next_request)
            self._pending.append((self._request(self._next_request, length), self._next_request, length))
            self._next_request += length

    def _request(self, offset: int, length: int) -> int:
        return self._sftp._async_request(self._responses, CMD_READ, self._handle, int64(offset), int(length))

    def _await(self, num: int) -> bytes:
        if num in self._responses.arrived:
            t, msg = self._responses.arrived.pop(num)
            if t == CMD_STATUS:
                self._sftp._convert_status(msg)
        else:
            t, msg = self._sftp._read_response(num)
        if t != CMD_DATA:
            raise paramiko.SFTPError(f"expected data from the server, got SFTP packet type {t}")
        return msg.get_string()

    def _next_chunk(self) -> bytes:
        num, offset, length = self._pending.popleft()
        try:
            data = self._await(num)
        except EOFError:
            raise RemoteFileShrunk(f"end of file at byte {offset}, expected {self._size}") from None
        # A server may answer with fewer bytes than asked; fetch the rest before later chunks.
        while len(data) < length:
            rest_offset = offset + len(data)
            try:
                more = self._await(self._request(rest_offset, length - len(data)))
            except EOFError:
                raise RemoteFileShrunk(f"end of file at byte {rest_offset}, expected {self._size}") from None
            if not more:
                raise RemoteFileShrunk(f"empty read at byte {rest_offset}, expected {self._size}")
            data += more
        self.bytes_received += len(data)
        return data
