"""Stream a file object into S3 with boto3's transfer manager and record what landed.

``upload_fileobj`` + ``TransferConfig`` handle multipart (above ``multipart_threshold``), part
concurrency, retries and — when the source raises or a part fails — aborting the multipart upload,
so nothing partial ever shows under the final key. The SHA-256 is only known at the end of the
stream, so it is written as an object tag once the upload completed — on the version that upload
created, recognised by a per-attempt nonce in its metadata, never on whatever is newest — and read
back to verify.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3transfer.utils import ChunksizeAdjuster

from partner_ingest.errors import LandingError
from partner_ingest.s3.errors import error_code, is_not_found

SHA256_TAG = "sha256"
MiB = 1024 * 1024
MAX_OBJECT_SIZE = 5 * 1024**4  # S3's largest object, 5 TiB
# User metadata naming one upload attempt, so the version that attempt created can be told from others.
ATTEMPT_METADATA = "landing-attempt"
# Versions of the key looked at when another writer got in between; more than that is not a race but a
# second pipeline writing the same key, and is reported as such.
MAX_VERSIONS_SEARCHED = 20


def transfer_config(*, multipart_threshold: int = 16 * MiB, chunk_size: int = 8 * MiB,
                    max_concurrency: int = 4) -> TransferConfig:
    """Bounded memory: at most ``max_in_memory_upload_chunks`` parts are held at once."""
    config = TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=chunk_size,
        max_concurrency=max_concurrency,
        use_threads=True,
        preferred_transfer_client="classic",
    )
    # Not a constructor argument of boto3's TransferConfig, but read by s3transfer's manager.
    config.max_in_memory_upload_chunks = max_concurrency
    return config


def sized_transfer_config(config: TransferConfig, expected_size: int | None) -> TransferConfig:
    """``config`` with the part size s3transfer itself picks for a file of ``expected_size`` bytes.

    s3transfer only adapts the part size when it knows the size, and our source is a stream (not
    seekable), so it keeps ``multipart_chunksize`` and fails at part 10,001 — after part size x 10,000
    bytes (78 GiB at 8 MiB) were already read. ``ChunksizeAdjuster`` is the code s3transfer runs for
    files of known size (doubling until the parts fit), used here so both agree.
    """
    if expected_size is None:
        return config
    part_size = ChunksizeAdjuster().adjust_chunksize(config.multipart_chunksize, expected_size)
    if part_size == config.multipart_chunksize:
        return config
    sized = copy.copy(config)
    sized.multipart_chunksize = part_size
    # Parts held in memory stay within the budget the default part size gives (4 x 8 MiB): a 4 TiB file
    # with 512 MiB parts uploads one part at a time instead of holding 2 GiB.
    budget = config.multipart_chunksize * max(getattr(config, "max_in_memory_upload_chunks", 1), 1)
    parts = max(1, min(config.max_request_concurrency, budget // part_size))
    sized.max_request_concurrency = parts
    sized.max_in_memory_upload_chunks = parts
    return sized


@dataclass(frozen=True)
class LandedObject:
    bucket: str
    key: str
    version_id: str | None
    size: int
    sha256: str


def landing_error(exc: BaseException, *, partner: str, path: str, bucket: str, key: str) -> LandingError:
    code = error_code(exc)
    if code == "NoSuchBucket":
        return LandingError(f"landing bucket '{bucket}' does not exist", partner=partner, path=path,
                            action="create the bucket or fix landing.bucket / PARTNER_INGEST_BUCKET")
    if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return LandingError(f"S3 refused access to s3://{bucket}/{key} ({code})", partner=partner, path=path,
                            action="grant the run role s3:PutObject, s3:GetObject, s3:GetObjectVersion, "
                                   "s3:PutObjectTagging, s3:PutObjectVersionTagging, s3:GetObjectTagging and "
                                   "s3:GetObjectVersionTagging on the landing prefix, and s3:ListBucketVersions on "
                                   "the bucket")
    return LandingError(f"upload to s3://{bucket}/{key} failed: {type(exc).__name__}: {exc}",
                        partner=partner, path=path,
                        action="the file was not landed; the run can be retried once S3 is reachable")


class _Prefixed:
    """``head`` (already read) followed by the rest of ``source``, as one file object."""

    def __init__(self, head: bytes, source: BinaryIO) -> None:
        self._head = memoryview(head)
        self._source = source

    def read(self, n: int = -1) -> bytes:
        if self._head:
            take = len(self._head) if n is None or n < 0 else min(n, len(self._head))
            piece = bytes(self._head[:take])
            # Release the first read's buffer as soon as it is handed over, not at the end of the upload.
            self._head = self._head[take:] if take < len(self._head) else memoryview(b"")
            if n is not None and 0 <= n == take:
                return piece
            rest = self._source.read(-1 if n is None or n < 0 else n - take)
            return piece + rest
        return self._source.read(n)


def _where(metadata: dict[str, str], key: str) -> dict[str, str | None]:
    """Partner and file for an error, from the object's own metadata (``upload_stream`` has no other)."""
    return {"partner": metadata.get("partner"), "path": metadata.get("source-path", key)}


def upload_stream(s3: Any, source: BinaryIO, *, bucket: str, key: str, metadata: dict[str, str],
                  config: TransferConfig, sha256_of_source: Callable[[], tuple[int, str]],
                  expected_size: int | None = None) -> LandedObject:
    """Upload ``source`` (read to its end) with its SHA-256 as a tag, and confirm what S3 holds.

    Below the multipart threshold the file is in memory anyway (boto3 would read it whole too): one
    ``PutObject`` carries the tag and ``ChecksumSHA256``, which S3 verifies on arrival — one request
    instead of three, which is what small files are made of. Above it, boto3's transfer manager
    uploads the parts; the tag follows once the digest is known, on the version this upload created
    (see ``_version_created``), whose size is then confirmed.
    ``expected_size`` (the remote file's size, when known) sizes the parts so the file fits S3's
    10,000 parts, and refuses a file above S3's object limit before a byte is read.
    ``sha256_of_source`` is called after the stream is consumed and returns ``(size, hexdigest)``.
    Exceptions from the source or S3 propagate unchanged (callers translate them); a file S3 cannot
    hold, or an object that is not what was sent, is a LandingError naming partner and file.
    """
    if expected_size is not None and expected_size > MAX_OBJECT_SIZE:
        raise LandingError(f"the file is {expected_size} bytes, more than S3's largest object "
                           f"(5 TiB, {MAX_OBJECT_SIZE} bytes), so it cannot land at s3://{bucket}/{key}",
                           **_where(metadata, key),
                           action="nothing was read or written; ask the partner to split the file, or exclude it "
                                  "in partners.yaml")
    config = sized_transfer_config(config, expected_size)
    head = source.read(config.multipart_threshold)
    if len(head) < config.multipart_threshold:
        size, digest = sha256_of_source()
        response = s3.put_object(
            Bucket=bucket, Key=key, Body=head, Metadata=metadata, Tagging=f"{SHA256_TAG}={digest}",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode())
        return LandedObject(bucket=bucket, key=key, version_id=response.get("VersionId"), size=size, sha256=digest)
    attempt = secrets.token_hex(16)
    s3.upload_fileobj(_Prefixed(head, source), bucket, key, Config=config,
                      ExtraArgs={"Metadata": {**metadata, ATTEMPT_METADATA: attempt}})
    size, digest = sha256_of_source()
    ours = _version_created(s3, bucket, key, attempt, metadata)
    version_id = ours.get("VersionId")
    if ours["ContentLength"] != size:  # checked before tagging: a digest tag vouches for the bytes under it
        raise LandingError(f"s3://{bucket}/{key} holds {ours['ContentLength']} bytes, {size} were sent",
                           **_where(metadata, key),
                           action="re-run the file; if it repeats, check for another writer on this key")
    tag_args = {"Bucket": bucket, "Key": key, "Tagging": {"TagSet": [{"Key": SHA256_TAG, "Value": digest}]}}
    if version_id:
        tag_args["VersionId"] = version_id
    s3.put_object_tagging(**tag_args)
    return LandedObject(bucket=bucket, key=key, version_id=version_id, size=size, sha256=digest)


def _head(s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | None:
    args = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
    try:
        return s3.head_object(**args)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _version_created(s3: Any, bucket: str, key: str, attempt: str, metadata: dict[str, str]) -> dict[str, Any]:
    """The ``HEAD`` of the version our multipart upload created, found by its attempt nonce.

    ``upload_fileobj`` returns nothing, and the newest version may already be another writer's. The
    upload carries a random nonce in its user metadata, so the version it created is recognised by
    content, not by timing: in the usual case the newest version has it (one ``HEAD``, as before);
    otherwise the newest versions of this exact key are looked at, at most ``MAX_VERSIONS_SEARCHED``.
    Chosen over botocore's ``after-call`` hook on CompleteMultipartUpload (which does see the
    VersionId) because that hook is registered on a client shared by the run's upload threads, would
    see every upload's completion and would have to be matched to ours by key alone; the nonce needs
    no shared state and also works on a client it did not create. The race path needs
    s3:ListBucketVersions; on an unversioned bucket the other writer's object replaced ours, which is
    reported rather than tagged.
    """
    latest = _head(s3, bucket, key)
    if latest is not None and latest.get("Metadata", {}).get(ATTEMPT_METADATA) == attempt:
        return latest
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key, MaxKeys=MAX_VERSIONS_SEARCHED)
    # "null" is the version an unversioned (or suspended) bucket writes, replaced by every later write: if it
    # were ours it would be the newest, already looked at.
    skip = {"null", latest.get("VersionId") if latest is not None else None}
    for version in listing.get("Versions", []):
        # The prefix also matches longer keys (an archive's expansion); they sort after the key itself.
        if version["Key"] != key or version["VersionId"] in skip:
            continue
        candidate = _head(s3, bucket, key, version["VersionId"])
        if candidate is not None and candidate.get("Metadata", {}).get(ATTEMPT_METADATA) == attempt:
            return candidate
    raise LandingError(f"another writer replaced s3://{bucket}/{key} while it was uploaded, and the version this "
                       f"upload created is not among its {MAX_VERSIONS_SEARCHED} newest versions (or the bucket is "
                       "not versioned)", **_where(metadata, key),
                       action="find and stop the other writer on this key (only this pipeline should write under "
                              "the landing prefix), then re-run the file; keep the landing bucket versioned")


def read_sha256_tag(s3: Any, bucket: str, key: str, version_id: str | None = None) -> str | None:
    """The object's ``sha256`` tag, or None when it has none or the object (version) does not exist.

    Only "not found" reads as None. A refusal (AccessDenied) or an unreachable S3 is raised: read
    as "no tag" it would make a landed file look unlanded, land it again, and hide the permission
    problem. Callers translate with ``landing_error``.
    """
    args = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    try:
        tags = s3.get_object_tagging(**args)["TagSet"]
    except ClientError as exc:
        # MethodNotAllowed: the version is a delete marker, so no object holds a tag there.
        if is_not_found(exc) or error_code(exc) == "MethodNotAllowed":
            return None
        raise
    return next((t["Value"] for t in tags if t["Key"] == SHA256_TAG), None)
