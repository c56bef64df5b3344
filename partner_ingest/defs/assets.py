"""One asset per partner, ``partners/<name>/files``: each partition is one remote file.

A run covers one partition or a contiguous range. Each landed file is recorded with its own
``AssetMaterialization`` (size, SHA-256, S3 URI, mtime, timings) as it lands, because metadata on a
returned ``MaterializeResult`` would apply to every partition of the run; a file that fails is
collected and the run fails at the end naming each one, while the files that landed stay
materialized.
"""


from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    asset,
)
from dagster_aws.s3 import S3Resource

from partner_ingest.after_landing import apply_after_landing
from partner_ingest.config import LandingConfig, PartnerConfig
from partner_ingest.defs.partitions import partner_partitions
from partner_ingest.defs.resources import SftpResource
from partner_ingest.errors import AfterLandingError, PartitionKeyError, PartnerIngestError
from partner_ingest.landing.keys import s3_uri
from partner_ingest.partition_keys import decode_partition_key
from partner_ingest.transfer import LandedFile, land_file

DATA_VERSION_TAG = "dagster/data_version"


def files_asset_key(partner: PartnerConfig) -> AssetKey:
    return AssetKey(["partners", partner.name, "files"])


def materialization(partner: PartnerConfig, partition_key: str, landed: LandedFile,
                    after_landing: str) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=files_asset_key(partner),
        partition=partition_key,
        metadata={
            "remote_path": MetadataValue.text(landed.remote_path),
            "size": MetadataValue.int(landed.version.size),
            "sha256": MetadataValue.text(landed.sha256),
            "s3_uri": MetadataValue.url(s3_uri(landed.bucket, landed.key)),
            "s3_version_id": MetadataValue.text(landed.s3_version_id or ""),
            "remote_mtime": MetadataValue.timestamp(float(landed.version.mtime)),
            "seconds": MetadataValue.float(round(landed.seconds, 6)),
            "bytes_per_second": MetadataValue.float(round(landed.bytes_per_second, 1)),
            "uploaded": MetadataValue.bool(landed.uploaded),
            "bytes_read": MetadataValue.int(landed.bytes_read),
            "resumes": MetadataValue.int(landed.resumes),
            "after_landing": MetadataValue.text(after_landing),
        },
        tags={DATA_VERSION_TAG: landed.version.token},
    )


def _relative_path(partner: PartnerConfig, key: str) -> str:
    try:
        return decode_partition_key(key)
    except UnicodeDecodeError:
        raise PartitionKeyError(f"partition key '{key}' is not an encoded remote path", partner=partner.name,
                                action="delete this partition; keys are created by the partner's sensor") from None


def freshness_policy(partner: PartnerConfig) -> FreshnessPolicy | None:
    """``expect_every`` turns a late partner into a failing freshness state in the UI."""
    window = partner.expect_every_timedelta
    return FreshnessPolicy.time_window(fail_window=window) if window else None


def build_files_asset(partner: PartnerConfig, landing: LandingConfig) -> AssetsDefinition:
    @asset(
        key=files_asset_key(partner),
        group_name=partner.name,
        partitions_def=partner_partitions(partner),
        output_required=False,
        kinds={"sftp", "s3"},
        freshness_policy=freshness_policy(partner),
        description=(f"Files from {partner.host}:{partner.port}{partner.remote_dir} landed at "
                     f"s3://{landing.bucket}/{partner.landing_prefix}. One partition per remote file."),
        metadata={
            "sftp_source": f"sftp://{partner.username}@{partner.host}:{partner.port}{partner.remote_dir}",
            "landing": s3_uri(landing.bucket, partner.landing_prefix),
        },
    )
    def _files(context: AssetExecutionContext, sftp: SftpResource, s3: S3Resource) -> Iterator[AssetMaterialization]:
        keys = context.partition_keys
        failures: list[PartnerIngestError] = []
        waiting_for_action: list[str] = []
        client = s3.get_client()
        link = sftp.link(partner)
        try:
            link.session.check_remote_dir()
        except PartnerIngestError as exc:
            link.close()
            raise Failure(description=str(exc), metadata={"files_not_landed": len(keys)}) from None
        with link:
            for key in keys:
                try:
                    relative_path = _relative_path(partner, key)
                    landed = land_file(link, client, bucket=landing.bucket, relative_path=relative_path)
                except PartnerIngestError as exc:
                    context.log.error(str(exc))
                    failures.append(exc)
                    continue
                context.log.info(
                    f"{'landed' if landed.uploaded else 'already landed, nothing uploaded:'} "
                    f"{landed.remote_path} -> {s3_uri(landed.bucket, landed.key)} "
                    f"({landed.version.size} bytes, sha256 {landed.sha256})")
                try:
                    outcome = apply_after_landing(link, landed).describe()
                except AfterLandingError as exc:
                    context.log.error(str(exc))
                    failures.append(exc)
                    waiting_for_action.append(landed.remote_path)
                    outcome = f"failed, waiting for retry: {exc.problem}"
                yield materialization(partner, key, landed, outcome)
        if failures:
            raise Failure(
                description=(f"partner '{partner.name}': {len(failures)} of {len(keys)} files did not land: "
                             + "; ".join(str(f) for f in failures[:20])
                             + (f"; and {len(failures) - 20} more" if len(failures) > 20 else "")),
                metadata={"failed_files": MetadataValue.json([f.path for f in failures]),
                          "waiting_for_after_landing": MetadataValue.json(waiting_for_action)},
            )
    return _files
