"""``s3.upload`` against moto over HTTP: the version an upload created is the one tagged and recorded,
with a second writer hooked onto CompleteMultipartUpload (the server-free cases are in
``partner_ingest_tests/unit/test_upload.py``).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets

import boto3
import pytest

from partner_ingest.errors import LandingError
from partner_ingest.s3 import upload
from partner_ingest.s3.upload import SHA256_TAG, read_sha256_tag, transfer_config
from partner_ingest_tests.harness.files import MiB

METADATA = {"partner": "acme", "source-path": "/outgoing/big.bin"}


class _Hashed(io.BytesIO):
    """A source like transfer.py's: it reports (size, sha256) of what was read once it is consumed."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._hash = hashlib.sha256()
        self._count = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self._hash.update(data)
        self._count += len(data)
        return data

    def result(self) -> tuple[int, str]:
        return self._count, self._hash.hexdigest()


def _version(s3, bucket: str, key: str, version_id: str) -> tuple[bytes, dict[str, str]]:
    body = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"].read()
    tags = s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=version_id)["TagSet"]
    return body, {t["Key"]: t["Value"] for t in tags}


def _race(s3, bucket: str, key: str, body: bytes) -> list[str]:
    """Another writer puts a version of the same key right after our multipart upload completes."""
    intruder = boto3.client("s3")
    versions: list[str] = []

    def intrude(**_kwargs) -> None:
        versions.append(intruder.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId", ""))

    s3.meta.events.register("after-call.s3.CompleteMultipartUpload", intrude)
    return versions


def test_the_version_our_multipart_upload_created_is_tagged_and_recorded(s3, bucket):
    key = "partners/acme/race.bin"
    data = os.urandom(20 * MiB)
    intruder_body = os.urandom(len(data))  # same size: a size check alone cannot tell the versions apart
    intruder_versions = _race(s3, bucket, key, intruder_body)
    source = _Hashed(data)
    landed = upload.upload_stream(s3, source, bucket=bucket, key=key, metadata=METADATA, config=transfer_config(),
                                  sha256_of_source=source.result)
    assert len(intruder_versions) == 1
    intruder_version = intruder_versions[0]
    assert s3.head_object(Bucket=bucket, Key=key)["VersionId"] == intruder_version  # the race did happen
    digest = hashlib.sha256(data).hexdigest()
    assert landed.version_id != intruder_version and landed.sha256 == digest and landed.size == len(data)
    body, tags = _version(s3, bucket, key, landed.version_id)
    assert body == data and tags == {SHA256_TAG: digest}
    assert _version(s3, bucket, key, intruder_version) == (intruder_body, {})


def test_upload_overwritten_in_an_unversioned_bucket_fails_loudly(s3):
    bucket = f"plain-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=bucket)
    key = "partners/acme/race.bin"
    data = os.urandom(17 * MiB)
    _race(s3, bucket, key, os.urandom(len(data)))
    source = _Hashed(data)
    with pytest.raises(LandingError) as info:
        upload.upload_stream(s3, source, bucket=bucket, key=key, metadata=METADATA, config=transfer_config(),
                             sha256_of_source=source.result)
    assert "another writer" in str(info.value) and "partner 'acme'" in str(info.value)
    assert s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == []  # the other writer's object is untouched


def test_a_missing_object_on_moto_reads_as_no_tag(s3, bucket):
    assert read_sha256_tag(s3, bucket, "partners/acme/never-landed.csv") is None


def test_the_search_for_our_version_is_bounded(s3, bucket):
    key = "partners/acme/busy.bin"
    intruder = boto3.client("s3")

    def flood(**_kwargs) -> None:
        for n in range(upload.MAX_VERSIONS_SEARCHED):
            intruder.put_object(Bucket=bucket, Key=key, Body=f"intruder {n}".encode())

    s3.meta.events.register("after-call.s3.CompleteMultipartUpload", flood)
    source = _Hashed(os.urandom(17 * MiB))
    with pytest.raises(LandingError) as info:
        upload.upload_stream(s3, source, bucket=bucket, key=key, metadata=METADATA, config=transfer_config(),
                             sha256_of_source=source.result)
    assert f"not among its {upload.MAX_VERSIONS_SEARCHED} newest versions" in str(info.value)
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert all(s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=v["VersionId"])["TagSet"] == []
               for v in versions)  # nothing tagged on a guess
