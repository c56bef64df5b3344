"""``s3.upload`` without a server: part sizes for huge files (a recording client) and tag read errors
(botocore's Stubber). The version an upload created, raced by a second writer, is checked against moto
in ``partner_ingest_tests/integration/test_upload.py``.
"""

from __future__ import annotations

import io

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from partner_ingest.errors import LandingError
from partner_ingest.s3 import upload
from partner_ingest.s3.upload import landing_error, read_sha256_tag, transfer_config
from partner_ingest_tests.harness.files import GiB, MiB, TiB

METADATA = {"partner": "acme", "source-path": "/outgoing/big.bin"}


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
