"""A partner's asset checks: their specs, and each file's verification as an ``AssetCheckEvaluation``.

``AssetCheckResult`` has no partition (in a ranged run it is recorded once for the run), so every
file's result is an evaluation for its own partition.
"""

from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetCheckSpec, MetadataValue, PartitionsDefinition

from partner_ingest.config import PartnerConfig
from partner_ingest.defs.asset_keys import EXPANSION_CHECK, OBJECT_CHECK, contents_asset_key, files_asset_key
from partner_ingest.defs.partitions import archive_partitions
from partner_ingest.ingest.run_pipeline import ExpansionVerification, ObjectVerification
from partner_ingest.s3.keys import s3_uri


def check_specs(partner: PartnerConfig, partitions: PartitionsDefinition) -> list[AssetCheckSpec]:
    specs = [AssetCheckSpec(OBJECT_CHECK, asset=files_asset_key(partner), partitions_def=partitions,
                            description="The S3 object exists with the size and SHA-256 read from the partner.")]
    if partner.unzip:
        specs.append(AssetCheckSpec(
            EXPANSION_CHECK, asset=contents_asset_key(partner), partitions_def=archive_partitions(partner),
            description="Every entry of the archive's central directory is under its prefix with its size."))
    return specs


def object_check_evaluation(partner: PartnerConfig, partition_key: str,
                            verification: ObjectVerification) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=files_asset_key(partner), check_name=OBJECT_CHECK, passed=verification.passed,
        partition=partition_key, severity=AssetCheckSeverity.ERROR, description=verification.description,
        metadata={"s3_uri": MetadataValue.url(s3_uri(verification.bucket, verification.key)),
                  **verification.metadata})


def expansion_check_evaluation(partner: PartnerConfig, partition_key: str,
                               verification: ExpansionVerification) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=contents_asset_key(partner), check_name=EXPANSION_CHECK, passed=verification.passed,
        partition=partition_key, severity=AssetCheckSeverity.ERROR, description=verification.description,
        metadata=verification.details)
