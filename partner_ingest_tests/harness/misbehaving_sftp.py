"""An SFTP server that lies, for tests of what the product does when a partner's server misbehaves.

OpenSSH's sftp-server answers every request honestly, so tests against it cannot show what happens
with servers that omit optional attributes (SFTP v3 makes size and times optional), misreport sizes,
cap or shorten reads, send more bytes than asked, or let a file turn into a link between listing and
fetch. This module reuses the demo's embedded asyncssh server (its own event-loop thread, password
auth, per-start host key, chroot) and swaps in an ``SFTPServer`` subclass that applies a
:class:`Misbehaviour`. The misbehaviour object is read on every request, so a test may change it
between a sensor tick and a run.

Facts about stock asyncssh 2.24 that shape this file (see ``asyncssh/sftp.py``):

- ``SFTPServerHandler._process_read`` passes the client's length straight to ``SFTPServer.read``; the
  default ``read`` answers ``file.read(length)``. The server does not clamp reads itself, but it
  advertises ``MAX_SFTP_READ_LEN`` (4 MiB) in ``limits@openssh.com`` and in v5/v6 ``supported``.
- It advertises ``newline``, ``vendor-id``, ``posix-rename@``, ``hardlink@``, ``fsync@``,
  ``lsetstat@``, ``limits@openssh.com``, ``copy-data``, ``ranges@asyncssh.com``, ``statvfs@`` and
  ``fstatvfs@``. The list is a class attribute of the handler, which asyncssh builds itself, so to
  withhold ``limits@openssh.com`` this module starts the handler from its own session.
- In SFTP v3 (what paramiko speaks) atime and mtime travel together: both are dropped if either is
  ``None``. Listings (readdir) are answered from ``scandir``; ``longname`` is formatted from the same
  attributes afterwards, so it lies consistently.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import secrets
import stat as stat_module
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.sftp import (
    MAX_SFTP_PACKET_LEN,
    MAX_SFTP_READ_LEN,
    MAX_SFTP_WRITE_LEN,
    SFTPAttrs,
    SFTPLimits,
    SFTPName,
    SFTPServerHandler,
)
from asyncssh.stream import SSHServerStreamSession

from partner_ingest.config import IngestConfig, LandingConfig, PartnerConfig
from partner_ingest.demo.sftp_server import DemoSftpServer, SftpEndpoint, _PasswordServer

# The read length stock asyncssh advertises (limits@openssh.com, v5/v6 "supported"); it does not enforce it.
ASYNCSSH_MAX_READ_LEN = MAX_SFTP_READ_LEN
LIMITS_EXTENSION = b"limits@openssh.com"
GARBAGE_BYTE = b"\xa5"   # pads long reads past the end of the file, recognisable in a diff
SHORT_READ_EVERY = 3     # with short_reads, every 3rd read of an open file answers half


@dataclass
class Misbehaviour:
    """What the server gets wrong. All off: an honest asyncssh server, minus ``limits@openssh.com``.

    Read on every request, so a test may flip a field between a sensor tick and the run.
    ``long_reads`` takes precedence over ``read_cap`` and ``short_reads``.
    """

    omit_size: bool = False              # no size in stat/lstat/fstat/readdir attributes
    omit_mtime: bool = False             # no atime/mtime (nor v4+ crtime/ctime) anywhere
    size_delta: int = 0                  # reported size of regular files = real + delta (floor 0)
    read_cap: int | None = None          # answer at most this many bytes per READ
    short_reads: bool = False            # every 3rd READ of a handle answers half (≥ 1 byte, never a false EOF)
    long_reads: int = 0                  # answer this many bytes more than asked (file bytes, then garbage)
    # relative path -> relative target: once the path was listed, its next open/stat/lstat finds it
    # replaced by a symlink to the target (once per path).
    swap_for_symlink: Mapping[str, str] = field(default_factory=dict)
    before_open: Callable[[str], None] | None = None   # called (server thread) with the relative path
    limits: bool = False                 # advertise and answer limits@openssh.com (max read = read_cap or 4 MiB)


@dataclass
class SftpCounters:
    """What clients asked of the server, summed over all its connections; safe to read from tests."""

    opens: int = 0
    reads: int = 0
    max_read_requested: int = 0
    bytes_answered: int = 0
    short_answers: int = 0       # reads answered with fewer bytes than asked, not at end of file
    long_answers: int = 0        # reads answered with more bytes than asked
    stats: int = 0               # stat + lstat + fstat
    listings: int = 0            # opendir
    swaps: int = 0               # files replaced by a symlink
    limits_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def note_read(self, requested: int, answered: int, at_eof: bool) -> None:
        with self._lock:
            self.reads += 1
            self.max_read_requested = max(self.max_read_requested, requested)
            self.bytes_answered += answered
            if answered < requested and not at_eof:
                self.short_answers += 1
            if answered > requested:
                self.long_answers += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def reset(self) -> None:
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, 0)


def replace_with_symlink(root: Path, relative_path: str, target: str) -> None:
    """Atomically replace ``root/relative_path`` by a symlink to ``root/target``.

    The link text is the absolute local path: asyncssh's chrooted ``readlink`` resolves a relative
    link against the server's working directory, not the link's, and answers "File not found"; an
    absolute one inside ``root`` reads back as ``/target``. Atomic (rename over), so no client sees
    the path missing in between.
    """
    root = root.resolve()
    path = root / relative_path
    link_text = str(root / target)
    temporary = path.with_name(f".{path.name}.swap-{secrets.token_hex(4)}")
    os.symlink(link_text, temporary)
    os.replace(temporary, path)


class _LyingSftp(asyncssh.SFTPServer):
    """asyncssh's chrooted file-system server with the owner's misbehaviour applied to every answer."""

    def __init__(self, chan: asyncssh.SSHServerChannel, owner: MisbehavingSftpServer) -> None:
        super().__init__(chan, chroot=os.fsencode(owner.root))
        self._owner = owner
        self._reads_by_handle: dict[int, int] = {}

    @property
    def _m(self) -> Misbehaviour:
        return self._owner.misbehaviour

    @staticmethod
    def _relative(path: bytes) -> str:
        return os.fsdecode(posixpath.normpath(posixpath.join(b"/", path)).lstrip(b"/"))

    def _disguise(self, attrs: SFTPAttrs) -> SFTPAttrs:
        m = self._m
        regular = attrs.permissions is not None and stat_module.S_ISREG(attrs.permissions)
        if m.omit_size:
            attrs.size = attrs.alloc_size = None
        elif m.size_delta and regular and attrs.size is not None:
            attrs.size = max(0, attrs.size + m.size_delta)
        if m.omit_mtime:
            attrs.atime = attrs.atime_ns = attrs.mtime = attrs.mtime_ns = None
            attrs.crtime = attrs.crtime_ns = attrs.ctime = attrs.ctime_ns = None
        return attrs

    def _maybe_swap(self, relative: str) -> None:
        self._owner._swap_if_armed(relative)

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        relative = self._relative(path)
        self._maybe_swap(relative)
        if self._m.before_open is not None:
            self._m.before_open(relative)
        self._owner.counters.add(opens=1)
        return super().open(path, pflags, attrs)

    def close(self, file_obj: object) -> None:
        self._reads_by_handle.pop(id(file_obj), None)
        super().close(file_obj)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        m = self._m
        count = self._reads_by_handle[id(file_obj)] = self._reads_by_handle.get(id(file_obj), 0) + 1
        file_obj.seek(offset)  # type: ignore[attr-defined]
        if m.long_reads:
            data = file_obj.read(size + m.long_reads)  # type: ignore[attr-defined]
            if data:
                data += GARBAGE_BYTE * (size + m.long_reads - len(data))
        else:
            length = size if m.read_cap is None else min(size, m.read_cap)
            if m.short_reads and count % SHORT_READ_EVERY == 0:
                length = max(1, length // 2)
            data = file_obj.read(length)  # type: ignore[attr-defined]
        at_eof = offset + len(data) >= os.fstat(file_obj.fileno()).st_size  # type: ignore[attr-defined]
        self._owner.counters.note_read(size, len(data), at_eof)
        return data

    def stat(self, path: bytes) -> SFTPAttrs:
        self._maybe_swap(self._relative(path))
        self._owner.counters.add(stats=1)
        return self._disguise(SFTPAttrs.from_local(os.stat(self.map_path(path))))

    def lstat(self, path: bytes) -> SFTPAttrs:
        self._maybe_swap(self._relative(path))
        self._owner.counters.add(stats=1)
        return self._disguise(SFTPAttrs.from_local(os.lstat(self.map_path(path))))

    def fstat(self, file_obj: object) -> SFTPAttrs:
        self._owner.counters.add(stats=1)
        return self._disguise(SFTPAttrs.from_local(os.fstat(file_obj.fileno())))  # type: ignore[attr-defined]

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        """Like asyncssh's own (``.``, ``..``, then entries, lstat attributes), but disguised, and
        each entry is marked as listed so a pending symlink swap can fire on its next access."""
        self._owner.counters.add(listings=1)
        local = self.map_path(path)
        parent = self._relative(path)
        for dot in (b".", b".."):
            yield SFTPName(dot, attrs=self._disguise(SFTPAttrs.from_local(os.lstat(posixpath.join(local, dot)))))
        with os.scandir(local) as entries:
            for entry in entries:  # bytes names: the directory was opened by a bytes path
                name = os.fsdecode(entry.name)
                self._owner._note_listed(posixpath.join(parent, name) if parent else name)
                attrs = self._disguise(SFTPAttrs.from_local(entry.stat(follow_symlinks=False)))
                yield SFTPName(entry.name, attrs=attrs)


class _Handler(SFTPServerHandler):
    """asyncssh's server handler with ``limits@openssh.com`` withheld unless the misbehaviour asks."""

    def __init__(self, owner: MisbehavingSftpServer, *args: Any) -> None:
        super().__init__(*args)
        self._owner = owner
        if not owner.misbehaviour.limits:
            self._extensions = [(n, d) for n, d in SFTPServerHandler._extensions if n != LIMITS_EXTENSION]
            self._packet_handlers = {k: v for k, v in SFTPServerHandler._packet_handlers.items()
                                     if k != LIMITS_EXTENSION}

    async def _process_limits(self, packet: Any) -> SFTPLimits:
        """Advertise the read cap the server really applies, as an honest server would."""
        packet.check_end()
        self._owner.counters.add(limits_requests=1)
        max_read = self._owner.misbehaviour.read_cap or MAX_SFTP_READ_LEN
        return SFTPLimits(MAX_SFTP_PACKET_LEN, max_read, MAX_SFTP_WRITE_LEN, 64)

    _packet_handlers = {**SFTPServerHandler._packet_handlers, LIMITS_EXTENSION: _process_limits}


class _Session(SSHServerStreamSession):
    """Starts :class:`_Handler` for the sftp subsystem; asyncssh would otherwise pick its own handler."""

    def __init__(self, owner: MisbehavingSftpServer) -> None:
        super().__init__(None, lambda chan: _LyingSftp(chan, owner), 3, False)
        self._owner = owner

    def session_started(self) -> None:
        assert self._chan is not None and self._conn is not None
        if self._chan.get_subsystem() != "sftp":
            self._chan.close()
            return
        server = self._init_sftp_server()
        reader = asyncssh.SSHReader(self, self._chan)
        writer = asyncssh.SSHWriter(self, self._chan)
        handler = _Handler(self._owner, server, reader, writer, 3)
        self._conn.create_task(handler.run(), reader.logger)


class _SessionServer(_PasswordServer):
    def session_requested(self) -> _Session:
        return _Session(self._owner)  # type: ignore[arg-type]


class MisbehavingSftpServer(DemoSftpServer):
    """The demo's embedded server, serving ``root`` as ``/`` with ``misbehaviour`` applied."""

    def __init__(self, root: Path, misbehaviour: Misbehaviour | None = None, *, username: str, password: str,
                 host: str = "127.0.0.1") -> None:
        super().__init__(root, username=username, password=password, host=host)
        self.misbehaviour = misbehaviour or Misbehaviour()
        self.counters = SftpCounters()
        self._listed: set[str] = set()
        self._swapped: set[str] = set()
        self._swap_lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def advertised_extensions(self) -> list[str]:
        """The SFTP extension names this server sends in its VERSION packet (v3)."""
        names = [n.decode() for n, _ in SFTPServerHandler._extensions]
        return names if self.misbehaviour.limits else [n for n in names if n != LIMITS_EXTENSION.decode()]

    def _note_listed(self, relative: str) -> None:
        if relative in self.misbehaviour.swap_for_symlink:
            with self._swap_lock:
                self._listed.add(relative)

    def _swap_if_armed(self, relative: str) -> None:
        target = self.misbehaviour.swap_for_symlink.get(relative)
        if target is None:
            return
        with self._swap_lock:
            if relative not in self._listed or relative in self._swapped:
                return
            self._swapped.add(relative)
        replace_with_symlink(self._root, relative, target)
        self.counters.add(swaps=1)

    async def _listen(self, host_key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
        # No sftp_factory: asyncssh then asks session_requested, which starts our handler.
        return await asyncssh.create_server(
            lambda: _SessionServer(self), self._host, self._port, server_host_keys=[host_key],
            allow_scp=False, agent_forwarding=False, x11_forwarding=False,
        )


@dataclass
class MisbehavingRig:
    """Like conftest's ``PartnerRig`` (same ``partner``/``tree``/``landing``/``config``/``write``), plus
    the server, its misbehaviour (mutable, read per request) and its counters."""

    partner: PartnerConfig
    tree: Path
    landing: LandingConfig
    server: MisbehavingSftpServer
    endpoint: SftpEndpoint
    password: str

    @property
    def config(self) -> IngestConfig:
        return IngestConfig(landing=self.landing, partners=[self.partner])

    @property
    def misbehaviour(self) -> Misbehaviour:
        return self.server.misbehaviour

    @property
    def counters(self) -> SftpCounters:
        return self.server.counters

    def write(self, relative_path: str, data: bytes, mtime: float | None = None) -> Path:
        """Write a file as the partner would. The server runs in this process, so no chown is needed."""
        path = self.tree / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def replace_with_symlink(self, relative_path: str, target: str) -> None:
        """Swap a file for a link now, e.g. between a sensor tick and the run it requested."""
        replace_with_symlink(self.tree, relative_path, target)


@pytest.fixture
def misbehaving_partner(moto, secretsmanager, bucket: str,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MisbehavingRig]]:
    """Factory: ``misbehaving_partner(Misbehaviour(...), name=None, **partner_overrides)``.

    Each call starts a fresh server on 127.0.0.1 over a fresh directory, stores its password in moto's
    Secrets Manager and returns a :class:`MisbehavingRig`; every server is stopped at teardown.
    """
    servers: list[MisbehavingSftpServer] = []
    counter = iter(range(1, 1000))

    def factory(misbehaviour: Misbehaviour | None = None, name: str | None = None,
                **overrides: Any) -> MisbehavingRig:
        name = name or f"liar{next(counter)}"
        tree = tmp_path_factory.mktemp(f"sftp-{name}")
        password = secrets.token_urlsafe(16)
        server = MisbehavingSftpServer(tree, misbehaviour, username="partner", password=password)
        endpoint = server.start(timeout=10.0)
        servers.append(server)
        secret_id = f"partner-ingest/{name}-{secrets.token_hex(4)}"
        secretsmanager.create_secret(Name=secret_id, SecretString=json.dumps({"password": password}))
        partner_fields = {
            "name": name, "host": endpoint.host, "port": endpoint.port, "username": endpoint.username,
            "secret_id": secret_id, "host_keys": [endpoint.host_key_line], "remote_dir": "/",
            "landing_prefix": f"partners/{name}", **overrides,
        }
        return MisbehavingRig(partner=PartnerConfig(**partner_fields), tree=tree,
                              landing=LandingConfig(bucket=bucket), server=server, endpoint=endpoint,
                              password=password)

    try:
        yield factory
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop(timeout=5.0)

