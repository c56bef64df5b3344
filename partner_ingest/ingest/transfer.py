"""Move one remote file into S3 and report what happened. Knows nothing of Dagster.

The remote file is read once, through a bounded pipeline, straight into boto3's transfer manager;
its SHA-256 is computed on the way. Before the last byte is handed to S3 three things must hold, or
the read raises and the upload is aborted (nothing lands under the key):

* the server answers EOF at the stat'ed size (an under-reported size or a growing file is caught);
* the path, ``lstat``'ed again, is still a regular file of the same size and mtime (a file still
  being written, replaced, or swapped for a symlink never lands);
* where the partner publishes a digest (sidecar or manifest), the bytes read match it.

A file "already landed" at its version is not uploaded again; where that decision alone could lose
data (``after_landing: delete|move`` would then remove the original, or the identity includes the
content), the remote bytes are re-read and their SHA-256 compared with the landed object's first.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
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
    ServerMisbehavedError,
    SourceChecksumError,
)
from partner_ingest.ingest.byte_budget import ByteBudget
from partner_ingest.ingest.partition_keys import encode_partition_key, relative_path_of_key
from partner_ingest.ingest.selection import Selection
from partner_ingest.ingest.source_checksums import ExpectedDigest, read_expected_digest
from partner_ingest.s3.errors import is_not_found
from partner_ingest.s3.keys import ascii_header_value, landing_key
from partner_ingest.s3.upload import landing_error, read_sha256_tag, transfer_config, upload_stream
from partner_ingest.sftp.connection import SftpSession
from partner_ingest.sftp.link import PartnerLink
from partner_ingest.sftp.reader import (
    PipelinedReader,
    RemoteFileGrew,
    RemoteFileShrunk,
    ServerProtocolError,
)
from partner_ingest.sftp.remote_file import lstat_regular_file, refused_path
from partner_ingest.sftp.shared_client import SftpStatusError, close_without_waiting
from partner_ingest.versions import RemoteVersion, uses_content_identity

T = TypeVar("T")

__all__ = ["LandedFile", "Progress", "RemoteVersion", "already_landed", "land_file", "object_metadata"]

Progress = Callable[[int, int], None]
"""Called as bytes are handed to S3: ``(bytes so far, file size)``, from the thread doing the upload."""


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
    verified_against: str = "none"     # "sidecar", "manifest" or "none": the partner's own digest
    reverified: bool = False           # already landed, and the remote bytes were re-read to prove it
    read_chunk_size: int = 0           # the read size used at the end (lower than asked if the server caps)

    @property
    def bytes_per_second(self) -> float:
        return self.version.size / self.seconds if self.seconds > 0 else 0.0

    def data_version(self, change_detection: str) -> str:
        return self.version.token_with(change_detection, self.sha256)


# OSError covers "Socket is closed", resets and timeouts; missing or forbidden paths are converted to
# RemotePathError before they could get here.
_LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)


class _HashingSource:
    """File object for ``upload_fileobj``: hashes, survives link drops, proves the end before handing it over.

    When the SFTP link drops mid-file, a new session is opened, the file's size and mtime are
    confirmed unchanged, and reading resumes at the first byte not yet received, inside the same
    upload (boto3 never sees the drop). A changed file aborts the upload instead. ``on_end`` runs
    before the last piece is returned, so raising there keeps the last part from S3.
    """

    def __init__(self, reader: PipelinedReader, size: int, unchanged: Callable[[], None],
                 on_end: Callable[[_HashingSource], None], reopen: Callable[[BaseException], bytes], max_resumes: int,
                 extra_algorithm: str | None = None, progress: Progress | None = None) -> None:
        self.reader = reader
        self._progress = progress
        self._unchanged = unchanged
        self._size = size
        self._on_end = on_end
        self._reopen = reopen
        self._max_resumes = max_resumes
        self._hash = hashlib.sha256()
        self.extra_hash = hashlib.new(extra_algorithm) if extra_algorithm and extra_algorithm != "sha256" else None
        self._count = 0
        self._ended = False
        self.resumes = 0

    def _with_resume(self, action: Callable[[], T]) -> T:
        while True:
            try:
                return action()
            except SftpStatusError:
                raise  # the server refused this read; the link is fine and a new one would not change its answer
            except _LINK_ERRORS as exc:
                if self.resumes >= self._max_resumes:
                    raise
                self.resumes += 1
                self._reopen(exc)

    def read(self, n: int = -1) -> bytes:
        data = self._with_resume(lambda: self.reader.read(n))
        self._hash.update(data)
        if self.extra_hash is not None:
            self.extra_hash.update(data)
        self._count += len(data)
        if self._progress is not None and data:
            self._progress(self._count, self._size)
        if not self._ended and self.reader.offset >= self._size:
            self._ended = True
            try:
                self._with_resume(self.reader.confirm_eof)
            except RemoteFileGrew:
                self._unchanged()  # a file that visibly changed is reported as changed, not as a lying server
                raise
            self._unchanged()
            self._on_end(self)
        return data

    def hexdigest(self, algorithm: str) -> str:
        return self._hash.hexdigest() if algorithm == "sha256" or self.extra_hash is None \
            else self.extra_hash.hexdigest()

    def result(self) -> tuple[int, str]:
        return self._count, self._hash.hexdigest()


def object_metadata(partner: PartnerConfig, relative_path: str, remote_path: str,
                    version: RemoteVersion) -> dict[str, str]:
    return {
        "partner": partner.name,
        "source-host": f"{partner.host}:{partner.port}",
        "source-path": ascii_header_value(remote_path),
        "source-size": str(version.size),
        "source-mtime": "" if version.mtime is None else str(version.mtime),
    }


def stat_remote_file(session: SftpSession, relative_path: str) -> tuple[str, RemoteVersion]:
    try:  # the Dagster layer refuses foreign partition keys already; the core does not rely on it
        relative_path_of_key(encode_partition_key(relative_path))
    except ValueError as exc:
        raise RemotePathError(f"'{relative_path}' is not a path inside remote_dir: {exc}",
                              partner=session.partner.name, path=relative_path,
                              action="nothing was read; land only paths the partner's sensor listed") from None
    remote_path = session.remote_path(relative_path)
    refused = Selection(session.partner).refusal(relative_path)
    if refused:
        raise RemotePathError(f"'{relative_path}' is not one of the partner's files: {refused}",
                              partner=session.partner.name, path=session.remote_path(relative_path),
                              action="nothing was read; land only paths the partner's sensor listed")
    return remote_path, lstat_regular_file(session.sftp, session.partner, remote_path, root=session.root_realpath)


def already_landed(s3: Any, bucket: str, key: str, version: RemoteVersion,
                   remote_path: str) -> tuple[str, str | None] | None:
    """The SHA-256 and S3 version of an object that already holds this remote version, if any.

    Only "not found" means "not landed"; any other refusal (403 on HEAD) is raised, never read as
    "absent" (that would upload again over whatever is there, and hide a permission problem).
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    meta = head.get("Metadata", {})
    mtime = "" if version.mtime is None else str(version.mtime)
    if meta.get("source-size") != str(version.size) or meta.get("source-mtime") != mtime:
        return None
    if meta.get("source-path") != ascii_header_value(remote_path):
        return None  # another remote file holds this key: never treat it as ours
    if head.get("ContentLength") != version.size:
        return None
    digest = read_sha256_tag(s3, bucket, key, head.get("VersionId"))
    return (digest, head.get("VersionId")) if digest else None


def land_file(link: PartnerLink, s3: Any, *, bucket: str, relative_path: str,
              multipart_threshold: int = 16 * 1024 * 1024, skip_if_landed: bool = True,
              progress: Progress | None = None, budget: ByteBudget | None = None) -> LandedFile:
    """Land ``remote_dir/relative_path`` at ``landing_prefix/relative_path``; raise a PartnerIngestError.

    ``progress``, if given, is called with the bytes handed to S3 so far and the file's size as the
    upload goes (not for a file already landed, nor for a re-read that proves it is). ``budget``, when
    files share ``link`` from several threads, is held for the file's size (at most all of it) from the
    file's first read to the end of its upload.
    """
    hold = budget.hold if budget is not None else _no_budget
    partner = link.session.partner
    started = time.monotonic()
    remote_path, version = _with_link(link, lambda: stat_remote_file(link.session, relative_path))
    key = landing_key(partner.landing_prefix, relative_path)
    expected = _with_link(link, lambda: read_expected_digest(link.session.sftp, partner, remote_path))
    # Skipping on metadata alone is safe only when nothing is lost if the bytes changed underneath.
    must_reverify = partner.after_landing != "leave" or uses_content_identity(partner.change_detection,
                                                                             version.mtime)

    def landed(sha256: str, s3_version: str | None, uploaded: bool, source: _HashingSource | None = None,
               reverified: bool = False) -> LandedFile:
        return LandedFile(partner=partner.name, relative_path=relative_path, remote_path=remote_path,
                          version=version, bucket=bucket, key=key, s3_version_id=s3_version, sha256=sha256,
                          seconds=time.monotonic() - started, uploaded=uploaded,
                          bytes_read=source.reader.bytes_received if source else 0,
                          resumes=source.resumes if source else 0,
                          verified_against=expected.source if expected else "none", reverified=reverified,
                          read_chunk_size=source.reader.chunk_size if source else 0)

    if skip_if_landed:
        try:
            existing = already_landed(s3, bucket, key, version, remote_path)
        except (ClientError, BotoCoreError) as exc:
            raise landing_error(exc, partner=partner.name, path=remote_path, bucket=bucket, key=key) from None
        published_sha256 = expected.hexdigest if expected and expected.algorithm == "sha256" else None
        if existing and published_sha256 and published_sha256 != existing[0]:
            existing = None  # the partner's digest changed: what landed is not what they publish now
        if existing and not must_reverify and (expected is None or published_sha256 == existing[0]):
            return landed(existing[0], existing[1], uploaded=False)
        if existing:
            # Proof by re-reading: before delete/move, for content identities, and for a published
            # digest in another algorithm (md5, sha1, sha512), which only the remote bytes can be checked against.
            with hold(version.size):
                source = _read_through(link, partner, remote_path, version, expected)
            if source.result()[1] == existing[0]:
                return landed(existing[0], existing[1], uploaded=False, source=source, reverified=True)
            # Same size and mtime, other bytes: the partner rewrote it in place. Land it again.

    metadata = object_metadata(partner, relative_path, remote_path, version)
    with hold(version.size), _remote_source(link, partner, remote_path, version, expected,
                                            progress=progress) as source:
        try:
            landed_object = upload_stream(s3, source, bucket=bucket, key=key, metadata=metadata,
                                          expected_size=version.size,
                                          config=transfer_config(multipart_threshold=multipart_threshold),
                                          sha256_of_source=source.result)
        except BaseException as exc:
            raise _translate(exc, partner, remote_path, bucket, key, source.resumes) from None
    if landed_object.size != version.size:
        raise LandingError(f"read {landed_object.size} bytes of '{remote_path}', expected {version.size}",
                           partner=partner.name, path=remote_path, action="re-run the file")
    return landed(landed_object.sha256, landed_object.version_id, uploaded=True, source=source)


@contextlib.contextmanager
def _no_budget(nbytes: int) -> Iterator[int]:
    yield nbytes


@contextlib.contextmanager
def _remote_source(link: PartnerLink, partner: PartnerConfig, remote_path: str, version: RemoteVersion,
                   expected: ExpectedDigest | None, progress: Progress | None = None) -> Iterator[_HashingSource]:
    """The remote file open for a verified, resumable read; drained and closed however the read ends."""
    def open_on_current_session() -> tuple[SftpSession, paramiko.SFTPFile, int | None]:
        # One session for the handle, its client and its limit: another file's thread may replace the link's
        # session at any moment, and a handle is only meaningful on the session that opened it.
        session = link.session
        return session, _open_remote(session, remote_path), session.read_limit

    reading_on, remote, read_limit = _with_link(link, open_on_current_session)
    reader = PipelinedReader(remote.sftp, remote.handle, size=version.size, server_limit=read_limit,
                             bytes_in_flight=partner.limits.read_in_flight_bytes)

    def reopen(cause: BaseException) -> bytes:
        nonlocal remote, reading_on
        session = link.reconnect(f"reading '{remote_path}' at byte {reader.offset}: {type(cause).__name__}: {cause}",
                                 failed=reading_on)
        reading_on = session
        _unchanged(partner, remote_path, version, session)
        remote = _open_remote(session, remote_path)
        reader.resume(session.sftp, remote.handle)
        return remote.handle

    source = _HashingSource(reader, version.size, reopen=reopen, max_resumes=link.retries,
                            unchanged=lambda: _with_link(link, lambda: _unchanged(partner, remote_path, version,
                                                                                  link.session)),
                            on_end=lambda src: _check_digest(partner, remote_path, expected, src),
                            extra_algorithm=expected.algorithm if expected else None, progress=progress)
    try:
        yield source
    finally:
        try:
            reader.drain()
            close_without_waiting(remote)
        except (OSError, EOFError, paramiko.SSHException):
            pass


def _read_through(link: PartnerLink, partner: PartnerConfig, remote_path: str, version: RemoteVersion,
                  expected: ExpectedDigest | None) -> _HashingSource:
    """Re-read the remote file to its proven end without uploading it; the digest is in the result."""
    with _remote_source(link, partner, remote_path, version, expected) as source:
        try:
            while source.read(1024 * 1024):
                pass
        except BaseException as exc:
            raise _translate(exc, partner, remote_path, None, None, source.resumes) from None
    return source


def _unchanged(partner: PartnerConfig, remote_path: str, version: RemoteVersion, session: SftpSession) -> None:
    """By path, not handle, and without following links: a file deleted, replaced (renamed over) or
    swapped for a symlink while we read is caught."""
    now = lstat_regular_file(session.sftp, partner, remote_path, root=session.root_realpath, while_reading=True)
    if now != version:
        raise RemoteFileChangedError(
            f"'{remote_path}' changed while it was read (size/mtime {version.token} -> {now.token})",
            partner=partner.name, path=remote_path,
            action="nothing was landed; it is ingested again once the partner finishes writing it")


def _check_digest(partner: PartnerConfig, remote_path: str, expected: ExpectedDigest | None,
                  source: _HashingSource) -> None:
    if expected is not None:
        found = source.hexdigest(expected.algorithm)
        if found != expected.hexdigest:
            raise SourceChecksumError(
                f"its {expected.algorithm} is {found}, but the partner's {expected.source} '{expected.path}' says "
                f"{expected.hexdigest}", partner=partner.name, path=remote_path,
                action="nothing was landed and the remote file is untouched; ask the partner to re-send the file "
                       "or correct its checksum (the sensor tries it again)")


def _translate(exc: BaseException, partner: PartnerConfig, remote_path: str, bucket: str | None, key: str | None,
               resumes: int) -> BaseException:
    """Library and reader errors as typed errors naming partner, file and what to do."""
    if isinstance(exc, PartnerIngestError):
        return exc
    if isinstance(exc, RemoteFileShrunk):
        return RemoteFileChangedError(f"'{remote_path}' shrank while it was read ({exc})", partner=partner.name,
                                      path=remote_path, action="nothing was landed; it is ingested again once stable")
    if isinstance(exc, RemoteFileGrew):
        return RemoteFileChangedError(
            f"'{remote_path}' holds more bytes than the size its server reported ({exc}): it grew while it was "
            "read, or the server under-reports sizes", partner=partner.name, path=remote_path,
            action="nothing was landed; it is ingested again once stable. If it repeats for a file that no longer "
                   "changes, the partner's server misreports sizes: ask its administrator")
    if isinstance(exc, SftpStatusError):
        return status_error(exc, partner, remote_path)
    if isinstance(exc, ServerProtocolError):
        return ServerMisbehavedError(
            f"protocol error from {partner.host}:{partner.port} while reading '{remote_path}': {exc}",
            partner=partner.name, path=remote_path,
            action="nothing was landed and the remote file is untouched; report this to the partner's server "
                   "administrator (their SFTP server answers outside the protocol)")
    if isinstance(exc, _LINK_ERRORS):
        return ConnectionFailedError(f"connection to {partner.host}:{partner.port} failed while reading "
                                     f"'{remote_path}' after {resumes} resumes: {type(exc).__name__}: {exc}",
                                     partner=partner.name, path=remote_path,
                                     action="nothing was landed; the run can be retried")
    if bucket is not None and key is not None and isinstance(
            exc, ClientError | BotoCoreError | S3UploadFailedError | RetriesExceededError):
        return landing_error(exc, partner=partner.name, path=remote_path, bucket=bucket, key=key)
    return exc


def _open_remote(session: SftpSession, remote_path: str) -> paramiko.SFTPFile:
    partner = session.partner
    try:
        return session.sftp.open(remote_path, "rb")
    except (PermissionError, FileNotFoundError) as exc:
        raise refused_path(exc, partner, remote_path, doing="read", gone="vanished before it could be read",
                           gone_action="nothing to land; it is picked up again if it returns") from None


def status_error(exc: SftpStatusError, partner: PartnerConfig, path: str | None) -> ServerMisbehavedError:
    """A failure status the server gave for one request on a working link (SFTP has no finer code for it)."""
    where = f" about '{path}'" if path else ""
    return ServerMisbehavedError(
        f"{partner.host}:{partner.port} answered a request{where} with failure '{exc}'", partner=partner.name,
        path=path, action="nothing was landed; the file is tried again by the next run. If it keeps failing, ask "
                          "the partner's server administrator what their server reports for it (e.g. a file still "
                          "open for writing on a Windows server)")


def _with_link(link: PartnerLink, action: Callable[[], T]) -> T:
    """Run a short SFTP call, reconnecting (bounded) when the link drops under it."""
    for attempt in range(link.retries + 1):
        session = link.session
        try:
            return action()
        except SftpStatusError as exc:
            raise status_error(exc, session.partner, None) from None
        except _LINK_ERRORS as exc:
            if attempt == link.retries:
                partner = session.partner
                raise ConnectionFailedError(f"connection to {partner.host}:{partner.port} keeps dropping: {exc}",
                                            partner=partner.name, action="the run can be retried") from None
            link.reconnect(f"{type(exc).__name__}: {exc}", failed=session)
    raise AssertionError("unreachable")
