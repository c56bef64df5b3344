"""The code location loads, without any server, the way Dagster loads it (a definitions smoke test like
dagster-open-platform's): from the documented partners.example.yaml and from a two-partner config, every
asset, check, sensor, partition set and resource resolves, and the asset job builds."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml
from dagster import Definitions

from partner_ingest.config import BUCKET_ENV, CONFIG_ENV, IngestConfig, RunLimits, load_config, parse_config
from partner_ingest.defs.asset_keys import contents_asset_key, expansion_check_key, files_asset_key, object_check_key
from partner_ingest.defs.code_location import build_definitions
from partner_ingest.defs.partitions import archives_partitions_name, partitions_name
from partner_ingest.defs.pools import partner_pool
from partner_ingest.defs.resources import default_resources
from partner_ingest.defs.sensors import sensor_name
from partner_ingest_tests.harness.paths import EXAMPLE_PARTNERS


def _example() -> IngestConfig:
    return load_config(EXAMPLE_PARTNERS)


def _two_partners() -> IngestConfig:
    """The example partner next to a second one that differs where the definitions do: no archives,
    a done marker instead of a minimum age, a stopped sensor."""
    raw = yaml.safe_load(EXAMPLE_PARTNERS.read_text())
    second = {**raw["partners"][0], "name": "globex", "host": "sftp.globex.example",
              "landing_prefix": "partners/globex/", "stability": {"done_marker": ".done"},
              "sensor": {"running": False}, "unzip": False, "after_landing": "leave"}
    second.pop("archive_dir", None)
    second.pop("unzip_limits", None)
    return parse_config({**raw, "partners": [raw["partners"][0], second]})


def _assert_loads(defs: Definitions, config: IngestConfig) -> None:
    Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    wanted_assets, wanted_checks = set(), set()
    for partner in config.partners:
        wanted_assets.add(files_asset_key(partner))
        wanted_checks.add(object_check_key(partner))
        if partner.unzip:
            wanted_assets.add(contents_asset_key(partner))
            wanted_checks.add(expansion_check_key(partner))
        files = defs.resolve_assets_def(files_asset_key(partner))
        assert graph.get(files_asset_key(partner)).partitions_def.name == partitions_name(partner)
        if partner.unzip:  # only archives are partitions of the contents asset
            assert graph.get(contents_asset_key(partner)).partitions_def.name == archives_partitions_name(partner)
        assert {node.pool for node in files.node_def.iterate_op_defs()} == {partner_pool(partner)}
        assert defs.resolve_sensor_def(sensor_name(partner)).name == sensor_name(partner)
    assert set(defs.resolve_all_asset_keys()) == wanted_assets
    assert set(graph.asset_check_keys) == wanted_checks
    assert {s.name for s in repository.sensor_defs} == \
        {sensor_name(p) for p in config.partners} | {"partner_notifications_sensor"}
    assert set(defs.resources or {}) == set(default_resources())
    for key in wanted_assets:  # each asset can be launched (Dagster makes one implicit job per partition set)
        assert key in defs.resolve_implicit_job_def_def_for_assets([key]).asset_layer.selected_asset_keys


@pytest.mark.parametrize("config", [_example, _two_partners], ids=["example", "two-partners"])
def test_the_code_location_loads_every_asset_check_and_sensor(config, monkeypatch):
    monkeypatch.delenv(BUCKET_ENV, raising=False)
    loaded = config()
    _assert_loads(build_definitions(loaded), loaded)


def test_the_module_dagster_loads_reads_the_configured_partners(monkeypatch):
    """``partner_ingest.definitions`` (what `dagster dev -m` and the code server import) with
    ``PARTNER_INGEST_CONFIG`` pointing at the example."""
    monkeypatch.delenv(BUCKET_ENV, raising=False)
    monkeypatch.setenv(CONFIG_ENV, str(EXAMPLE_PARTNERS))
    monkeypatch.delitem(sys.modules, "partner_ingest.definitions", raising=False)
    module = importlib.import_module("partner_ingest.definitions")
    monkeypatch.delitem(sys.modules, "partner_ingest.definitions")  # loaded from this environment only
    _assert_loads(module.defs, _example())


def test_the_runs_s3_client_pools_enough_connections_for_its_parallel_files(monkeypatch):
    """A default run moves 4 x 8 files at once; botocore's pool of 10 would open a new connection per
    request beyond that. The client keeps dagster-aws's retry configuration."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    resource = default_resources()["s3"].resource_fn(None)
    client = resource.get_client()
    defaults = RunLimits()
    assert client.meta.config.max_pool_connections >= defaults.max_connections * defaults.files_per_connection + 4
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 6}


def test_a_run_executes_its_one_step_in_the_run_worker_itself():
    """A partner's run is one step; the multiprocess executor would start it in a second Python (3.7-4.0 s
    after the run here)."""
    config = _example()
    defs = build_definitions(config)
    job = defs.resolve_implicit_job_def_def_for_assets([files_asset_key(config.partners[0])])
    assert job.executor_def.name == "in_process"
    assert len(job.nodes) == 1
