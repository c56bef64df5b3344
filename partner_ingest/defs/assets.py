"""Per partner, one multi-asset step: ``partners/<name>/files`` (each partition one remote file) and,
with ``unzip: true``, ``partners/<name>/archive_contents`` (the expanded entries of archive partitions,
downstream of the files in lineage), with per-partition asset checks on both.

A run covers one partition or a contiguous range. Each landed file is recorded with its own
``AssetMaterialization`` as it lands (metadata on a returned ``MaterializeResult`` would apply to
every partition of the run), and each check result is an ``AssetCheckEvaluation`` for its partition.
A file that fails is collected; the run fails at the end naming every such file, while the files
that landed stay materialized. Selecting only the checks (from the UI, "Execute checks") re-reads
what landed without landing anything.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSpec,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    multi_asset,
)
from dagster_aws.s3 import S3Resource

from partner_ingest.after_landing import apply_after_landing
from partner_ingest.archives import Expansion, expand_archive, is_archive_name, verify_expansion
from partner_ingest.config import LandingConfig, PartnerConfig
from partner_ingest.defs.partitions import partner_partitions
from partner_ingest.defs.resources import SftpResource
from partner_ingest.errors import AfterLandingError, PartitionKeyError, PartnerIngestError
from partner_ingest.landing.keys import s3_uri
from partner_ingest.landing.verify import verify_object
from partner_ingest.partition_keys import decode_partition_key
from partner_ingest.transfer import LandedFile, land_file

DATA_VERSION_TAG = "dagster/data_version"
OBJECT_CHECK = "landed_object_matches"
EXPANSION_CHECK = "archive_expanded_completely"


def files_asset_key(partner: PartnerConfig) -> AssetKey:
    return AssetKey(["partners", partner.name, "files"])


def contents_asset_key(partner: PartnerConfig) -> AssetKey:
    return AssetKey(["partners", partner.name, "archive_contents"])


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


def freshness_policy(partner: PartnerConfig) -> FreshnessPolicy | None:
    """``expect_every`` turns a late partner into a failing freshness state in the UI."""
    window = partner.expect_every_timedelta
    return FreshnessPolicy.time_window(fail_window=window) if window else None


def _relative_path(partner: PartnerConfig, key: str) -> str:
    try:
        return decode_partition_key(key)
    except UnicodeDecodeError:
        raise PartitionKeyError(f"partition key '{key}' is not an encoded remote path", partner=partner.name,
                                action="delete this partition; keys are created by the partner's sensor") from None


def _object_check(partner: PartnerConfig, key: str, client, bucket: str, s3_key: str, size: int,
                  sha256: str) -> AssetCheckEvaluation:
    passed, description, metadata = verify_object(client, bucket=bucket, key=s3_key, size=size, sha256=sha256)
    return AssetCheckEvaluation(
        asset_key=files_asset_key(partner), check_name=OBJECT_CHECK, passed=passed, partition=key,
        severity=AssetCheckSeverity.ERROR, description=description,
        metadata={"s3_uri": MetadataValue.url(s3_uri(bucket, s3_key)), **metadata})


def _expansion_check(partner: PartnerConfig, key: str, client, bucket: str, archive_key: str) -> AssetCheckEvaluation:
    passed, details = verify_expansion(client, bucket=bucket, archive_key=archive_key)
    description = (f"{details['entries_found']} of {details['entries_expected']} entries and "
                   f"{details['bytes_found']} of {details['bytes_expected']} bytes are under the expansion prefix")
    return AssetCheckEvaluation(
        asset_key=contents_asset_key(partner), check_name=EXPANSION_CHECK, passed=passed, partition=key,
        severity=AssetCheckSeverity.ERROR, description=description, metadata=details)


def _contents_materialization(partner: PartnerConfig, key: str, expansion: Expansion,
                              bucket: str) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=contents_asset_key(partner), partition=key,
        metadata={"archive": MetadataValue.url(s3_uri(bucket, expansion.archive_key)),
                  "prefix": MetadataValue.url(s3_uri(bucket, expansion.prefix)),
                  "entries": MetadataValue.int(len(expansion.entries)),
                  "bytes": MetadataValue.int(expansion.total_bytes),
                  "first_entries": MetadataValue.json([{"name": e.name, "size": e.size, "sha256": e.sha256}
                                                        for e in expansion.entries[:50]])})


def build_files_asset(partner: PartnerConfig, landing: LandingConfig) -> AssetsDefinition:
    partitions = partner_partitions(partner)
    files_key = files_asset_key(partner)
    specs = [AssetSpec(
        files_key, group_name=partner.name, partitions_def=partitions, kinds={"sftp", "s3"},
        freshness_policy=freshness_policy(partner),
        description=(f"Files from {partner.host}:{partner.port}{partner.remote_dir} landed at "
                     f"s3://{landing.bucket}/{partner.landing_prefix}. One partition per remote file."),
        metadata={"sftp_source": f"sftp://{partner.username}@{partner.host}:{partner.port}{partner.remote_dir}",
                  "landing": s3_uri(landing.bucket, partner.landing_prefix)},
        skippable=True)]
    check_specs = [AssetCheckSpec(OBJECT_CHECK, asset=files_key, partitions_def=partitions,
                                  description="The S3 object exists with the size and SHA-256 read from the partner.")]
    if partner.unzip:
        specs.append(AssetSpec(
            contents_asset_key(partner), group_name=partner.name, partitions_def=partitions, deps=[files_key],
            kinds={"s3"}, skippable=True,
            description="Entries of the partner's zip archives, expanded under '<archive>.unzipped/'."))
        check_specs.append(AssetCheckSpec(
            EXPANSION_CHECK, asset=contents_asset_key(partner), partitions_def=partitions,
            description="Every entry of the archive's central directory is under its prefix with its size."))

    @multi_asset(name=f"{partner.name}_files", specs=specs, check_specs=check_specs, can_subset=True)
    def _partner_files(context: AssetExecutionContext, sftp: SftpResource, s3: S3Resource) -> Iterator:
        client = s3.get_client()
        keys = context.partition_keys
        if files_key not in context.selected_asset_keys:
            yield from _checks_only(context, partner, landing, client, keys)
            return
        yield from _land(context, partner, landing, sftp, client, keys)

    return _partner_files


def _land(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, sftp: SftpResource,
          client, keys: list[str]) -> Iterator:
    failures: list[PartnerIngestError] = []
    waiting_for_action: list[str] = []
    link = sftp.link(partner)
    try:
        link.session.check_remote_dir()
    except PartnerIngestError as exc:
        link.close()
        raise Failure(description=str(exc), metadata={"files_not_landed": len(keys)}) from None
    wants_check = AssetCheckKey(files_asset_key(partner), OBJECT_CHECK) in context.selected_asset_check_keys
    with link:
        for key in keys:
            try:
                landed = land_file(link, client, bucket=landing.bucket, relative_path=_relative_path(partner, key))
            except PartnerIngestError as exc:
                context.log.error(str(exc))
                failures.append(exc)
                continue
            context.log.info(
                f"{'landed' if landed.uploaded else 'already landed, nothing uploaded:'} "
                f"{landed.remote_path} -> {s3_uri(landed.bucket, landed.key)} "
                f"({landed.version.size} bytes, sha256 {landed.sha256})")
            if wants_check:
                check = _object_check(partner, key, client, landing.bucket, landed.key, landed.version.size,
                                      landed.sha256)
                if not check.passed:
                    failures.append(PartnerIngestError(check.description or "verification failed",
                                                       partner=partner.name, path=landed.remote_path,
                                                       action="re-run the file"))
                    yield check
                    continue
            try:
                outcome = apply_after_landing(link, landed).describe()
            except AfterLandingError as exc:
                context.log.error(str(exc))
                failures.append(exc)
                waiting_for_action.append(landed.remote_path)
                outcome = f"failed, waiting for retry: {exc.problem}"
            yield materialization(partner, key, landed, outcome)
            if wants_check:
                yield check
            if partner.unzip and is_archive_name(landed.relative_path):
                yield from _expand(context, partner, landing, client, key, landed, failures)
    if failures:
        raise Failure(
            description=(f"partner '{partner.name}': {len(failures)} of {len(keys)} files did not land completely: "
                         + "; ".join(str(f) for f in failures[:20])
                         + (f"; and {len(failures) - 20} more" if len(failures) > 20 else "")),
            metadata={"failed_files": MetadataValue.json([f.path for f in failures]),
                      "waiting_for_after_landing": MetadataValue.json(waiting_for_action)},
        )


def _expand(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, client, key: str,
            landed: LandedFile, failures: list[PartnerIngestError]) -> Iterator:
    contents = contents_asset_key(partner)
    if contents not in context.selected_asset_keys:
        return
    try:
        expansion = expand_archive(client, bucket=landing.bucket, archive_key=landed.key, partner=partner.name,
                                   remote_path=landed.remote_path, limits=partner.unzip_limits,
                                   version_id=landed.s3_version_id)
    except PartnerIngestError as exc:
        context.log.error(str(exc))
        failures.append(exc)
        return
    context.log.info(f"expanded {landed.remote_path}: {len(expansion.entries)} entries, "
                     f"{expansion.total_bytes} bytes under {s3_uri(landing.bucket, expansion.prefix)}")
    yield _contents_materialization(partner, key, expansion, landing.bucket)
    if AssetCheckKey(contents, EXPANSION_CHECK) in context.selected_asset_check_keys:
        yield _expansion_check(partner, key, client, landing.bucket, landed.key)


def _checks_only(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, client,
                 keys: list[str]) -> Iterator:
    """Re-verify what landed (e.g. after someone touched the bucket), from each partition's latest metadata."""
    selected = context.selected_asset_check_keys
    for key in keys:
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=files_asset_key(partner), asset_partitions=[key]), limit=1).records
        if not records:
            continue
        meta = records[0].asset_materialization.metadata
        s3_key = meta["s3_uri"].value.split(f"s3://{landing.bucket}/", 1)[-1]
        if AssetCheckKey(files_asset_key(partner), OBJECT_CHECK) in selected:
            yield _object_check(partner, key, client, landing.bucket, s3_key, meta["size"].value, meta["sha256"].value)
        if partner.unzip and AssetCheckKey(contents_asset_key(partner), EXPANSION_CHECK) in selected \
                and is_archive_name(s3_key):
            yield _expansion_check(partner, key, client, landing.bucket, s3_key)
