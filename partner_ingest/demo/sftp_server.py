"""An embedded SFTP server for the demo, built on asyncssh, so no sshd, root or system package is needed.

asyncssh is asyncio-only while the demo's main thread supervises ``dagster dev``, so the server runs its
own event loop in a daemon thread; ``start``/``stop`` hand work to that loop and wait a bounded time.
The host key is generated on every start (nothing secret is kept on disk) and the password is checked
in constant time. The SFTP session is chrooted at ``root``: clients see ``root`` as ``/``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncssh

_T = TypeVar("_T")

# asyncssh logs every connection and channel at INFO; the demo's terminal belongs to Dagster's logs.
logging.getLogger("asyncssh").setLevel(logging.WARNING)


@dataclass(frozen=True)
class SftpEndpoint:
    """Where the server listens and the host key line to pin (OpenSSH ``<type> <base64>``, no comment)."""

    host: str
    port: int
    username: str
    host_key_line: str
    fingerprint: str


class _ChrootedSftp(asyncssh.SFTPServer):
    """asyncssh's file-system SFTP server with every path mapped under ``root``."""

    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path) -> None:
        super().__init__(chan, chroot=os.fsencode(root))


class _PasswordServer(asyncssh.SSHServer):
    """One instance per connection: password auth for a single user, no forwarding, no shell."""

    def __init__(self, owner: DemoSftpServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return self._owner._check_password(username, password)


class DemoSftpServer:
    """SFTP on ``host`` (a free port unless ``port`` is given), serving ``root`` to ``username``.

    Use as a context manager or call :meth:`start` and :meth:`stop`. ``repr`` never shows the password.
    """

    def __init__(self, root: Path, *, username: str, password: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._root = Path(root).resolve()
        self._username = username
        self._password = password.encode("utf-8")
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._endpoint: SftpEndpoint | None = None

    def __repr__(self) -> str:
        return f"DemoSftpServer(root={str(self._root)!r}, username={self._username!r}, endpoint={self._endpoint!r})"

    def __enter__(self) -> SftpEndpoint:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint(self) -> SftpEndpoint:
        if self._endpoint is None:
            raise RuntimeError("the demo SFTP server is not running; call start() first")
        return self._endpoint

    def start(self, timeout: float = 15.0) -> SftpEndpoint:
        """Generate a host key, listen, and return the endpoint once connections are accepted."""
        if self._endpoint is not None:
            return self._endpoint
        if not self._root.is_dir():
            raise FileNotFoundError(f"SFTP root '{self._root}' is not a directory")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name="demo-sftp", daemon=True)
        self._thread.start()
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        try:
            self._acceptor = self._call(self._listen(host_key), timeout)
        except BaseException:
            self._shutdown_loop(timeout)
            raise
        key_type, key_data = host_key.export_public_key("openssh").decode("ascii").split()[:2]
        self._endpoint = SftpEndpoint(host=self._host, port=self._acceptor.get_port(), username=self._username,
                                      host_key_line=f"{key_type} {key_data}",
                                      fingerprint=host_key.get_fingerprint("sha256"))
        return self._endpoint

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, drop open connections and end the loop thread; safe to call twice."""
        if self._loop is None:
            return
        try:
            if self._acceptor is not None and not self._loop.is_closed():
                self._call(self._close(), timeout)
        except (TimeoutError, RuntimeError):
            pass
        finally:
            self._acceptor = None
            self._endpoint = None
            self._shutdown_loop(timeout)

    def _check_password(self, username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode("utf-8"), self._username.encode("utf-8"))
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password)
        return user_ok and password_ok

    async def _listen(self, host_key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
        root = self._root
        return await asyncssh.create_server(
            lambda: _PasswordServer(self),
            self._host,
            self._port,
            server_host_keys=[host_key],
            sftp_factory=lambda chan: _ChrootedSftp(chan, root),
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
        )

    async def _close(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        for conn in list(self._connections):
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in list(self._connections)), return_exceptions=True)
        await self._acceptor.wait_closed()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown_loop(self, timeout: float) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
