"""The code location Dagster loads: every partner in partners.yaml (``PARTNER_INGEST_CONFIG``)."""

from partner_ingest.config import load_config
from partner_ingest.defs.code_location import build_definitions

defs = build_definitions(load_config())
