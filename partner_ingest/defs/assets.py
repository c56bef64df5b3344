"""Per partner, one multi-asset step: ``partners/<name>/files`` (each partition one remote file) and,
with ``unzip: true``, ``partners/<name>/archive_contents`` (the expanded entries of archive partitions,
downstream of the files in lineage), with per-partition asset checks on both.

A run covers one partition or a contiguous range. The landing itself is the pure run pipeline
(``ingest/run_pipeline.py``); this step only turns its outcomes into Dagster's records. Each landed
file is recorded with its own ``AssetMaterialization`` as it lands (metadata on a returned
``MaterializeResult`` would apply to every partition of the run), and each check result is an
``AssetCheckEvaluation`` for its partition. A file that fails is collected; the run fails at the end
naming every such file, while the files that landed stay materialized. Selecting only the checks (from
the UI, "Execute checks") re-reads what landed without landing anything.
"""

import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import quote

from dagster import (
    AssetExecutionContext,
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
from partner_ingest.defs.asset_keys import (
    EXPANSION_CHECK,
    OBJECT_CHECK,
    contents_asset_key,
    expansion_check_key,
    files_asset_key,
    object_check_key,
)
from partner_ingest.defs.checks import check_specs, expansion_check_evaluation, object_check_evaluation
from partner_ingest.defs.partitions import archive_partitions, archives_partitions_name, partner_partitions
from partner_ingest.defs.pools import partner_pool
from partner_ingest.defs.resources import SftpResource
from partner_ingest.defs.tags import DATA_VERSION_TAG
from partner_ingest.errors import PartitionKeyError, PartnerIngestError
from partner_ingest.ingest.archives import Expansion, expand_archive, is_archive_name
from partner_ingest.ingest.partition_keys import legacy_partition_key, relative_path_of_key
from partner_ingest.ingest.run_pipeline import (
    FileOutcome,
    RunPipeline,
    RunTally,
    Wanted,
    refuse_foreign_keys,
    remote_path_of_key,
    verify_archive_expansion,
    verify_landed_object,
)
from partner_ingest.ingest.transfer import LandedFile
from partner_ingest.s3.keys import s3_uri

__all__ = ["DATA_VERSION_TAG", "EXPANSION_CHECK", "OBJECT_CHECK", "build_files_asset", "contents_asset_key",
           "console_url", "files_asset_key", "freshness_policy", "materialization", "partner_description"]


def console_url(bucket: str, key: str, region: str | None = None) -> str:
    """The object's page in the AWS console (``region`` from the S3 client's ``meta.region_name``)."""
    url = f"https://console.aws.amazon.com/s3/object/{quote(bucket, safe='')}?prefix={quote(key, safe='')}"
    return f"{url}&region={quote(region, safe='')}" if region else url


def _region_of(client) -> str | None:
    region = getattr(getattr(client, "meta", None), "region_name", None)
    return region if isinstance(region, str) and region else None


def outcome_text(landed: LandedFile) -> str:
    """What the run did with the file, in words: ``uploaded: false`` with ``bytes_read: 0`` alone reads as
    "did nothing" while it means the object was found already landed at this version."""
    if landed.uploaded:
        return "landed: read from the partner and uploaded"
    if landed.reverified:
        return ("already landed at this version: the partner's bytes were re-read and match the object's "
                "sha256; nothing uploaded")
    return ("already landed at this version: the S3 object's source size, mtime, path and length match and "
            "it carries its sha256 tag; nothing read or uploaded")


def materialization(partner: PartnerConfig, partition_key: str, landed: LandedFile,
                    after_landing: str, region: str | None = None) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=files_asset_key(partner),
        partition=partition_key,
        metadata={
            "outcome": MetadataValue.text(outcome_text(landed)),
            "remote_path": MetadataValue.text(landed.remote_path),
            "size": MetadataValue.int(landed.version.size),
            "sha256": MetadataValue.text(landed.sha256),
            "s3_uri": MetadataValue.url(s3_uri(landed.bucket, landed.key)),
            "aws_console": MetadataValue.url(console_url(landed.bucket, landed.key, region)),
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


def _globs(patterns: list[str]) -> str:
    return ", ".join(f"`{p}`" for p in patterns) if patterns else "none"


def partner_description(partner: PartnerConfig, landing: LandingConfig) -> str:
    """What the asset's page tells an operator about the partner; names only, never credentials."""
    stability = (f"`{partner.stability.done_marker}` done marker present" if partner.stability.done_marker
                 else f"size and mtime unchanged for {partner.stability.min_age_seconds}s across listings")
    after = partner.after_landing + (f" (to `{partner.archive_dir}`)" if partner.after_landing == "move"
                                     and partner.archive_dir else "")
    checksums = partner.source_checksums
    if checksums is None:
        verified = "none published (SHA-256 computed on landing)"
    else:
        where = f"sidecar `*{checksums.sidecar}`" if checksums.sidecar else f"manifest `{checksums.manifest}`"
        verified = f"{checksums.algorithm} from {where}, {'required' if checksums.required else 'optional'}"
    sensor = (f"every {partner.sensor.interval_seconds}s, "
              f"{'running' if partner.sensor.running else 'stopped'} by default")
    lines = [
        f"Files from `{partner.host}:{partner.port}` directory `{partner.remote_dir}` landed at "
        f"`s3://{landing.bucket}/{partner.landing_prefix}`. One partition per remote file.",
        "",
        f"- SFTP: `{partner.host}:{partner.port}`, user `{partner.username}`, secret `{partner.secret_id}` "
        "(a Secrets Manager name)",
        f"- Remote directory: `{partner.remote_dir}`, {'recursive' if partner.recursive else 'top level only'}",
        f"- Include: {_globs(partner.include)}; exclude: {_globs(partner.exclude)}",
        f"- Stable when: {stability}",
        f"- Sensor: {sensor}",
        f"- After landing: {after}",
        f"- Unzip: {'yes' if partner.unzip else 'no'}",
        f"- Source checksums: {verified}",
        f"- Change detection: {partner.change_detection}",
    ]
    return "\n".join(lines)


def build_files_asset(partner: PartnerConfig, landing: LandingConfig) -> AssetsDefinition:
    partitions = partner_partitions(partner)
    files_key = files_asset_key(partner)
    specs = [AssetSpec(
        files_key, group_name=partner.name, partitions_def=partitions, kinds={"sftp", "s3"},
        freshness_policy=freshness_policy(partner),
        description=partner_description(partner, landing),
        metadata={"sftp_source": f"sftp://{partner.username}@{partner.host}:{partner.port}{partner.remote_dir}",
                  "landing": s3_uri(landing.bucket, partner.landing_prefix)},
        skippable=True)]
    if partner.unzip:
        specs.append(AssetSpec(
            contents_asset_key(partner), group_name=partner.name, partitions_def=archive_partitions(partner),
            deps=[files_key], kinds={"s3"}, skippable=True,
            description=("Entries of the partner's zip archives, expanded under '<archive>.unzipped/' by the run "
                         "that lands the archive. One partition per archive (keyed like its file); materialize "
                         "one here to expand its landed archive again.")))

    @multi_asset(name=f"{partner.name}_files", specs=specs, check_specs=check_specs(partner, partitions),
                 can_subset=True, pool=partner_pool(partner))
    def _partner_files(context: AssetExecutionContext, sftp: ResourceParam[SftpResource],
                       s3: ResourceParam[S3Resource]) -> Iterator:
        context.log.addFilter(_CheckOutputsNotice())
        client = s3.get_client()
        keys = context.partition_keys
        if files_key not in context.selected_asset_keys:
            yield from _from_landed(context, partner, landing, client, keys)
            return
        yield from _land(context, partner, landing, sftp, client, keys)

    return _partner_files


class _CheckOutputsNotice(logging.Filter):
    """Drops Dagster's INFO "did not yield or return expected outputs {'..._landed_object_matches'}".

    Dagster counts a check as emitted only as an ``AssetCheckResult``, which has no partition; per-file
    results must be ``AssetCheckEvaluation``s (see checks.py), so every run would log that line although
    each file's check was recorded. It tells an operator nothing they can act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not yield or return expected outputs" not in record.getMessage()


def _wanted(context: AssetExecutionContext, partner: PartnerConfig) -> Wanted:
    """What besides landing the run was asked for. Archives are expanded and checked by the run that lands
    them (the contents asset has its own partition set, so it cannot share a run's partition range)."""
    return Wanted(object_check=object_check_key(partner) in context.selected_asset_check_keys,
                  archive_contents=partner.unzip, expansion_check=partner.unzip)


def _register_archive(context: AssetExecutionContext, partner: PartnerConfig, key: str) -> None:
    """An archive becomes a partition of the contents asset when it is first expanded, whoever launched
    the run (sensor, UI, backfill)."""
    name = archives_partitions_name(partner)
    if not context.instance.has_dynamic_partition(name, key):
        context.instance.add_dynamic_partitions(name, [key])


def _land(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, sftp: SftpResource,
          client, keys: list[str]) -> Iterator:
    """Land the run's files through the pipeline; each file's events are yielded from the step's own
    thread as soon as that file is done. Closing the outcomes when the run stops starts no further file."""
    # Both callables are called only from this thread (the pipeline queues the workers' progress lines).
    run = RunPipeline(partner, bucket=landing.bucket, keys=keys, links=lambda: sftp.link(partner), s3=client,
                      wanted=_wanted(context, partner), warn=context.log.warning, progress=context.log.info)
    report = run.report
    for refusal in report.refused:
        context.log.error(str(refusal))
    tally = RunTally(partner.name, len(report.accepted))
    each = len(report.accepted) <= PER_FILE_LINES_UP_TO
    with contextlib.closing(run.outcomes()) as outcomes:
        for outcome in outcomes:
            _log_file(context, outcome, landing.bucket, each=each)
            if (line := tally.add(outcome)) is not None and not each:
                context.log.info(line)
            if outcome.expansion is not None or outcome.expansion_error is not None:
                _register_archive(context, partner, outcome.partition_key)
            yield from _file_events(partner, landing, outcome, _region_of(client))
    if report.accepted and report.unreachable is None:
        context.log.info(tally.line())
    if report.unreachable is not None:
        raise Failure(description=str(report.unreachable), metadata={"files_not_landed": len(report.accepted)})
    if report.failures:
        _fail_run(partner, report.failures, report.waiting_for_after_landing, report.total)


PER_FILE_LINES_UP_TO = 20
"""A run of at most this many files logs a line per landed file; a larger one logs the run's tally every
``PROGRESS_EVERY_SECONDS`` instead (each line is an event in Dagster's log: on its SQLite storage a few
tens of ms each), its files' details being in their materializations. Failures are always logged one by one."""


def _log_file(context: AssetExecutionContext, outcome: FileOutcome, bucket: str, *, each: bool) -> None:
    landed, expansion = outcome.landed, outcome.expansion
    if landed is not None and each:
        context.log.info(
            f"{landed.remote_path} -> {s3_uri(landed.bucket, landed.key)} "
            f"({landed.version.size} bytes, sha256 {landed.sha256}): {outcome_text(landed)}")
    if landed is not None and expansion is not None:
        context.log.info(f"expanded {landed.remote_path}: {len(expansion.entries)} entries, "
                         f"{expansion.total_bytes} bytes under {s3_uri(bucket, expansion.prefix)}")
    for failure in outcome.failures:
        context.log.error(str(failure))


def _file_events(partner: PartnerConfig, landing: LandingConfig, outcome: FileOutcome,
                 region: str | None = None) -> Iterator:
    """A file whose object check failed yields only that check; a recorded one its materializations and checks."""
    key, landed = outcome.partition_key, outcome.landed
    if landed is None:
        return
    check = object_check_evaluation(partner, key, outcome.object_check) if outcome.object_check else None
    if not outcome.recorded:
        if check is not None:
            yield check
        return
    yield materialization(partner, key, landed, outcome.after_landing, region)
    if check is not None:
        yield check
    if outcome.expansion is not None:
        yield _contents_materialization(partner, key, outcome.expansion, landing.bucket)
    if outcome.expansion_check is not None:
        yield expansion_check_evaluation(partner, key, outcome.expansion_check)


def _fail_run(partner: PartnerConfig, failures: list[PartnerIngestError], waiting_for_action: list[str],
              total: int, what: str = "did not land completely") -> None:
    raise Failure(
        description=(f"partner '{partner.name}': {len(failures)} of {total} files {what}: "
                     + "; ".join(str(f) for f in failures[:20])
                     + (f"; and {len(failures) - 20} more" if len(failures) > 20 else "")),
        metadata={"failed_files": MetadataValue.json([f.path for f in failures]),
                  "waiting_for_after_landing": MetadataValue.json(waiting_for_action)},
    )


def files_key_text(partner: PartnerConfig) -> str:
    return files_asset_key(partner).to_user_string()


def _latest_landing(context: AssetExecutionContext, partner: PartnerConfig, key: str) -> dict | None:
    """The metadata of the file's latest landing: under its key, else under the key an earlier version
    registered for it (an archive landed before the upgrade keeps its history there)."""
    candidates = [key]
    with contextlib.suppress(ValueError, UnicodeEncodeError):
        if (legacy := legacy_partition_key(relative_path_of_key(key))) != key:
            candidates.append(legacy)
    for candidate in candidates:
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=files_asset_key(partner), asset_partitions=[candidate]), limit=1).records
        if records:
            return dict(records[0].asset_materialization.metadata)
    return None


def _from_landed(context: AssetExecutionContext, partner: PartnerConfig, landing: LandingConfig, client,
                 keys: list[str]) -> Iterator:
    """Work on what landed, from each partition's latest metadata, without reading the partner: re-verify
    (e.g. after someone touched the bucket), and with the contents asset selected, expand archives again."""
    selected = context.selected_asset_check_keys
    expand = partner.unzip and contents_asset_key(partner) in context.selected_asset_keys
    keys, refused = refuse_foreign_keys(partner, keys)
    total = len(keys) + len(refused)
    for key in keys:
        meta = _latest_landing(context, partner, key)
        if meta is None or "s3_uri" not in meta or "size" not in meta or "sha256" not in meta:
            problem = ("no landing of this file is recorded" if meta is None else
                       "its latest materialization was not made by a landing run (no s3_uri, size or sha256: "
                       "reported by hand?)")
            error = PartitionKeyError(problem, partner=partner.name, path=remote_path_of_key(partner, key),
                                      action=f"land it first: materialize this partition of {files_key_text(partner)}")
            if expand:
                refused.append(error)
            else:
                context.log.warning(f"nothing to check: {error}")
            continue
        s3_key = meta["s3_uri"].value.split(f"s3://{landing.bucket}/", 1)[-1]
        if not s3_key.startswith(partner.landing_prefix):
            refused.append(PartitionKeyError(
                f"its latest materialization points at s3://{landing.bucket}/{s3_key}, outside the partner's "
                f"landing prefix '{partner.landing_prefix}'", partner=partner.name,
                path=remote_path_of_key(partner, key),
                action="re-land the file; materializations are recorded by this code location's runs only"))
            continue
        if object_check_key(partner) in selected:
            recorded_version = meta["s3_version_id"].value if "s3_version_id" in meta else None
            yield object_check_evaluation(partner, key, verify_landed_object(
                client, bucket=landing.bucket, key=s3_key, size=meta["size"].value, sha256=meta["sha256"].value,
                version_id=recorded_version or None))
        if expand and is_archive_name(s3_key):
            try:
                expansion = expand_archive(
                    client, bucket=landing.bucket, archive_key=s3_key, partner=partner.name,
                    remote_path=meta["remote_path"].value, limits=partner.unzip_limits,
                    version_id=(meta["s3_version_id"].value if "s3_version_id" in meta else None) or None)
            except PartnerIngestError as exc:
                refused.append(exc)
                continue
            context.log.info(f"expanded {s3_uri(landing.bucket, s3_key)} again: {len(expansion.entries)} entries, "
                             f"{expansion.total_bytes} bytes under {s3_uri(landing.bucket, expansion.prefix)}")
            yield _contents_materialization(partner, key, expansion, landing.bucket)
        if partner.unzip and (expand or expansion_check_key(partner) in selected) and is_archive_name(s3_key):
            yield expansion_check_evaluation(partner, key, verify_archive_expansion(
                client, bucket=landing.bucket, archive_key=s3_key))
    if refused:
        _fail_run(partner, refused, [], total, what="could not be checked or expanded")
