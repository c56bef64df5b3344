"""Reading back what a run left: the keys in the bucket, every version's key, a failed run's message
and a partition's materializations."""

from __future__ import annotations

from dagster import AssetMaterialization, DagsterInstance, ExecuteInProcessResult

from partner_ingest.config import PartnerConfig
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.ingest.partition_keys import encode_partition_key


def object_keys(s3, bucket: str) -> list[str]:
    """Every current object's key, sorted (S3 lists in that order too), over as many pages as it takes."""
    return sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in page.get("Contents", []))


def version_keys(s3, bucket: str) -> list[str]:
    """The key of every version in the bucket (a key once per version), in S3's order."""
    return [o["Key"] for o in s3.list_object_versions(Bucket=bucket).get("Versions", [])]


def failure_text(result: ExecuteInProcessResult) -> str:
    """The message of the run's first step failure; the run must have failed."""
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run was expected to fail"
    return failures[0].event_specific_data.error.message


def materializations(instance: DagsterInstance, partner: PartnerConfig, relative_path: str,
                     limit: int = 100) -> list[AssetMaterialization]:
    """The file's materializations among the asset's ``limit`` newest, newest first."""
    records = instance.fetch_materializations(files_asset_key(partner), limit=limit).records
    key = encode_partition_key(relative_path)
    return [r.asset_materialization for r in records if r.partition_key == key]


def latest_materialization(instance: DagsterInstance, partner: PartnerConfig,
                           relative_path: str) -> AssetMaterialization:
    return materializations(instance, partner, relative_path)[0]
