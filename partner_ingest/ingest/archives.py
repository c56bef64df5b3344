"""Safe expansion of landed zip archives into S3, entry by entry, with hard limits.

The archive is read from S3 with seeks (``S3SeekableReader``) through the standard library's
``zipfile``; every entry is streamed through a SHA-256 into ``upload_fileobj``: no local disk, bounded
memory. The whole central directory is validated before the first byte is written — entry count,
total uncompressed bytes, compression ratio, ``..`` and absolute paths, control characters,
symlinks, duplicates, encryption, nested archives beyond the allowed depth — and ``zipfile`` itself
stops any entry at its declared size and checks its CRC, so a forged header cannot write more than
was validated. Entries land under ``<archive key>.unzipped/``; on any failure everything written
under that prefix in this attempt is deleted, so an archive is expanded completely or not at all.
The archive object itself stays landed either way.

Limits hold for the whole tree of nested archives together: each level reserves its entries and
bytes in one budget when it is validated, before anything of it is written, so an inner archive
sees what its outer levels will still write, not only what they wrote so far.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.config import ArchiveLimits
from partner_ingest.errors import ArchiveRejectedError, LandingError, PartnerIngestError
from partner_ingest.s3.keys import ascii_header_value
from partner_ingest.s3.seekable_reader import S3SeekableReader
from partner_ingest.s3.upload import transfer_config

EXPANSION_SUFFIX = ".unzipped/"
RESERVED_SUFFIX = EXPANSION_SUFFIX.rstrip("/")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_archive_name(path: str) -> bool:
    return path.lower().endswith(".zip")


def expansion_prefix(archive_key: str) -> str:
    return archive_key + EXPANSION_SUFFIX


@dataclass(frozen=True)
class ExpandedEntry:
    name: str
    key: str
    size: int
    sha256: str


@dataclass
class Expansion:
    archive_key: str
    prefix: str
    entries: list[ExpandedEntry] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


class _Refused(Exception):
    """A safety rule the archive breaks; the level that found it adds where it is (see ``_Expander._rejected``).

    Validation raises this rather than ``ArchiveRejectedError`` so that it needs to know nothing about
    S3 keys or remote paths, and so that each nesting level names itself in the message.
    """

    def __init__(self, reason: str, entry: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.entry = entry


class _CorruptEntry(Exception):
    """Reading an entry's bytes failed inside ``zipfile`` or its decompressor, not while writing to S3.

    Raised from the stream ``upload_fileobj`` reads (boto3 re-raises what that stream raises, by type),
    so the caller can tell a damaged archive from a failed upload without reading exception text.
    """


class _DeleteRefused(Exception):
    """DeleteObjects answered 200 but refused some keys: it reports them per key, not as an error."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]
        super().__init__(f"DeleteObjects refused {len(errors)} key(s), first '{first.get('Key')}': "
                         f"{first.get('Code', 'DeleteFailed')}: {first.get('Message')}")


# What ``zipfile`` raises for a damaged archive, CPython 3.11: BadZipFile for a bad CRC-32 or a
# truncated or mismatched local header, EOFError when the member's data ends before its compressed
# size, NotImplementedError for unsupported features, and the decompressors' own errors (zlib.error
# for deflate, LZMAError for lzma; bz2 raises a bare OSError, see ``_EntryStream``).
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, lzma.LZMAError)
# What a failed S3 call raises; the archive stays landed and a re-run can expand it. Checked before
# OSError: botocore's timeouts and connection errors are OSError subclasses too.
_S3_ERRORS = (ClientError, BotoCoreError, S3UploadFailedError)


class _EntryStream:
    """One entry's bytes for ``upload_fileobj``: hashed and counted on the way, damage told apart from S3.

    Under the entry lies ``S3SeekableReader``, whose failures are botocore's: they pass through and end
    as a LandingError. Anything else out of ``zipfile`` here is the archive's fault, including the bare
    OSError bz2 raises for bad data, and becomes :class:`_CorruptEntry`.
    """

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._source.read(n)
        except _S3_ERRORS:
            raise
        except (*_DAMAGE, OSError) as exc:
            raise _CorruptEntry(str(exc)) from exc
        self.hash.update(data)
        self.count += len(data)
        return data


def safe_entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's path inside the expansion prefix, or ValueError saying why it is refused."""
    raw = info.filename
    if _CONTROL.search(raw):
        raise ValueError("its name holds control characters")
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValueError("it has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("its path climbs out of the archive ('..')")
    if not parts:
        raise ValueError("it has an empty name")
    # Any segment may become a key beside a nested archive's "<key>.unzipped/" expansion, whose clearing
    # and writing would then overwrite or delete it. Case-insensitively: clients on case-folding file
    # systems (SFTP through Transfer Family) would still show the two as one directory.
    reserved = next((p for p in parts if p.lower().endswith(RESERVED_SUFFIX)), None)
    if reserved is not None:
        raise ValueError(f"its path segment '{reserved}' ends in the reserved suffix '{RESERVED_SUFFIX}' "
                         "(nested archives expand under '<name>.unzipped/')")
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _looks_like_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    if info.file_size < 4:
        return False
    with archive.open(info) as entry:
        return entry.read(4) in _ZIP_MAGIC


@dataclass
class _Budget:
    """Entries and bytes reserved by every level validated so far, written or not."""

    entries: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class _Level:
    """One archive of the tree: the landed one (depth 1) or one nested in it, already written to S3."""

    key: str
    version_id: str | None
    prefix: str
    inner: str  # path of this archive inside the landed one, "a.zip!/b.zip!/"; "" for the landed one
    depth: int

    def where(self, remote_path: str) -> str:
        return f"{remote_path}!/{self.inner.removesuffix('!/')}" if self.inner else remote_path


def _adding_up(level: int, total: int, unit: str, depth: int) -> str:
    """``'6 entries'``; for a nested archive also what its levels add up to, so the message explains itself."""
    if depth == 1:
        return f"{level} {unit}"
    return f"{level} {unit}, {total} together with the archives that hold it"


def _cause(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _DeleteRefused) else f"{type(exc).__name__}: {exc}"


class _Expander:
    """Expands one landed archive and the archives nested in it, all or nothing.

    One object holds what every level shares (where to write, the limits, the budget all levels
    draw on, and the keys written so far, which a failure deletes), so each step takes only the
    level it works on.
    """

    def __init__(self, s3: Any, *, bucket: str, archive_key: str, partner: str, remote_path: str,
                 limits: ArchiveLimits) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._partner = partner
        self._remote_path = remote_path
        self._limits = limits
        self._budget = _Budget()
        self._written: list[str] = []
        self.expansion = Expansion(archive_key=archive_key, prefix=expansion_prefix(archive_key))

    def run(self, version_id: str | None) -> Expansion:
        archive_key, prefix = self.expansion.archive_key, self.expansion.prefix
        try:
            self._clear_prefix(prefix)
            self._expand(_Level(key=archive_key, version_id=version_id, prefix=prefix, inner="", depth=1))
            return self.expansion
        except (*_S3_ERRORS, _DeleteRefused) as exc:
            self._clean_up(exc)
            raise LandingError(f"expanding s3://{self._bucket}/{archive_key} failed: {_cause(exc)}",
                               partner=self._partner, path=self._remote_path,
                               action="the archive stays landed; re-run it once S3 is reachable (the run role needs "
                                      "s3:PutObject and s3:DeleteObject under the expansion prefix)") from None
        except BaseException as exc:
            self._clean_up(exc)
            raise

    def _rejected(self, refused: _Refused, level: _Level) -> ArchiveRejectedError:
        entry_text = f"entry '{refused.entry}' is refused: " if refused.entry is not None else ""
        return ArchiveRejectedError(
            f"archive not expanded: {entry_text}{refused.reason}; the archive itself stays landed at "
            f"s3://{self._bucket}/{self.expansion.archive_key}",
            partner=self._partner, path=level.where(self._remote_path),
            action="ask the partner for a clean archive, or raise the unzip limits in partners.yaml if it is trusted")

    def _expand(self, level: _Level) -> None:
        """Validate the level as a whole, then write its entries; a nested archive is expanded right after it
        is written, while the budget still holds what this level has left to write."""
        try:
            reader = S3SeekableReader(self._s3, self._bucket, level.key, version_id=level.version_id)
            try:
                archive = zipfile.ZipFile(reader)
            except _S3_ERRORS:
                raise
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                # zipfile turns any OSError while it reads the end record into "File is not a zip file", and
                # botocore's timeouts are OSErrors: that is S3 failing, not the archive.
                if isinstance(exc.__context__, _S3_ERRORS):
                    raise exc.__context__ from None
                raise _Refused(f"it is not a readable zip archive ({exc})") from None
            with archive:
                try:
                    entries = self._validate(archive, level.depth)
                except _S3_ERRORS:
                    raise
                except (*_DAMAGE, OSError) as exc:
                    raise _Refused(f"it is corrupt ({exc})") from None
                for info, name in entries:
                    target = self._write_entry(archive, info, level, name)
                    if is_archive_name(name) and self._object_is_zip(target):
                        self._expand(_Level(key=target, version_id=None, prefix=expansion_prefix(target),
                                            inner=f"{level.inner}{name}!/", depth=level.depth + 1))
        except _Refused as refused:  # this level's only: a nested level renders its own, naming its place
            raise self._rejected(refused, level) from None

    def _validate(self, archive: zipfile.ZipFile, depth: int) -> list[tuple[zipfile.ZipInfo, str]]:
        """Check one level against what all levels together will write, then reserve it in the budget.

        A nested archive is one entry (and its bytes) of the level that holds it, and its own entries
        come on top, so no nesting can write more than the limits in total.
        """
        limits, budget = self._limits, self._budget
        infos = [i for i in archive.infolist() if not i.is_dir()]
        level_bytes = sum(i.file_size for i in infos)
        entries_total = len(infos) + budget.entries
        if entries_total > limits.max_entries:
            raise _Refused(f"it has {_adding_up(len(infos), entries_total, 'entries', depth)}, more than "
                           f"max_entries={limits.max_entries}")
        bytes_total = level_bytes + budget.bytes
        if bytes_total > limits.max_total_bytes:
            raise _Refused(f"it expands to {_adding_up(level_bytes, bytes_total, 'bytes', depth)}, more than "
                           f"max_total_bytes={limits.max_total_bytes}")
        compressed = sum(i.compress_size for i in infos)
        if level_bytes > limits.max_ratio * max(compressed, 1):
            raise _Refused(f"it expands {level_bytes / max(compressed, 1):.0f}x, more than "
                           f"max_ratio={limits.max_ratio}")
        seen: dict[str, str] = {}
        entries = []
        for info in infos:
            try:
                name = safe_entry_name(info)
            except ValueError as exc:
                raise _Refused(str(exc), info.filename) from None
            if info.flag_bits & 0x1:
                raise _Refused("it is encrypted", info.filename)
            if _is_symlink(info):
                raise _Refused("it is a symbolic link", info.filename)
            if info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise _Refused(f"it expands {info.file_size / max(info.compress_size, 1):.0f}x, "
                               f"more than max_ratio={limits.max_ratio}", info.filename)
            if name in seen:
                raise _Refused(f"its name duplicates entry '{seen[name]}'", info.filename)
            seen[name] = info.filename
            if depth >= limits.max_depth and _looks_like_zip(archive, info):
                raise _Refused(f"it is an archive nested deeper than max_depth={limits.max_depth}", info.filename)
            entries.append((info, name))
        budget.entries = entries_total
        budget.bytes = bytes_total
        return entries

    def _write_entry(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, level: _Level, name: str) -> str:
        """Stream one entry into S3 under the level's prefix; its key once written."""
        target = level.prefix + name
        try:
            with archive.open(info) as source:
                stream = _EntryStream(source)
                metadata = {"partner": self._partner, "source-archive": ascii_header_value(level.key),
                            "source-entry": ascii_header_value(info.filename)}
                self._s3.upload_fileobj(stream, self._bucket, target, Config=transfer_config(),
                                        ExtraArgs={"Metadata": metadata})
        except (_CorruptEntry, *_DAMAGE) as exc:  # _DAMAGE: opening the entry (its local header)
            raise _Refused(f"it is corrupt or unreadable ({exc})", info.filename) from None
        except (OSError, RuntimeError) as exc:
            raise LandingError(f"writing s3://{self._bucket}/{target} failed: {exc}", partner=self._partner,
                               path=level.where(self._remote_path),
                               action="the archive stays landed; re-run to expand it") from None
        self._written.append(target)
        if stream.count != info.file_size:
            raise _Refused(f"it held {stream.count} bytes, its header says {info.file_size}", info.filename)
        self.expansion.entries.append(ExpandedEntry(name=f"{level.inner}{name}", key=target, size=stream.count,
                                                    sha256=stream.hash.hexdigest()))
        return target

    def _object_is_zip(self, key: str) -> bool:
        head = self._s3.get_object(Bucket=self._bucket, Key=key, Range="bytes=0-3")["Body"].read()
        return head in _ZIP_MAGIC

    def _clear_prefix(self, prefix: str) -> None:
        """Entries of an earlier version of the archive must not mix with this one (the bucket keeps them)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            _delete(self._s3, self._bucket, [o["Key"] for o in page.get("Contents", [])])

    def _clean_up(self, cause: BaseException) -> None:
        """Delete what this attempt wrote, so an archive is expanded completely or not at all.

        If that fails too, the entries left behind must be named: a LandingError replaces the cause
        (chained to it) unless the cause is an interrupt, which stays what it is.
        """
        try:
            _delete(self._s3, self._bucket, self._written)
        except (*_S3_ERRORS, _DeleteRefused) as exc:
            if not isinstance(cause, Exception):
                return
            problem = cause.problem if isinstance(cause, PartnerIngestError) else _cause(cause)
            raise LandingError(
                f"expanding s3://{self._bucket}/{self.expansion.archive_key} failed ({problem}), and deleting the "
                f"{len(self._written)} entries it wrote under s3://{self._bucket}/{self.expansion.prefix} failed "
                f"too: {_cause(exc)}", partner=self._partner, path=self._remote_path,
                action="delete that prefix by hand (the run role needs s3:DeleteObject under it), then re-run "
                       "the file") from cause


def expand_archive(s3: Any, *, bucket: str, archive_key: str, partner: str, remote_path: str,
                   limits: ArchiveLimits, version_id: str | None = None) -> Expansion:
    """Expand the landed archive under its prefix; raise ArchiveRejectedError or LandingError."""
    return _Expander(s3, bucket=bucket, archive_key=archive_key, partner=partner, remote_path=remote_path,
                     limits=limits).run(version_id)


def _delete(s3: Any, bucket: str, keys: list[str]) -> None:
    """Delete, and fail loudly if S3 refused any key (DeleteObjects reports refusals per key)."""
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        if response.get("Errors"):
            raise _DeleteRefused(response["Errors"])


def verify_expansion(s3: Any, *, bucket: str, archive_key: str, version_id: str | None = None
                     ) -> tuple[bool, dict[str, Any]]:
    """Every file entry of the archive's central directory exists under its prefix with its size."""
    reader = S3SeekableReader(s3, bucket, archive_key, version_id=version_id)
    prefix = expansion_prefix(archive_key)
    with zipfile.ZipFile(reader) as archive:
        expected = {}
        for info in archive.infolist():
            if not info.is_dir():
                expected[prefix + safe_entry_name(info)] = info.file_size
    present: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            present[item["Key"]] = item["Size"]
    missing = sorted(k for k in expected if k not in present)
    wrong = sorted(k for k, size in expected.items() if k in present and present[k] != size)
    details = {"entries_expected": len(expected), "bytes_expected": sum(expected.values()),
               "entries_found": sum(1 for k in expected if k in present),
               "bytes_found": sum(present[k] for k in expected if k in present),
               "missing": missing[:20], "wrong_size": wrong[:20]}
    return not missing and not wrong, details


