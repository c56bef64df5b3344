"""A partner's dynamic partition sets: one partition per remote file, and one per landed archive.

Archive contents have their own set so that only archives count as its partitions: with the files' set,
every CSV of an unzipping partner would show as an archive_contents partition "missing" forever.
"""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

from partner_ingest.config import PartnerConfig


def partitions_name(partner: PartnerConfig) -> str:
    return f"{partner.name}_files"


def archives_partitions_name(partner: PartnerConfig) -> str:
    return f"{partner.name}_archives"


def partner_partitions(partner: PartnerConfig) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=partitions_name(partner))


def archive_partitions(partner: PartnerConfig) -> DynamicPartitionsDefinition:
    """Keyed like the files (an archive's key is its file's key); added by the run that expands it."""
    return DynamicPartitionsDefinition(name=archives_partitions_name(partner))
