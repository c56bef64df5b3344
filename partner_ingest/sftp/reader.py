"""Read one remote file front to back with a bounded number of SFTP read requests in flight, and
prove that what was read is the whole file.

Why not paramiko's ``prefetch()``: it keeps requesting until the whole file is buffered when the
consumer (here an S3 upload) is slower than the link, and it can be marked done while its thread
still buffers (paramiko PR #2519); both were seen here as >1 GiB RSS. Plain ``read()`` without it
waits a round trip per 32 KiB. This reader keeps at most ``chunk_size * max_in_flight`` bytes of
requests outstanding and issues the next one only when a chunk is consumed, so memory is bounded
whatever the file size. It uses paramiko's request/response plumbing (``_async_request``/
``_read_response``), the same calls its own prefetch uses, because paramiko has no public API for a
bounded pipeline, for the ``limits@openssh.com`` extension, or for checking reply lengths.

The server is not trusted (SFTP v3 lets it answer short, and a broken or hostile one may answer
long or lie about the size):

* a reply longer than its request is a protocol error (:class:`ServerProtocolError`);
* a short reply is completed by re-requesting the rest; the first short reply short of the end of
  the file teaches the reader the server's largest answer (servers that cap reads at 32-64 KiB, e.g.
  Windows-based ones; ProFTPD 1.3.8 answers in full up to 16 MiB), and from then on requests are that
  size, more of them, the same bytes in flight;
* after the last expected byte one read at ``offset = size`` must answer EOF
  (:meth:`PipelinedReader.confirm_eof`): a server that under-reports a size, or a file that grew, is
  caught instead of landing truncated. That probe is sent with the last data requests, so it costs
  no extra round trip.
"""

from __future__ import annotations

import contextlib
from collections import deque

import paramiko
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, int64

from partner_ingest.sftp.shared_client import forget_requests

# OpenSSH's sftp-server answers at most 256 KiB - 1 KiB per read request.
DEFAULT_CHUNK_SIZE = 255 * 1024
DEFAULT_MAX_IN_FLIGHT = 32
# Requests in flight, at most: 32 MiB at 32 KiB once a server's cap is learned, bounded for servers that cap
# lower (each request is a few Python objects and a packet).
MAX_REQUESTS_IN_FLIGHT = 1024
# A cap below this is not learned (one odd short answer must not turn every later request into a few bytes).
MIN_LEARNED_CHUNK = 4 * 1024
# A reply that brings no new byte, this many times in a row for one range, means the server is stuck.
_MAX_EMPTY_ROUNDS = 8


class RemoteFileMismatch(Exception):
    """What was read is not the file the server described; nothing read may land."""


class RemoteFileShrunk(RemoteFileMismatch):
    """The server reported end of file before the size we stat'ed."""


class RemoteFileGrew(RemoteFileMismatch):
    """The file holds more bytes than its stat'ed size (under-reported size, or still being written)."""


class ServerProtocolError(RemoteFileMismatch):
    """The server answered outside the SFTP protocol (e.g. more bytes than a read asked for)."""


def server_read_limit(sftp: paramiko.SFTPClient) -> int | None:
    """The server's ``max-read-length`` from ``limits@openssh.com``, or None where it is not offered.

    OpenSSH (8.6+) and asyncssh answer it; servers that do not know the extension answer
    ``SSH_FX_OP_UNSUPPORTED`` (or some other status), which is simply "unknown".
    """
    try:
        t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
    except (OSError, EOFError, paramiko.SFTPError):
        return None
    if t != CMD_EXTENDED_REPLY or msg is None:
        return None
    try:
        msg.get_int64()              # max-packet-length
        max_read = msg.get_int64()   # max-read-length
    except Exception:  # a reply too short to parse: treat as not offered  # noqa: BLE001
        return None
    return max_read if max_read > 0 else None


class Responses:
    """Receives responses that arrive while another request is awaited (paramiko calls this hook)."""

    def __init__(self) -> None:
        self.arrived: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.arrived[num] = (t, msg)


class PipelinedReader:
    """A read-only, forward-only file object over ``[offset, size)`` of an open remote file.

    ``read(n)`` returns exactly ``n`` bytes unless the end is reached, which is what boto3's
    transfer manager needs to form equal multipart parts. ``chunk_size`` may be lowered up front by
    the server's ``limits@openssh.com`` answer (``server_limit``) or later by its first short reply.
    """

    def __init__(self, sftp: paramiko.SFTPClient, handle: bytes, *, size: int, offset: int = 0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 server_limit: int | None = None, bytes_in_flight: int | None = None) -> None:
        self._sftp = sftp
        self._handle = handle
        self._size = size
        self._offset = offset          # next byte the caller will get
        self._next_request = offset    # next byte to request
        self._bytes_in_flight = bytes_in_flight or chunk_size * max_in_flight
        self._chunk_size = chunk_size
        self._max_in_flight = max(1, min(MAX_REQUESTS_IN_FLIGHT, self._bytes_in_flight // chunk_size))
        self.learned_chunk_size: int | None = None
        self._learned_from_reply = False
        if server_limit and server_limit < chunk_size:
            self._learn(server_limit)
        self._pending: deque[tuple[int, int, int]] = deque()  # (request number, offset, length)
        self._orphans: list[int] = []  # requests whose answers no longer matter, collected by drain()
        self._eof_probe: int | None = None
        self.eof_confirmed = False
        self._responses = Responses()
        self._ready: deque[bytes] = deque()
        self._ready_bytes = 0
        self.bytes_received = 0        # every byte the server sent us, re-reads included
        self.requests = 0

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def in_flight(self) -> int:
        return len(self._pending) + (self._eof_probe is not None)

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

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

    def confirm_eof(self) -> None:
        """After the last expected byte: the server must answer EOF at ``offset = size``.

        Raises :class:`RemoteFileGrew` when it answers data instead.
        """
        if self.eof_confirmed:
            return
        if self._offset < self._size:
            raise RuntimeError("confirm_eof before the last byte was read")
        if self._eof_probe is None:
            self._eof_probe = self._request(self._size, 1)
        num, self._eof_probe = self._eof_probe, None
        try:
            data = self._await(num)
        except EOFError:
            self.eof_confirmed = True
            return
        if data:
            raise RemoteFileGrew(f"the server answered {len(data)} byte(s) at offset {self._size}, where its "
                                 f"reported size says the file ends")
        self.eof_confirmed = True  # an empty data reply also says "nothing more"

    def resume(self, sftp: paramiko.SFTPClient, handle: bytes) -> None:
        """Continue on a new connection after the old one dropped.

        Chunks already received are kept; requests that were in flight on the dead connection are
        issued again, starting at the first byte not yet received, so nothing is read twice beyond
        the requests the drop interrupted.
        """
        self._sftp = sftp
        self._handle = handle
        self._pending.clear()
        self._orphans.clear()
        self._eof_probe = None
        self._responses = Responses()
        self._next_request = self._offset + self._ready_bytes

    def drain(self) -> None:
        """Collect answers to requests still outstanding so the channel is clean for reuse.

        Stops at the first error: on a dead or stalled link every further wait would only time out.
        """
        numbers = [num for num, _, _ in self._pending] + self._orphans
        if self._eof_probe is not None:
            numbers.append(self._eof_probe)
        self._pending.clear()
        self._orphans = []
        self._eof_probe = None
        for i, num in enumerate(numbers):
            if num in self._responses.arrived:
                self._responses.arrived.pop(num)
                continue
            try:
                self._sftp._read_response(num)
            except EOFError:
                continue
            except (OSError, paramiko.SSHException, paramiko.SFTPError):
                # Answers still to come are dropped on arrival, not kept for a caller that never asks.
                forget_requests(self._sftp, numbers[i + 1:])
                return

    def _learn(self, largest_answer: int) -> None:
        """Request ``largest_answer`` bytes at a time from now on, keeping the same bytes in flight."""
        chunk = largest_answer
        if chunk < MIN_LEARNED_CHUNK or chunk >= self._chunk_size:
            return
        self._chunk_size = chunk
        self._max_in_flight = max(1, min(MAX_REQUESTS_IN_FLIGHT, self._bytes_in_flight // chunk))
        self.learned_chunk_size = chunk

    def _fill_pipeline(self) -> None:
        while len(self._pending) < self._max_in_flight and self._next_request < self._size:
            length = min(self._chunk_size, self._size - self._next_request)
            self._pending.append((self._request(self._next_request, length), self._next_request, length))
            self._next_request += length
        if (self._next_request >= self._size and self._eof_probe is None and not self.eof_confirmed
                and len(self._pending) < self._max_in_flight):
            # Sent with the last data requests: its answer arrives with theirs, no extra round trip.
            self._eof_probe = self._request(self._size, 1)

    def _request(self, offset: int, length: int) -> int:
        self.requests += 1
        return self._sftp._async_request(self._responses, CMD_READ, self._handle, int64(offset), int(length))

    def _await(self, num: int) -> bytes:
        if num in self._responses.arrived:
            t, msg = self._responses.arrived.pop(num)
            if t == CMD_STATUS:
                self._sftp._convert_status(msg)
        else:
            t, msg = self._sftp._read_response(num)
        if t != CMD_DATA:
            raise ServerProtocolError(f"expected data from the server, got SFTP packet type {t}")
        return msg.get_string()

    def _await_piece(self, num: int, offset: int, length: int) -> bytes:
        try:
            data = self._await(num)
        except EOFError:
            raise RemoteFileShrunk(f"end of file at byte {offset}, expected {self._size}") from None
        if len(data) > length:
            raise ServerProtocolError(f"the server answered a read of {length} bytes at offset {offset} with "
                                      f"{len(data)} bytes")
        self.bytes_received += len(data)
        return data

    def _next_chunk(self) -> bytes:
        num, offset, length = self._pending.popleft()
        data = self._await_piece(num, offset, length)
        if len(data) == length:
            return data
        if data and offset + len(data) < self._size and not self._learned_from_reply:
            self._learned_from_reply = True  # only the first: later short answers may be arbitrary
            self._learn(len(data))
        return self._complete(offset, length, data)

    def _complete(self, offset: int, length: int, first: bytes) -> bytes:
        """Fetch the rest of a short answer: missing pieces requested together (at most a pipeline's worth per
        round), holes filled again."""
        segments = {offset: first}
        missing = [(offset + len(first), length - len(first))]
        empty_rounds = 0
        while missing:
            pieces = [(piece_offset, min(self._chunk_size, start + count - piece_offset))
                      for start, count in missing for piece_offset in range(start, start + count, self._chunk_size)]
            # No more requests at once than the pipeline allows; the rest go in the next round.
            batch, missing = pieces[: self._max_in_flight], pieces[self._max_in_flight:]
            requests = [(self._request(piece_offset, piece), piece_offset, piece) for piece_offset, piece in batch]
            progressed = False
            for i, (num, piece_offset, piece) in enumerate(requests):
                try:
                    data = self._await_piece(num, piece_offset, piece)
                except BaseException:
                    self._orphans.extend(n for n, _, _ in requests[i + 1:])
                    raise
                if data:
                    segments[piece_offset] = data
                    progressed = True
                if len(data) < piece:
                    missing.append((piece_offset + len(data), piece - len(data)))
            empty_rounds = 0 if progressed else empty_rounds + 1
            if empty_rounds >= _MAX_EMPTY_ROUNDS:
                raise RemoteFileShrunk(f"the server keeps answering no data at byte {missing[0][0]}, "
                                       f"expected {self._size}")
        return b"".join(segments[k] for k in sorted(segments))
