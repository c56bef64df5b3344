"""The code location: one set of assets (and, later, sensors and checks) per partner in partners.yaml."""

from __future__ import annotations

from dagster import Definitions

from partner_ingest.config import IngestConfig, load_config
from partner_ingest.defs.assets import build_files_asset
from partner_ingest.defs.resources import default_resources


def build_definitions(config: IngestConfig) -> Definitions:
    assets = [build_files_asset(partner, config.landing) for partner in config.partners]
    return Definitions(assets=assets, resources=default_resources())


defs = build_definitions(load_config())
