"""An SFTP client that several threads can use at once, so one session carries many files in flight.

Small files are bound by round trips, not bytes: each costs ``LSTAT``, ``OPEN``, ``READ``, ``LSTAT`` and
``CLOSE`` (five round trips, 100 ms at 20 ms RTT) however small it is. SFTP numbers its requests so that
replies can come back interleaved, which lets one session carry many files' requests at once; paramiko's
``SFTPClient`` cannot be shared that way:

* its synchronous calls (``open``, ``stat``, ``close``) wait in ``_read_response(num)``, which reads
  packets itself and *drops* a synchronous reply meant for another thread (it only knows how to hand
  replies to its own prefetching file objects), so that thread waits until its channel times out;
* two threads reading packets at once split one packet between them;
* ``_async_request`` sends outside its lock, so two large requests can interleave on the channel.

:class:`SharedSFTPClient` keeps paramiko's wire format and request numbering and changes only who
reads: one waiting thread at a time reads the next packet (leader/followers) and files it under its
request number, where the thread waiting for that number collects it; sends are serialised. Every
reply that a caller will ask for by number is kept until it is asked for (``forget`` drops those
nobody will ask for); replies for paramiko's own file objects go to them, as before.

Written by hand because no kept library offers it: paramiko has no thread-safe client (its prefetch
thread works only because it never waits for a synchronous reply), and asyncssh would replace the
whole SSH stack the project is built and measured on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_STATUS
from paramiko.ssh_exception import SSHException

_WAIT_SLICE_SECONDS = 1.0  # a follower looks again at least this often (the leader's read has its own timeout)


class SharedSFTPClient(paramiko.SFTPClient):
    """``paramiko.SFTPClient`` whose requests and replies may be used from many threads at once.

    Everything the project sends (``_async_request`` with its own ``Responses`` holder, or the
    synchronous calls paramiko builds on ``_request``) is collected by number through
    :meth:`_read_response`. A link error met by the reading thread is raised in every thread waiting
    on this session, so all of them reconnect instead of each waiting out its own timeout.
    """

    def __init__(self, sock: Any) -> None:
        self._send_lock = threading.Lock()
        self._replies = threading.Condition()
        self._arrived: dict[int, tuple[int, paramiko.Message]] = {}
        self._reading = False
        self._broken: BaseException | None = None
        super().__init__(sock)  # sends INIT and reads VERSION itself, before any other thread can

    def _async_request(self, fileobj: Any, t: int, *args: Any) -> int:
        with self._send_lock:  # numbered and sent as one: two threads' packets never interleave
            if self._broken is not None:
                raise _broken_session(self._broken)
            try:
                return super()._async_request(fileobj, t, *args)
            except Exception as exc:
                # A packet may be half sent: nothing more can go on this channel, for any thread.
                self._fail(exc)
                raise _broken_session(exc) from exc

    def _convert_status(self, msg: paramiko.Message) -> None:
        """paramiko's conversion, but a status that is neither "no such file" nor "permission denied" (e.g.
        ``SSH_FX_FAILURE``) is an :class:`SftpStatusError`: the server's answer about one request, not a
        broken link, so it fails that request's file and leaves the session to the others."""
        try:
            super()._convert_status(msg)
        except (EOFError, FileNotFoundError, PermissionError):
            raise
        except OSError as exc:
            raise SftpStatusError(*exc.args) from None

    def forget(self, numbers: Iterable[int]) -> None:
        """Requests whose replies nobody will collect: dropped now or on arrival."""
        with self._replies:
            for num in numbers:
                self._arrived.pop(num, None)
                with self._lock:
                    self._expecting.pop(num, None)

    def _read_response(self, waitfor: int | None = None) -> tuple[int | None, paramiko.Message | None]:
        if waitfor is None:  # paramiko's own "handle one reply, whoever it is for" (file prefetch)
            self._read_one(lead=False)
            return None, None
        while True:
            with self._replies:
                if waitfor in self._arrived:
                    t, msg = self._arrived.pop(waitfor)
                    break
                if self._broken is not None:
                    raise _broken_session(self._broken)
                if self._reading:
                    self._replies.wait(_WAIT_SLICE_SECONDS)
                    continue
                self._reading = True
            self._read_one(lead=True)
        if t == CMD_STATUS:
            self._convert_status(msg)
        return t, msg

    def _read_one(self, *, lead: bool) -> None:
        """Read one packet and file it under its number; with ``lead`` the caller already holds the reader's turn."""
        if not lead:
            with self._replies:
                while self._reading and self._broken is None:
                    self._replies.wait(_WAIT_SLICE_SECONDS)
                if self._broken is not None:
                    raise _broken_session(self._broken)
                self._reading = True
        try:
            t, data = self._read_packet()
            msg = paramiko.Message(data)
            num = msg.get_int()
        except Exception as exc:
            # Timeout, drop, garbage: the stream is lost for every thread. The reading thread raises what the
            # waiting ones raise, so an OSError out of this client always means a server's status, never the link.
            self._fail(exc)
            raise _broken_session(exc) from exc
        except BaseException as exc:
            self._fail(exc)
            raise
        with self._replies, self._lock:  # the same order as forget(): a reply is filed or dropped, never both
            fileobj = self._expecting.pop(num, None)
            # Kept for whoever asks by number: our holders, and paramiko's synchronous calls and pipelined writes
            # (``type(None)``; a close sent by a garbage-collected file leaves its small status here). A number
            # nobody expects (forgotten, or its holder gone) is dropped; paramiko's prefetching files get theirs
            # directly.
            if fileobj is not None and not isinstance(fileobj, paramiko.SFTPFile):
                self._arrived[num] = (t, msg)
            self._reading = False
            self._replies.notify_all()
        if isinstance(fileobj, paramiko.SFTPFile):
            fileobj._async_response(t, msg, num)

    @property
    def broken(self) -> bool:
        """True once the link failed under a request: the session must be replaced."""
        return self._broken is not None

    def _fail(self, exc: BaseException) -> None:
        with self._replies:
            if self._broken is None:
                self._broken = exc
            self._reading = False
            self._replies.notify_all()


class SftpStatusError(OSError):
    """The server answered one request with a failure status (``SSH_FX_FAILURE``, ``SSH_FX_BAD_MESSAGE``,
    ``SSH_FX_OP_UNSUPPORTED``...): that request failed, the session is fine."""


def _broken_session(cause: BaseException) -> SSHException:
    """What a waiting thread raises once the reading thread met a link error (a link error itself)."""
    return SSHException(f"the SFTP session broke while this request waited: {type(cause).__name__}: {cause}")


class _Unread:
    """Holder of a request whose reply is not waited for."""

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        pass


def close_without_waiting(remote: paramiko.SFTPFile) -> None:
    """Send ``CLOSE`` for a file that was read to its end, and do not wait for the answer (dropped on arrival).

    Its answer cannot change what was read, and waiting costs each file one more round trip (a fifth of a
    small file's time). The server handles requests in order, so a later ``REMOVE`` or ``RENAME`` of the
    file comes after the close. The file is marked closed first, so paramiko never sends a second one.
    """
    if remote._closed:
        return
    paramiko.file.BufferedFile.close(remote)  # marks it closed; a read-only file has nothing to flush
    sftp = remote.sftp
    with contextlib.suppress(OSError, EOFError, SSHException):  # the session is gone, and the handle with it
        forget_requests(sftp, [sftp._async_request(_Unread(), CMD_CLOSE, remote.handle)])


def forget_requests(sftp: paramiko.SFTPClient, numbers: Iterable[int]) -> None:
    """Drop replies nobody will collect, on a shared client or on paramiko's own (which then skips them)."""
    if isinstance(sftp, SharedSFTPClient):
        sftp.forget(numbers)
        return
    with sftp._lock:
        for num in numbers:
            sftp._expecting.pop(num, None)
