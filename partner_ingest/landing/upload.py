"""Stream a file object into S3 with boto3's transfer manager and record what landed.

``upload_fileobj`` + ``TransferConfig`` handle multipart (above ``multipart_threshold``), part
concurrency, retries and — when the source raises or a part fails — aborting the multipart upload,
so nothing partial ever shows under the final key. The SHA-256 is only known at the end of the
stream, so it is written as an object tag once the upload completed and read back to verify.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.errors import LandingError

SHA256_TAG = "sha256"
MiB = 1024 * 1024


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


@dataclass(frozen=True)
class LandedObject:
    bucket: str
    key: str
    version_id: str | None
    size: int
    sha256: str


def _client_error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    cause = exc.__cause__ or exc.__context__
    return _client_error_code(cause) if cause is not None else ""


def landing_error(exc: BaseException, *, partner: str, path: str, bucket: str, key: str) -> LandingError:
    code = _client_error_code(exc)
    if code == "NoSuchBucket":
        return LandingError(f"landing bucket '{bucket}' does not exist", partner=partner, path=path,
                            action="create the bucket or fix landing.bucket / PARTNER_INGEST_BUCKET")
    if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return LandingError(f"S3 refused writing s3://{bucket}/{key} ({code})", partner=partner, path=path,
                            action="grant the run role s3:PutObject and s3:PutObjectTagging on the landing prefix")
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


def upload_stream(s3: Any, source: BinaryIO, *, bucket: str, key: str, metadata: dict[str, str],
                  config: TransferConfig, sha256_of_source: Callable[[], tuple[int, str]]) -> LandedObject:
    """Upload ``source`` (read to its end) with its SHA-256 as a tag, and confirm what S3 holds.

    Below the multipart threshold the file is in memory anyway (boto3 would read it whole too): one
    ``PutObject`` carries the tag and ``ChecksumSHA256``, which S3 verifies on arrival — one request
    instead of three, which is what small files are made of. Above it, boto3's transfer manager
    uploads the parts; the tag follows once the digest is known, then a ``HEAD`` confirms the size.
    ``sha256_of_source`` is called after the stream is consumed and returns ``(size, hexdigest)``.
    Exceptions from the source or S3 propagate unchanged; callers translate them.
    """
    head = source.read(config.multipart_threshold)
    if len(head) < config.multipart_threshold:
        size, digest = sha256_of_source()
        response = s3.put_object(
            Bucket=bucket, Key=key, Body=head, Metadata=metadata, Tagging=f"{SHA256_TAG}={digest}",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode())
        return LandedObject(bucket=bucket, key=key, version_id=response.get("VersionId"), size=size, sha256=digest)
    s3.upload_fileobj(_Prefixed(head, source), bucket, key, ExtraArgs={"Metadata": metadata}, Config=config)
    size, digest = sha256_of_source()
    head_response = s3.head_object(Bucket=bucket, Key=key)
    version_id = head_response.get("VersionId")
    tag_args = {"Bucket": bucket, "Key": key, "Tagging": {"TagSet": [{"Key": SHA256_TAG, "Value": digest}]}}
    if version_id:
        tag_args["VersionId"] = version_id
    s3.put_object_tagging(**tag_args)
    if head_response["ContentLength"] != size:
        raise LandingError(f"s3://{bucket}/{key} holds {head_response['ContentLength']} bytes, {size} were sent",
                           action="re-run the file; if it repeats, check for another writer on this key")
    return LandedObject(bucket=bucket, key=key, version_id=version_id, size=size, sha256=digest)


def read_sha256_tag(s3: Any, bucket: str, key: str, version_id: str | None = None) -> str | None:
    args = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    try:
        tags = s3.get_object_tagging(**args)["TagSet"]
    except (ClientError, BotoCoreError):
        return None
    return next((t["Value"] for t in tags if t["Key"] == SHA256_TAG), None)
