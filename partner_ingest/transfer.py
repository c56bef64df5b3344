"""Move one remote file into S3 and report what happened. Knows nothing of Dagster.

The remote file is read once, through a bounded pipeline, straight into boto3's transfer manager;
its SHA-256 is computed on the way. Before the last byte is handed to S3 the remote file is stat'ed
again: if its size or mtime moved, the read raises and the upload is aborted, so a file that was
still being written never lands.
"""

from __future__ import annotations

import hashlib
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import paramiko
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import (
    ConnectionFailedError,
    LandingError,
    PartnerIngestError,
    RemoteFileChangedError,
    RemotePathError,
)
from partner_ingest.landing.keys import ascii_header_value, landing_key
from partner_ingest.landing.upload import landing_error, read_sha256_tag, transfer_config, upload_stream
from partner_ingest.sftp.connection import SftpSession
from partner_ingest.sftp.link import PartnerLink
from partner_ingest.sftp.reader import PipelinedReader, RemoteFileShrunk

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteVersion:
    """A remote file's identity for change detection: (size, mtime in whole seconds)."""

    size: int
    mtime: int

    @property
    def token(self) -> str:
        return f"{self.size}-{self.mtime}"


@dataclass(frozen=True)
class LandedFile:
    """What one transfer did; everything the Dagster layer records as metadata."""

    partner: str
    relative_path: str
    remote_path: str
    version: RemoteVersion
    bucket: str
    key: str
    s3_version_id: str | None
    sha256: str
    seconds: float
    uploaded: bool
    bytes_read: int = 0
    resumes: int = 0

    @property
    def bytes_per_second(self) -> float:
        return self.version.size / self.seconds if self.seconds > 0 else 0.0


# OSError covers "Socket is closed", resets and timeouts; missing or forbidden paths are converted to
# RemotePathError before they could get here.
_LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)


class _HashingSource:
    """File object for ``upload_fileobj``: hashes and counts, survives link drops, re-checks the end.

    When the SFTP link drops mid-file, a new session is opened, the file's size and mtime are
    confirmed unchanged, and reading resumes at the first byte not yet received, inside the same
    upload (boto3 never sees the drop). A changed file aborts the upload instead.
    """

    def __init__(self, reader: PipelinedReader, size: int, on_end: Callable[[], None],
                 reopen: Callable[[BaseException], bytes], max_resumes: int) -> None:
        self.reader = reader
        self._size = size
        self._on_end = on_end
        self._reopen = reopen
        self._max_resumes = max_resumes
        self._hash = hashlib.sha256()
        self._count = 0
        self._ended = False
        self.resumes = 0

    def read(self, n: int = -1) -> bytes:
        while True:
            try:
                data = self.reader.read(n)
                break
            except _LINK_ERRORS as exc:
                if self.resumes >= self._max_resumes:
                    raise
                self.resumes += 1
                self._reopen(exc)
        self._hash.update(data)
        self._count += len(data)
        if not self._ended and self.reader.offset >= self._size:
            self._ended = True
            if self._count != self._size:  # fail closed: never hand S3 a stream with a hole in it
                raise RemoteFileShrunk(f"streamed {self._count} of {self._size} bytes")
            self._on_end()
        return data

    def result(self) -> tuple[int, str]:
        return self._count, self._hash.hexdigest()


def object_metadata(partner: PartnerConfig, relative_path: str, remote_path: str,
                    version: RemoteVersion) -> dict[str, str]:
    return {
        "partner": partner.name,
        "source-host": f"{partner.host}:{partner.port}",
        "source-path": ascii_header_value(remote_path),
        "source-size": str(version.size),
        "source-mtime": str(version.mtime),
    }


def stat_remote_file(session: SftpSession, relative_path: str) -> tuple[str, RemoteVersion]:
    partner = session.partner
    remote_path = session.remote_path(relative_path)
    try:
        attrs = session.sftp.stat(remote_path)
    except FileNotFoundError:
        raise RemotePathError(f"'{remote_path}' no longer exists on {partner.host}", partner=partner.name,
                              path=remote_path, action="nothing to land; the sensor drops files that vanish"
                              ) from None
    except PermissionError:
        raise RemotePathError(f"user '{partner.username}' may not stat '{remote_path}'", partner=partner.name,
                              path=remote_path, action="ask the partner to grant read access") from None
    if not stat.S_ISREG(attrs.st_mode or 0):
        raise RemotePathError(f"'{remote_path}' is not a regular file", partner=partner.name, path=remote_path,
                              action="exclude it in partners.yaml")
    return remote_path, RemoteVersion(size=attrs.st_size or 0, mtime=int(attrs.st_mtime or 0))


def already_landed(s3: Any, bucket: str, key: str, version: RemoteVersion,
                   remote_path: str) -> tuple[str, str | None] | None:
    """The SHA-256 and S3 version of an object that already holds this remote version, if any."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return None
    meta = head.get("Metadata", {})
    if meta.get("source-size") != str(version.size) or meta.get("source-mtime") != str(version.mtime):
        return None
    if meta.get("source-path") != ascii_header_value(remote_path):
        return None  # another remote file holds this key: never treat it as ours
    if head.get("ContentLength") != version.size:
        return None
    digest = read_sha256_tag(s3, bucket, key, head.get("VersionId"))
    return (digest, head.get("VersionId")) if digest else None


def land_file(link: PartnerLink, s3: Any, *, bucket: str, relative_path: str,
              multipart_threshold: int = 16 * 1024 * 1024, skip_if_landed: bool = True) -> LandedFile:
    """Land ``remote_dir/relative_path`` at ``landing_prefix/relative_path``; raise a PartnerIngestError."""
    partner = link.session.partner
    started = time.monotonic()
    remote_path, version = _with_link(link, lambda: stat_remote_file(link.session, relative_path))
    key = landing_key(partner.landing_prefix, relative_path)

    def landed(sha256: str, s3_version: str | None, uploaded: bool, source: _HashingSource | None = None
               ) -> LandedFile:
        return LandedFile(partner=partner.name, relative_path=relative_path, remote_path=remote_path,
                          version=version, bucket=bucket, key=key, s3_version_id=s3_version, sha256=sha256,
                          seconds=time.monotonic() - started, uploaded=uploaded,
                          bytes_read=source.reader.bytes_received if source else 0,
                          resumes=source.resumes if source else 0)

    if skip_if_landed:
        try:
            existing = already_landed(s3, bucket, key, version, remote_path)
        except (ClientError, BotoCoreError) as exc:
            raise landing_error(exc, partner=partner.name, path=remote_path, bucket=bucket, key=key) from None
        if existing:
            return landed(existing[0], existing[1], uploaded=False)

    remote = _with_link(link, lambda: _open_remote(link.session, remote_path))

    def unchanged(current: paramiko.SFTPAttributes) -> None:
        now = RemoteVersion(size=current.st_size or 0, mtime=int(current.st_mtime or 0))
        if now != version:
            raise RemoteFileChangedError(
                f"'{remote_path}' changed while it was read (size/mtime {version.token} -> {now.token})",
                partner=partner.name, path=remote_path,
                action="nothing was landed; it is ingested again once the partner finishes writing it")

    def reopen(cause: BaseException) -> bytes:
        nonlocal remote
        session = link.reconnect(f"reading '{remote_path}' at byte {reader.offset}: {type(cause).__name__}: {cause}")
        try:
            unchanged(session.sftp.stat(remote_path))
        except FileNotFoundError:
            raise RemoteFileChangedError(f"'{remote_path}' vanished while it was read", partner=partner.name,
                                         path=remote_path, action="nothing was landed") from None
        remote = _open_remote(session, remote_path)
        reader.resume(session.sftp, remote.handle)
        return remote.handle

    reader = PipelinedReader(link.session.sftp, remote.handle, size=version.size)
    source = _HashingSource(reader, version.size, on_end=lambda: unchanged(_stat_path(link, remote_path)),
                            reopen=reopen,
                            max_resumes=link.retries)
    metadata = object_metadata(partner, relative_path, remote_path, version)
    try:
        landed_object = upload_stream(s3, source, bucket=bucket, key=key, metadata=metadata,
                                      config=transfer_config(multipart_threshold=multipart_threshold),
                                      sha256_of_source=source.result)
    except PartnerIngestError:
        raise
    except RemoteFileShrunk as exc:
        raise RemoteFileChangedError(f"'{remote_path}' shrank while it was read ({exc})", partner=partner.name,
                                     path=remote_path, action="nothing was landed; it is ingested again once stable"
                                     ) from None
    except _LINK_ERRORS as exc:
        raise ConnectionFailedError(f"connection to {partner.host}:{partner.port} failed while reading "
                                    f"'{remote_path}' after {source.resumes} resumes: {type(exc).__name__}: {exc}",
                                    partner=partner.name, path=remote_path,
                                    action="nothing was landed; the run can be retried") from None
    except (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError) as exc:
        raise landing_error(exc, partner=partner.name, path=remote_path, bucket=bucket, key=key) from None
    finally:
        try:
            reader.drain()
            remote.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
    if landed_object.size != version.size:
        raise LandingError(f"read {landed_object.size} bytes of '{remote_path}', expected {version.size}",
                           partner=partner.name, path=remote_path, action="re-run the file")
    return landed(landed_object.sha256, landed_object.version_id, uploaded=True, source=source)


def _stat_path(link: PartnerLink, remote_path: str) -> paramiko.SFTPAttributes:
    """Stat by path, not handle: a file deleted or replaced (rename over it) while we read is caught."""
    partner = link.session.partner
    try:
        return link.session.sftp.stat(remote_path)
    except FileNotFoundError:
        raise RemoteFileChangedError(f"'{remote_path}' vanished while it was read", partner=partner.name,
                                     path=remote_path, action="nothing was landed; it is ingested again if it returns"
                                     ) from None


def _open_remote(session: SftpSession, remote_path: str) -> paramiko.SFTPFile:
    partner = session.partner
    try:
        return session.sftp.open(remote_path, "rb")
    except PermissionError:
        raise RemotePathError(f"user '{partner.username}' may not read '{remote_path}'", partner=partner.name,
                              path=remote_path, action="ask the partner to grant read access") from None
    except FileNotFoundError:
        raise RemotePathError(f"'{remote_path}' vanished before it could be read", partner=partner.name,
                              path=remote_path, action="nothing to land; it is picked up again if it returns"
                              ) from None


def _with_link(link: PartnerLink, action: Callable[[], T]) -> T:
    """Run a short SFTP call, reconnecting (bounded) when the link drops under it."""
    for attempt in range(link.retries + 1):
        try:
            return action()
        except _LINK_ERRORS as exc:
            if attempt == link.retries:
                partner = link.session.partner
                raise ConnectionFailedError(f"connection to {partner.host}:{partner.port} keeps dropping: {exc}",
                                            partner=partner.name, action="the run can be retried") from None
            link.reconnect(f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")
