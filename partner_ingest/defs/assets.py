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

import queue
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError
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
    ResourceParam,
    multi_asset,
)
from dagster_aws.s3 import S3Resource

from partner_ingest.config import LandingConfig, PartnerConfig
from partner_ingest.defs.partitions import partner_partitions
from partner_ingest.defs.pools import partner_pool
from partner_ingest.defs.resources import SftpResource
from partner_ingest.errors import AfterLandingError, PartitionKeyError, PartnerIngestError
from partner_ingest.ingest.after_landing import apply_after_landing
from partner_ingest.ingest.archives import Expansion, expand_archive, is_archive_name, verify_expansion
from partner_ingest.ingest.partition_keys import decode_partition_key, relative_path_of_key
from partner_ingest.ingest.selection import Selection
from partner_ingest.ingest.transfer import LandedFile, land_file
from partner_ingest.s3.keys import s3_uri
from partner_ingest.s3.verify import verify_object
from partner_ingest.sftp.link import PartnerLink

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
            **({"remote_mtime": MetadataValue.timestamp(float(landed.version.mtime))}
               if landed.version.mtime is not None else {"remote_mtime_missing": MetadataValue.bool(True)}),
            "seconds": MetadataValue.float(round(landed.seconds, 6)),
            "bytes_per_second": MetadataValue.float(round(landed.bytes_per_second, 1)),
            "uploaded": MetadataValue.bool(landed.uploaded),
            "bytes_read": MetadataValue.int(landed.bytes_read),
            "resumes": MetadataValue.int(landed.resumes),
            "after_landing": MetadataValue.text(after_landing),
            "verified_against": MetadataValue.text(landed.verified_against),
            "reverified_remote_bytes": MetadataValue.bool(landed.reverified),
            "read_chunk_size": MetadataValue.int(landed.read_chunk_size),
        },
        tags={DATA_VERSION_TAG: landed.data_version(partner.change_detection)},
    )


def freshness_policy(partner: PartnerConfig) -> FreshnessPolicy | None:
    """``expect_every`` turns a late partner into a failing freshness state in the UI."""
    window = partner.expect_every_timedelta
    return FreshnessPolicy.time_window(fail_window=window) if window else None


def _remote_path(partner: PartnerConfig, key: str) -> str:
    """For messages only: where a key points, shown even when the key is refused."""
    try:
        return f"{partner.remote_dir.rstrip('/')}/{decode_partition_key(key)}"
    except UnicodeDecodeError:
        return key


def _relative_path(partner: PartnerConfig, key: str) -> str:
    """The key's path, if it is one the partner's sensor could have listed (keys are untrusted input)."""
    try:
        relative = relative_path_of_key(key)
        refused = Selection(partner).refusal(relative)
    except ValueError as exc:
        refused = str(exc)
    if refused:
        raise PartitionKeyError(f"partition key '{key}' is refused: {refused}", partner=partner.name,
                                action="delete this partition; keys are created by the partner's sensor and "
                                       "always name a file it lists inside remote_dir")
    return relative


def _refuse_foreign_keys(partner: PartnerConfig, keys: list[str]) -> tuple[list[str], list[PartnerIngestError]]:
    """Split the run's keys into those the sensor could have made and refusals, before any SFTP or S3 call."""
    accepted, refused = [], []
    for key in keys:
        try:
            _relative_path(partner, key)
        except PartitionKeyError as exc:
            refused.append(exc)
            continue
        accepted.append(key)
    return accepted, refused


def _object_check(partner: PartnerConfig, key: str, client, bucket: str, s3_key: str, size: int,
                  sha256: str, version_id: str | None) -> AssetCheckEvaluation:
    passed, description, metadata = verify_object(client, bucket=bucket, key=s3_key, size=size, sha256=sha256,
                                                  version_id=version_id)
    return AssetCheckEvaluation(
        asset_key=files_asset_key(partner), check_name=OBJECT_CHECK, passed=passed, partition=key,
        severity=AssetCheckSeverity.ERROR, description=description,
        metadata={"s3_uri": MetadataValue.url(s3_uri(bucket, s3_key)), **metadata})


def _expansion_check(partner: PartnerConfig, key: str, client, bucket: str, archive_key: str) -> AssetCheckEvaluation:
    try:
        passed, details = verify_expansion(client, bucket=bucket, archive_key=archive_key)
        description = (f"{details['entries_found']} of {details['entries_expected']} entries and "
                       f"{details['bytes_found']} of {details['bytes_expected']} bytes are under the expansion "
                       "prefix")
    except (zipfile.BadZipFile, ValueError, OSError, ClientError, BotoCoreError) as exc:
        passed, details = False, {}
        description = f"the archive cannot be checked ({type(exc).__name__}: {exc}); it was not expanded"
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

    @multi_asset(name=f"{partner.name}_files", specs=specs, check_specs=check_specs, can_subset=True,
                 pool=partner_pool(partner))
    def _partner_files(context: AssetExecutionContext, sftp: ResourceParam[SftpResource],
                       s3: ResourceParam[S3Resource]) -> Iterator:
        client = s3.get_client()
        keys = context.partition_keys
        if files_key not in context.selected_asset_keys:
            yield from _checks_only(context, partner, landing, client, keys)
            return
        yield from _land(context, partner, landing, sftp, client, keys)

    return _partner_files


@dataclass
class _FileOutcome:
    """What landing one file produced; built in a worker thread, reported by the step's thread."""

    events: list = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    failures: list[PartnerIngestError] = field(default_factory=list)
    waiting_for_action: str | None = None


def _open_links(context: AssetExecutionContext, partner: PartnerConfig, sftp: SftpResource, wanted: int
                ) -> list[PartnerLink]:
    """Up to ``limits.max_connections`` sessions; a partner refusing extra sessions only slows the run."""
    first = sftp.link(partner)
    try:
        first.session.check_remote_dir()
    except PartnerIngestError as exc:
        first.close()
        raise Failure(description=str(exc), metadata={"files_not_landed": wanted}) from None
    links = [first]
    for _ in range(min(partner.limits.max_connections, wanted) - 1):
        extra = sftp.link(partner)
        try:
            extra.session  # noqa: B018 - connects now, so a refused extra session is known up front
        except PartnerIngestError as exc:
            context.log.warning(f"partner '{partner.name}': continuing with {len(links)} connection(s): {exc}")
            break
        links.append(extra)
    return links


def _land(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, sftp: SftpResource,
          client, keys: list[str]) -> Iterator:
    """Land the run's files over up to ``max_connections`` parallel sessions (small files are latency-bound);
    every event is yielded from the step's own thread."""
    all_keys = keys
    keys, failures = _refuse_foreign_keys(partner, keys)
    for failure in failures:
        context.log.error(str(failure))
    if not keys:
        _fail_run(partner, failures, [], len(all_keys))
    links = _open_links(context, partner, sftp, len(keys))
    idle: queue.SimpleQueue[PartnerLink] = queue.SimpleQueue()
    for link in links:
        idle.put(link)
    wants_check = AssetCheckKey(files_asset_key(partner), OBJECT_CHECK) in context.selected_asset_check_keys
    wants_contents = partner.unzip and contents_asset_key(partner) in context.selected_asset_keys
    wants_expansion_check = AssetCheckKey(contents_asset_key(partner), EXPANSION_CHECK) in \
        context.selected_asset_check_keys

    def work(key: str) -> _FileOutcome:
        link = idle.get()
        try:
            return _land_one(partner, landing, link, client, key, wants_check, wants_contents, wants_expansion_check)
        except Exception as exc:  # a bug or an untranslated library error: this file fails, the run goes on
            return _FileOutcome(failures=[PartnerIngestError(
                f"unexpected {type(exc).__name__} while landing it: {exc}", partner=partner.name,
                path=_remote_path(partner, key), action="the run can be retried; report this if it repeats")])
        finally:
            idle.put(link)

    waiting_for_action: list[str] = []
    pool = ThreadPoolExecutor(max_workers=len(links), thread_name_prefix=f"{partner.name}-sftp")
    try:
        for future in as_completed([pool.submit(work, key) for key in keys]):
            outcome = future.result()
            for line in outcome.info:
                context.log.info(line)
            for failure in outcome.failures:
                context.log.error(str(failure))
            failures.extend(outcome.failures)
            if outcome.waiting_for_action:
                waiting_for_action.append(outcome.waiting_for_action)
            yield from outcome.events
    finally:
        # A terminated run stops here: files not yet started are not started.
        pool.shutdown(wait=True, cancel_futures=True)
        for link in links:
            link.close()
    if failures:
        _fail_run(partner, failures, waiting_for_action, len(all_keys))


def _fail_run(partner: PartnerConfig, failures: list[PartnerIngestError], waiting_for_action: list[str],
              total: int) -> None:
    raise Failure(
        description=(f"partner '{partner.name}': {len(failures)} of {total} files did not land completely: "
                     + "; ".join(str(f) for f in failures[:20])
                     + (f"; and {len(failures) - 20} more" if len(failures) > 20 else "")),
        metadata={"failed_files": MetadataValue.json([f.path for f in failures]),
                  "waiting_for_after_landing": MetadataValue.json(waiting_for_action)},
    )


def _land_one(partner: PartnerConfig, landing: LandingConfig, link: PartnerLink, client, key: str,
              wants_check: bool, wants_contents: bool, wants_expansion_check: bool) -> _FileOutcome:
    outcome = _FileOutcome()
    try:
        landed = land_file(link, client, bucket=landing.bucket, relative_path=_relative_path(partner, key))
    except PartnerIngestError as exc:
        outcome.failures.append(exc if exc.path else type(exc)(
            exc.problem, partner=partner.name, path=_remote_path(partner, key), action=exc.action))
        return outcome
    outcome.info.append(
        f"{'landed' if landed.uploaded else 'already landed, nothing uploaded:'} "
        f"{landed.remote_path} -> {s3_uri(landed.bucket, landed.key)} "
        f"({landed.version.size} bytes, sha256 {landed.sha256})")
    check = None
    if wants_check:
        check = _object_check(partner, key, client, landing.bucket, landed.key, landed.version.size, landed.sha256,
                              landed.s3_version_id)
        if not check.passed:
            outcome.failures.append(PartnerIngestError(check.description or "verification failed",
                                                       partner=partner.name, path=landed.remote_path,
                                                       action="re-run the file"))
            outcome.events.append(check)
            return outcome
    try:
        after = apply_after_landing(link, landed).describe()
    except AfterLandingError as exc:
        outcome.failures.append(exc)
        outcome.waiting_for_action = landed.remote_path
        after = f"failed, waiting for retry: {exc.problem}"
    outcome.events.append(materialization(partner, key, landed, after))
    if check is not None:
        outcome.events.append(check)
    if wants_contents and is_archive_name(landed.relative_path):
        try:
            expansion = expand_archive(client, bucket=landing.bucket, archive_key=landed.key, partner=partner.name,
                                       remote_path=landed.remote_path, limits=partner.unzip_limits,
                                       version_id=landed.s3_version_id)
        except PartnerIngestError as exc:
            outcome.failures.append(exc)
            return outcome
        outcome.info.append(f"expanded {landed.remote_path}: {len(expansion.entries)} entries, "
                            f"{expansion.total_bytes} bytes under {s3_uri(landing.bucket, expansion.prefix)}")
        outcome.events.append(_contents_materialization(partner, key, expansion, landing.bucket))
        if wants_expansion_check:
            outcome.events.append(_expansion_check(partner, key, client, landing.bucket, landed.key))
    return outcome


def _checks_only(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, client,
                 keys: list[str]) -> Iterator:
    """Re-verify what landed (e.g. after someone touched the bucket), from each partition's latest metadata."""
    selected = context.selected_asset_check_keys
    keys, refused = _refuse_foreign_keys(partner, keys)
    for key in keys:
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=files_asset_key(partner), asset_partitions=[key]), limit=1).records
        if not records:
            continue
        meta = records[0].asset_materialization.metadata
        s3_key = meta["s3_uri"].value.split(f"s3://{landing.bucket}/", 1)[-1]
        if not s3_key.startswith(partner.landing_prefix):
            refused.append(PartitionKeyError(
                f"its latest materialization points at s3://{landing.bucket}/{s3_key}, outside the partner's "
                f"landing prefix '{partner.landing_prefix}'", partner=partner.name, path=_remote_path(partner, key),
                action="re-land the file; materializations are recorded by this code location's runs only"))
            continue
        if AssetCheckKey(files_asset_key(partner), OBJECT_CHECK) in selected:
            recorded_version = meta["s3_version_id"].value if "s3_version_id" in meta else None
            yield _object_check(partner, key, client, landing.bucket, s3_key, meta["size"].value, meta["sha256"].value,
                                recorded_version or None)
        if partner.unzip and AssetCheckKey(contents_asset_key(partner), EXPANSION_CHECK) in selected \
                and is_archive_name(s3_key):
            yield _expansion_check(partner, key, client, landing.bucket, s3_key)
    if refused:
        _fail_run(partner, refused, [], len(keys) + len(refused))
