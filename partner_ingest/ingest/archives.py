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
import re
import stat
import zipfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.config import ArchiveLimits
from partner_ingest.errors import ArchiveRejectedError, LandingError
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


class _Hashing:
    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
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


@dataclass
class _Budget:
    """Entries and bytes reserved by every level validated so far, written or not."""

    entries: int = 0
    bytes: int = 0


def _adding_up(level: int, total: int, unit: str, depth: int) -> str:
    """``'6 entries'``; for a nested archive also what its levels add up to, so the message explains itself."""
    if depth == 1:
        return f"{level} {unit}"
    return f"{level} {unit}, {total} together with the archives that hold it"


def _validate(archive: zipfile.ZipFile, limits: ArchiveLimits, depth: int, reject: Any,
              budget: _Budget) -> list[tuple[zipfile.ZipInfo, str]]:
    """Check one level against what all levels together will write, then reserve it in ``budget``.

    A nested archive is one entry (and its bytes) of the level that holds it, and its own entries
    come on top, so no nesting can write more than the limits in total.
    """
    infos = [i for i in archive.infolist() if not i.is_dir()]
    level_bytes = sum(i.file_size for i in infos)
    entries_total = len(infos) + budget.entries
    if entries_total > limits.max_entries:
        raise reject(f"it has {_adding_up(len(infos), entries_total, 'entries', depth)}, more than "
                     f"max_entries={limits.max_entries}", None)
    bytes_total = level_bytes + budget.bytes
    if bytes_total > limits.max_total_bytes:
        raise reject(f"it expands to {_adding_up(level_bytes, bytes_total, 'bytes', depth)}, more than "
                     f"max_total_bytes={limits.max_total_bytes}", None)
    compressed = sum(i.compress_size for i in infos)
    if level_bytes > limits.max_ratio * max(compressed, 1):
        raise reject(f"it expands {level_bytes / max(compressed, 1):.0f}x, more than max_ratio={limits.max_ratio}",
                     None)
    seen: dict[str, str] = {}
    entries = []
    for info in infos:
        try:
            name = safe_entry_name(info)
        except ValueError as exc:
            raise reject(str(exc), info.filename) from None
        if info.flag_bits & 0x1:
            raise reject("it is encrypted", info.filename)
        if _is_symlink(info):
            raise reject("it is a symbolic link", info.filename)
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise reject(f"it expands {info.file_size / max(info.compress_size, 1):.0f}x, "
                         f"more than max_ratio={limits.max_ratio}", info.filename)
        if name in seen:
            raise reject(f"its name duplicates entry '{seen[name]}'", info.filename)
        seen[name] = info.filename
        if depth >= limits.max_depth and _looks_like_zip(archive, info):
            raise reject(f"it is an archive nested deeper than max_depth={limits.max_depth}", info.filename)
        entries.append((info, name))
    budget.entries = entries_total
    budget.bytes = bytes_total
    return entries


def _looks_like_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    if info.file_size < 4:
        return False
    with archive.open(info) as entry:
        return entry.read(4) in _ZIP_MAGIC


def expand_archive(s3: Any, *, bucket: str, archive_key: str, partner: str, remote_path: str,
                   limits: ArchiveLimits, version_id: str | None = None) -> Expansion:
    """Expand the landed archive under its prefix; raise ArchiveRejectedError or LandingError."""
    prefix = expansion_prefix(archive_key)
    written: list[str] = []
    try:
        _clear_prefix(s3, bucket, prefix)
        expansion = Expansion(archive_key=archive_key, prefix=prefix)
        _expand(s3, bucket, archive_key, version_id, prefix, "", 1, limits, partner, remote_path, expansion,
                _Budget(), written)
        return expansion
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        _delete(s3, bucket, written)
        raise LandingError(f"expanding s3://{bucket}/{archive_key} failed: {type(exc).__name__}: {exc}",
                           partner=partner, path=remote_path,
                           action="the archive stays landed; re-run it once S3 is reachable (the run role needs "
                                  "s3:PutObject and s3:DeleteObject under the expansion prefix)") from None
    except BaseException:
        _delete(s3, bucket, written)
        raise


def _expand(s3: Any, bucket: str, key: str, version_id: str | None, prefix: str, inner: str, depth: int,
            limits: ArchiveLimits, partner: str, remote_path: str, expansion: Expansion, budget: _Budget,
            written: list[str]) -> None:
    where = f"{remote_path}!/{inner.removesuffix('!/')}" if inner else remote_path

    def reject(reason: str, entry: str | None) -> ArchiveRejectedError:
        entry_text = f"entry '{entry}' is refused: " if entry is not None else ""
        return ArchiveRejectedError(
            f"archive not expanded: {entry_text}{reason}; the archive itself stays landed at "
            f"s3://{bucket}/{expansion.archive_key}",
            partner=partner, path=where,
            action="ask the partner for a clean archive, or raise the unzip limits in partners.yaml if it is trusted")

    reader = S3SeekableReader(s3, bucket, key, version_id=version_id)
    try:
        archive = zipfile.ZipFile(reader)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise reject(f"it is not a readable zip archive ({exc})", None) from None
    with archive:
        try:
            entries = _validate(archive, limits, depth, reject, budget)
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
            raise reject(f"it is corrupt ({exc})", None) from None
        for info, name in entries:
            target = prefix + name
            try:
                with archive.open(info) as source:
                    hashing = _Hashing(source)
                    metadata = {"partner": partner, "source-archive": ascii_header_value(key),
                                "source-entry": ascii_header_value(info.filename)}
                    s3.upload_fileobj(hashing, bucket, target, Config=transfer_config(),
                                      ExtraArgs={"Metadata": metadata})
            except (zipfile.BadZipFile, NotImplementedError, EOFError, zipfile.LargeZipFile) as exc:
                raise reject(f"it is corrupt or unreadable ({exc})", info.filename) from None
            except (OSError, RuntimeError) as exc:
                if "Bad CRC" in str(exc) or "Truncated" in str(exc):
                    raise reject(f"it is corrupt ({exc})", info.filename) from None
                raise LandingError(f"writing s3://{bucket}/{target} failed: {exc}", partner=partner, path=where,
                                   action="the archive stays landed; re-run to expand it") from None
            written.append(target)
            if hashing.count != info.file_size:
                raise reject(f"it held {hashing.count} bytes, its header says {info.file_size}", info.filename)
            expansion.entries.append(ExpandedEntry(name=f"{inner}{name}", key=target, size=hashing.count,
                                                   sha256=hashing.hash.hexdigest()))
            if is_archive_name(name) and _object_is_zip(s3, bucket, target):
                _expand(s3, bucket, target, None, expansion_prefix(target), f"{inner}{name}!/", depth + 1, limits,
                        partner, remote_path, expansion, budget, written)


def _object_is_zip(s3: Any, bucket: str, key: str) -> bool:
    head = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-3")["Body"].read()
    return head in _ZIP_MAGIC


def _clear_prefix(s3: Any, bucket: str, prefix: str) -> None:
    """Entries of an earlier version of the archive must not mix with this one (the bucket keeps them)."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        _delete(s3, bucket, [o["Key"] for o in page.get("Contents", [])])


def _delete(s3: Any, bucket: str, keys: list[str]) -> None:
    """Delete, and fail loudly if S3 refused any key (DeleteObjects reports refusals per key)."""
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        if batch:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise ClientError({"Error": {"Code": first.get("Code", "DeleteFailed"),
                                             "Message": f"{len(response['Errors'])} keys not deleted, first "
                                                        f"{first.get('Key')}: {first.get('Message')}"}},
                                  "DeleteObjects")


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


