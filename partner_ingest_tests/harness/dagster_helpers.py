"""Run partner assets through Dagster's own APIs on a real (ephemeral) instance."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from partner_ingest.config import LandingConfig, PartnerConfig
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.assets import build_files_asset
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.resources import default_resources
from partner_ingest.defs.tags import RANGE_END_TAG, RANGE_START_TAG
from partner_ingest.ingest.partition_keys import encode_partition_key


def land(partner: PartnerConfig, bucket: str, relative_paths: Sequence[str],
         instance: DagsterInstance | None = None, resources: dict | None = None,
         ) -> tuple[ExecuteInProcessResult, DagsterInstance, list[str]]:
    """Register the files as partitions and materialize them in one ranged run."""
    instance = instance or DagsterInstance.ephemeral()
    keys = [encode_partition_key(p) for p in relative_paths]
    instance.add_dynamic_partitions(partitions_name(partner), keys)
    asset = build_files_asset(partner, LandingConfig(bucket=bucket))
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]} if len(keys) > 1 else {}
    result = materialize([asset], instance=instance, resources=resources or default_resources(),
                         selection=[files_asset_key(partner)],
                         partition_key=keys[0] if len(keys) == 1 else None, tags=tags, raise_on_error=False)
    return result, instance, keys
