"""List a partner's remote tree: regular files only, excluded directories pruned, problems collected.

Symlinks, sockets, devices and the like are skipped (never followed, so a symlink loop cannot trap
the walk) and reported; a directory that cannot be read is reported by path while the rest of the
tree is still listed. The walk is bounded by ``max_entries`` and ``max_depth``.
"""

from __future__ import annotations

import stat
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import paramiko

from partner_ingest.sftp.connection import SftpSession
from partner_ingest.sftp.directory_listing import list_directory
from partner_ingest.sftp.remote_file import refused_remote_dir


@dataclass(frozen=True)
class RemoteEntry:
    relative_path: str
    size: int
    mtime: int | None   # None: the server sends no mtime; the file's identity then includes its content


@dataclass
class Listing:
    files: list[RemoteEntry] = field(default_factory=list)
    markers: dict[str, int | None] = field(default_factory=dict)  # done markers: relative path -> mtime
    skipped: list[str] = field(default_factory=list)       # not regular files: "path (symlink)"
    unreadable: list[str] = field(default_factory=list)    # directories we could not list: "path (why)"
    directories: int = 0
    truncated: bool = False
    without_mtime: int = 0                                  # files the server sent no mtime for
    checksum_files: set[str] = field(default_factory=set)   # sidecars and manifests: companions, not files

    def problems(self) -> list[str]:
        return sorted(self.skipped) + sorted(self.unreadable)

    def notes(self) -> list[str]:
        """What the operator should know about how this server's files are identified."""
        if not self.without_mtime:
            return []
        return [f"the server sends no modification time for {self.without_mtime} file(s): their identity is size + "
                "SHA-256 of the content (read on each listing of an already landed file), not size + mtime"]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


class ListingRules(Protocol):
    """What the walk asks of the partner's selection rules (``partner_ingest.ingest.selection.Selection``),
    declared here so the SFTP side does not depend on the ingestion core."""

    def name_refusal(self, name: str) -> str | None: ...

    def walks_dir(self, relative_dir: str) -> bool: ...

    def role(self, relative_path: str) -> str | None: ...


def walk(session: SftpSession, selection: ListingRules, *, max_entries: int = 2_000_000, max_depth: int = 64
         ) -> Listing:
    """Breadth-first listing of ``remote_dir`` by the partner's selection rules.

    Excluded directories and ``archive_dir`` are never entered. Done markers and checksum files are
    collected apart, never as files. Names a server should never send (control characters, ``/`` or
    ``\\`` inside a name) and names with the reserved suffix (where archives expand) are reported, not
    ingested: they would make S3 keys ambiguous or collide with expanded archives.
    """
    partner = session.partner
    root = partner.remote_dir
    listing = Listing()
    queue: deque[tuple[str, int]] = deque([("", 0)])
    seen = 0
    while queue:
        relative_dir, depth = queue.popleft()
        absolute = session.remote_path(relative_dir) if relative_dir else root
        try:
            entries = list_directory(session.sftp, absolute)
        except (paramiko.SFTPError, OSError) as exc:
            if not relative_dir:
                raise refused_remote_dir(exc, partner, doing="list") from None
            listing.unreadable.append(f"{absolute} (vanished while listing)" if isinstance(exc, FileNotFoundError)
                                      else f"{absolute} ({type(exc).__name__}: {exc})")
            continue
        listing.directories += 1
        for attrs in entries:
            seen += 1
            if seen > max_entries:
                listing.truncated = True
                return listing
            name = attrs.filename
            relative = f"{relative_dir}/{name}" if relative_dir else name
            mode = attrs.st_mode or 0
            refused = selection.name_refusal(name)
            if refused:
                listing.skipped.append(f"{absolute.rstrip('/')}/{name!r} ({refused})")
                continue
            if stat.S_ISDIR(mode):
                if partner.recursive and depth + 1 < max_depth and selection.walks_dir(relative):
                    queue.append((relative, depth + 1))
                continue
            role = selection.role(relative)
            if not stat.S_ISREG(mode):
                if role == "file":
                    listing.skipped.append(f"{session.remote_path(relative)} ({_kind(mode)})")
                continue
            mtime = int(attrs.st_mtime) if attrs.st_mtime is not None else None
            if role == "marker":
                listing.markers[relative] = mtime
            elif role == "checksum":
                listing.checksum_files.add(relative)
            elif role == "file":
                if attrs.st_size is None:
                    listing.skipped.append(f"{session.remote_path(relative)} (the server reports no size, so a "
                                           "complete read could not be proven)")
                else:
                    listing.without_mtime += mtime is None
                    listing.files.append(RemoteEntry(relative, int(attrs.st_size), mtime))
    return listing
