"""``landing.upload``: part sizes for huge files, the version an upload created, and tag read errors.

Part sizes and tag errors are checked without servers (a recording client, botocore's Stubber); the
version race runs against moto over HTTP with a second writer hooked onto CompleteMultipartUpload.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from partner_ingest.errors import LandingError
from partner_ingest.s3 import upload
from partner_ingest.s3.upload import SHA256_TAG, landing_error, read_sha256_tag, transfer_config

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
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


class _Untouchable:
    def read(self, n: int = -1) -> bytes:
        raise AssertionError("the source was read")


class _StopUpload(Exception):
    pass


class _RecordingClient:
    """Records the TransferConfig ``upload_fileobj`` is given, then stops: no server, no real data."""

    def __init__(self) -> None:
        self.config = None

    def upload_fileobj(self, fileobj, bucket, key, ExtraArgs=None, Callback=None, Config=None):
        self.config = Config
        raise _StopUpload

    def __getattr__(self, name):
        raise AssertionError(f"S3 was called: {name}")


@pytest.mark.parametrize(("size", "part_size"), [(1 * GiB, 8 * MiB), (100 * GiB, 16 * MiB), (4 * TiB, 512 * MiB),
                                                (5 * TiB, 1 * GiB)])
def test_part_size_grows_with_the_expected_size(size, part_size):
    client = _RecordingClient()
    config = transfer_config()
    head = io.BytesIO(b"\0" * (16 * MiB))  # exactly the multipart threshold: boto3 is called, nothing more read
    with pytest.raises(_StopUpload):
        upload.upload_stream(client, head, bucket="b", key="k", metadata=METADATA, config=config,
                             sha256_of_source=lambda: (0, ""), expected_size=size)
    assert client.config.multipart_chunksize == part_size
    # Parts in memory stay within the default budget (4 x 8 MiB): larger parts, fewer of them at once.
    parts = max(1, min(4, (32 * MiB) // part_size))
    assert (client.config.max_in_memory_upload_chunks, client.config.max_request_concurrency) == (parts, parts)
    assert config.multipart_chunksize == 8 * MiB  # the caller's config is left as it was
    assert -(-size // part_size) <= 10_000


def test_unknown_size_keeps_the_configured_part_size():
    client = _RecordingClient()
    with pytest.raises(_StopUpload):
        upload.upload_stream(client, io.BytesIO(b"\0" * (16 * MiB)), bucket="b", key="k", metadata=METADATA,
                             config=transfer_config(), sha256_of_source=lambda: (0, ""), expected_size=None)
    assert client.config.multipart_chunksize == 8 * MiB


def test_file_above_the_s3_object_limit_is_refused_before_reading():
    with pytest.raises(LandingError) as info:
        upload.upload_stream(_RecordingClient(), _Untouchable(), bucket="b", key="partners/acme/big.bin",
                             metadata=METADATA, config=transfer_config(), sha256_of_source=lambda: (0, ""),
                             expected_size=5 * TiB + 1)
    text = str(info.value)
    assert "5497558138881 bytes" in text and "5 TiB" in text
    assert "partner 'acme'" in text and "/outgoing/big.bin" in text and "What to do" in text


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


def _stubbed_client():
    return boto3.client("s3", region_name="us-east-1", endpoint_url="https://s3.invalid",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_access_denied_reading_the_tag_is_raised_not_read_as_no_tag():
    client = _stubbed_client()
    with Stubber(client) as stub:
        stub.add_client_error("get_object_tagging", service_error_code="AccessDenied",
                              service_message="Access Denied", http_status_code=403)
        with pytest.raises(ClientError) as info:
            read_sha256_tag(client, "landing", "partners/acme/a.csv")
    error = landing_error(info.value, partner="acme", path="/outgoing/a.csv", bucket="landing",
                          key="partners/acme/a.csv")
    assert "AccessDenied" in str(error) and "s3:GetObjectTagging" in str(error) and "partner 'acme'" in str(error)


@pytest.mark.parametrize(("code", "status"), [("NoSuchKey", 404), ("NoSuchVersion", 404)])
def test_a_missing_object_or_version_reads_as_no_tag(code, status):
    client = _stubbed_client()
    with Stubber(client) as stub:
        stub.add_client_error("get_object_tagging", service_error_code=code, http_status_code=status)
        assert read_sha256_tag(client, "landing", "partners/acme/a.csv", "v1") is None


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
