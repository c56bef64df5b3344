"""What ``partner-ingest landed`` prints: the objects under each partner's landing prefix, with the size
and the ``sha256`` tag each landing wrote, through boto3 (so no AWS CLI is needed, in the demo or on AWS).

A listing only: it reads S3 and never the partner. A failure names the bucket and what to check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.config import IngestConfig, load_config
from partner_ingest.errors import ConfigError, LandingError
from partner_ingest.s3.upload import read_sha256_tag

# Each object costs one GetObjectTagging call; a listing is for a look, not an inventory.
DEFAULT_LIMIT = 200


@dataclass(frozen=True)
class LandedObject:
    partner: str
    key: str
    size: int
    last_modified: datetime
    sha256: str | None


def landed_objects(config: IngestConfig, s3: Any, names: Iterable[str] = (), limit: int = DEFAULT_LIMIT
                   ) -> Iterator[LandedObject]:
    """Up to ``limit`` objects per partner, in key order; ConfigError for an unknown partner name,
    LandingError when S3 refuses or cannot be reached."""
    bucket = config.landing.bucket
    partners = [config.partner(name) for name in names] if names else list(config.partners)
    for partner in partners:
        prefix = partner.landing_prefix.rstrip("/") + "/"
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            items = (item for page in pages for item in page.get("Contents", []))
            for item in islice(items, limit):
                yield LandedObject(partner.name, item["Key"], int(item["Size"]), item["LastModified"],
                                   read_sha256_tag(s3, bucket, item["Key"]))
        except (ClientError, BotoCoreError) as exc:
            raise LandingError(
                f"cannot list s3://{bucket}/{prefix}: {exc}", partner=partner.name,
                action="check that the bucket exists, that AWS credentials and region (or AWS_ENDPOINT_URL) are "
                       "set, and that they allow s3:ListBucket and s3:GetObjectTagging on the prefix") from None


def running_demo(state_dir: Path) -> tuple[Path, str]:
    """The running demo's partners.yaml and its embedded AWS endpoint (from the demo's endpoints.json)."""
    endpoints_file = state_dir / "endpoints.json"
    try:
        endpoint_url = json.loads(endpoints_file.read_text(encoding="utf-8"))["aws_endpoint_url"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"no running demo found at {state_dir} ({endpoints_file.name} missing or unreadable)",
                          action="start it with `bash scripts/demo.sh` (or pass the demo's --state-dir)") from None
    return state_dir / "partners.yaml", endpoint_url


def demo_config_and_client(state_dir: Path) -> tuple[IngestConfig, Any]:
    """The running demo's partners.yaml and an S3 client for its embedded endpoint."""
    from partner_ingest.demo.object_store import isolated_client

    partners_yaml, endpoint_url = running_demo(state_dir)
    return load_config(partners_yaml), isolated_client("s3", endpoint_url)
