"""Run and materialization tag names, each spelled once.

The three ``dagster/...`` names are Dagster's own: a run carrying both range tags covers that
contiguous range of partitions (``RunRequest(partition_key_range=...)`` is ignored), and the
data-version tag on a materialization is what the sensor compares with a file's version. Dagster
defines them only in private modules (``dagster._core.storage.tags``, ``dagster._core.definitions
.data_version``), so they are written out here rather than imported from there.

``partner`` and ``partner_ingest/files`` are ours: sensor runs carry both (the second is the number
of files the run was asked for, for filtering runs in the UI). The deploy's run-tag concurrency limit
and the ECS launcher's tag propagation (``deploy/ecs/dagster.yaml``, YAML, so it spells the name
itself) key on ``partner``.
"""

PARTNER_TAG = "partner"
FILE_COUNT_TAG = "partner_ingest/files"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DATA_VERSION_TAG = "dagster/data_version"
