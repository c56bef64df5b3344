"""An in-memory SFTP server behind paramiko's own client plumbing, for unit tests of the reader.

``PipelinedReader`` talks to paramiko through ``_async_request``/``_read_response`` (and
``server_read_limit`` through ``_request``). Re-implementing those here would test the reader against
our idea of paramiko; instead ``FakeSftp`` *is* a ``paramiko.SFTPClient`` whose two wire calls,
``_send_packet`` and ``_read_packet``, are replaced: every request is decoded as a real server would
decode it and answered from ``data``, and paramiko's real code matches replies to requests, hands
early ones to the reader's ``_async_response`` hook and turns status replies into ``EOFError``/
``IOError``. How the server misbehaves (short or long replies, answers out of order, a dropped link)
is chosen per test.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_READ,
    CMD_STATUS,
    SFTP_EOF,
    SFTP_OP_UNSUPPORTED,
)

# (offset, length asked, index of this read among all reads, from 0) -> bytes to answer, before the
# slice at the end of ``data``; more than asked makes a long (protocol-breaking) reply.
Answer = Callable[[int, int, int], int]


def full(offset: int, length: int, index: int) -> int:
    """An honest server that answers every read in full."""
    return length


class FakeSftp(paramiko.SFTPClient):
    """``data`` served over a fake wire; ``reads`` records every READ as ``(offset, length)``.

    ``read_limit``: what ``limits@openssh.com`` reports as max-read-length (None: the extension is
    not supported). ``reorder``: a seeded RNG that delivers any of the first few queued replies next,
    as servers that answer out of order do. ``drop_after``: the link dies when the reader sends its
    read number ``drop_after + 1`` (the send fails, replies not yet delivered are lost). ``max_reads``
    turns a reader that would loop forever (or crawl a byte at a time) into a failing test; ``handle``,
    when given, is the only one the server knows (a resumed reader must use its new one).
    """

    def __init__(self, data: bytes, *, answer: Answer = full, read_limit: int | None = None,
                 reorder: random.Random | None = None, drop_after: int | None = None,
                 max_reads: int = 20_000, handle: bytes | None = None) -> None:
        # SFTPClient.__init__ is skipped on purpose: it needs a channel and runs the version handshake.
        # These are the attributes its request plumbing uses.
        self._lock = threading.Lock()
        self._expecting: dict[int, object] = {}
        self.request_number = 1
        self.ultra_debug = False
        self.data = data
        self.answer = answer
        self.read_limit = read_limit
        self.reorder = reorder
        self.drop_after = drop_after
        self.max_reads = max_reads
        self.handle = handle
        self.reads: list[tuple[int, int]] = []
        self.delivered: list[tuple[int, int]] = []  # DATA replies the client received: (offset, length)
        self.peak_in_flight = 0  # most requests sent and not yet answered at once (paramiko's _expecting)
        self.dropped = False
        self._replies: deque[tuple[int, bytes, int | None, int]] = deque()  # (type, body, offset, length)

    @property
    def outstanding(self) -> int:
        """Requests paramiko still expects an answer to (0 once the reader drained)."""
        return len(self._expecting)

    @property
    def queued(self) -> int:
        """Replies the server sent that the client has not read yet."""
        return len(self._replies)

    def drop(self) -> None:
        self.dropped = True
        self._replies.clear()

    def _log(self, level: int, msg: object, *args: object) -> None:
        """No channel to name in the log line (paramiko logs replies to forgotten requests here)."""

    def _send_packet(self, t: int, packet: Message) -> None:
        if self.dropped:
            raise OSError("Socket is closed")
        request = Message(packet.asbytes())
        num = request.get_int()
        if t == CMD_READ:
            handle = request.get_binary()
            offset, length = request.get_int64(), request.get_int()
            if self.handle is not None and handle != self.handle:
                raise AssertionError(f"READ on handle {handle!r}, this server opened {self.handle!r}")
            if self.drop_after is not None and len(self.reads) >= self.drop_after:
                self.drop()
                raise OSError("Socket is closed")
            if len(self.reads) >= self.max_reads:
                raise AssertionError(f"the client sent more than {self.max_reads} reads")
            index = len(self.reads)
            self.reads.append((offset, length))
            self.peak_in_flight = max(self.peak_in_flight, len(self._expecting))  # this one included
            if offset >= len(self.data):
                self._status(num, SFTP_EOF, "End of file")
            else:
                chunk = self.data[offset:offset + self.answer(offset, length, index)]
                reply = Message()
                reply.add_int(num)
                reply.add_string(chunk)
                self._replies.append((CMD_DATA, reply.asbytes(), offset, len(chunk)))
        elif t == CMD_EXTENDED and request.get_text() == "limits@openssh.com" and self.read_limit is not None:
            reply = Message()
            reply.add_int(num)
            for value in (256 * 1024, self.read_limit, 256 * 1024 - 1024, 0):  # packet, read, write, handles
                reply.add_int64(value)
            self._replies.append((CMD_EXTENDED_REPLY, reply.asbytes(), None, 0))
        else:
            self._status(num, SFTP_OP_UNSUPPORTED, "Operation unsupported")

    def _status(self, num: int, code: int, text: str) -> None:
        reply = Message()
        reply.add_int(num)
        reply.add_int(code)
        reply.add_string(text)
        reply.add_string("")
        self._replies.append((CMD_STATUS, reply.asbytes(), None, 0))

    def _read_packet(self) -> tuple[int, bytes]:
        if self.dropped:
            raise EOFError("connection closed")  # paramiko's _read_response makes it SSHException
        if not self._replies:
            raise AssertionError("the client waits for a reply to a request it never sent")
        pick = self.reorder.randrange(min(4, len(self._replies))) if self.reorder else 0
        self._replies.rotate(-pick)
        t, body, offset, length = self._replies.popleft()
        self._replies.rotate(pick)
        if t == CMD_DATA:
            self.delivered.append((offset, length))
        return t, body
