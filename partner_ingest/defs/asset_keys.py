"""The names Dagster knows a partner's assets and checks by: one definition for assets, checks, sensors,
tests and benchmarks alike."""

from dagster import AssetCheckKey, AssetKey

from partner_ingest.config import PartnerConfig

OBJECT_CHECK = "landed_object_matches"
EXPANSION_CHECK = "archive_expanded_completely"


def files_asset_key(partner: PartnerConfig) -> AssetKey:
    return AssetKey(["partners", partner.name, "files"])


def contents_asset_key(partner: PartnerConfig) -> AssetKey:
    return AssetKey(["partners", partner.name, "archive_contents"])


def object_check_key(partner: PartnerConfig) -> AssetCheckKey:
    return AssetCheckKey(files_asset_key(partner), OBJECT_CHECK)


def expansion_check_key(partner: PartnerConfig) -> AssetCheckKey:
    return AssetCheckKey(contents_asset_key(partner), EXPANSION_CHECK)
