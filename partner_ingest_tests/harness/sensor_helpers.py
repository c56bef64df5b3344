"""Evaluate a partner's sensor on a real Dagster instance and carry out what it asks, as the daemon would."""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import DagsterInstance, DeleteDynamicPartitionsRequest, build_sensor_context, materialize

from partner_ingest.config import IngestConfig
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.code_location import build_definitions
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.resources import default_resources
from partner_ingest.defs.sensors import sensor_name
from partner_ingest.defs.tags import RANGE_END_TAG, RANGE_START_TAG


@dataclass
class SensorDriver:
    config: IngestConfig
    instance: DagsterInstance
    cursor: str | None = None
    launched: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.defs = build_definitions(self.config)
        self.partner = self.config.partners[0]
        self.sensor = self.defs.resolve_sensor_def(sensor_name(self.partner))
        self.asset = self.defs.resolve_assets_def(files_asset_key(self.partner))

    def tick(self, *, advance_cursor: bool = True, apply_partitions: bool = True):
        with build_sensor_context(instance=self.instance, instance_ref=self.instance.get_ref(),
                                  definitions=self.defs, cursor=self.cursor,
                                  resources=default_resources()) as context:
            data = self.sensor.evaluate_tick(context)
        for request in (data.dynamic_partitions_requests or []) if apply_partitions else []:
            if isinstance(request, DeleteDynamicPartitionsRequest):
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
            else:
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        if advance_cursor:
            self.cursor = data.cursor
        return data

    def launch(self, run_requests) -> list:
        """Run each request in process, like the daemon's launcher would, and return the results."""
        results = []
        for request in run_requests:
            # The resolved asset already carries the code location's resources.
            results.append(materialize([self.asset], instance=self.instance, selection=request.asset_selection,
                                       partition_key=request.partition_key, tags=dict(request.tags),
                                       raise_on_error=False))
        self.launched.extend(results)
        return results

    def keys_of(self, request) -> list[str]:
        if request.partition_key:
            return [request.partition_key]
        start = request.tags[RANGE_START_TAG]
        end = request.tags[RANGE_END_TAG]
        keys = self.instance.get_dynamic_partitions(partitions_name(self.partner))
        return list(keys[keys.index(start): keys.index(end) + 1])
