"""One dynamic partition set per partner; one partition per remote file."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

from partner_ingest.config import PartnerConfig


def partitions_name(partner: PartnerConfig) -> str:
    return f"{partner.name}_files"


def partner_partitions(partner: PartnerConfig) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=partitions_name(partner))
