"""One sensor per partner: list the remote tree, wait for stable files, add partitions, request a few
ranged runs. The decisions live in ``partner_ingest.ingest.plan``; this module only gathers the
inputs (listing, what Dagster has materialized at which version, which runs are in flight) and turns
the plan into a ``SensorResult``.
"""

import hashlib
import time
from collections.abc import Mapping

import paramiko
from dagster import (
    AssetSelection,
    DagsterEventType,
    DagsterRunStatus,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from partner_ingest.config import PartnerConfig
from partner_ingest.defs.assets import files_asset_key
from partner_ingest.defs.partitions import (
    archive_partitions,
    archives_partitions_name,
    partitions_name,
    partner_partitions,
)
from partner_ingest.defs.resources import SftpResource
from partner_ingest.defs.tags import DATA_VERSION_TAG, FILE_COUNT_TAG, PARTNER_TAG, RANGE_END_TAG, RANGE_START_TAG
from partner_ingest.ingest.archives import is_archive_name
from partner_ingest.ingest.partition_keys import current_key, newest_by_current_key
from partner_ingest.ingest.plan import Plan, SensorCursor, needs_content_check, plan_ingestion
from partner_ingest.ingest.selection import Selection
from partner_ingest.sftp.connection import SftpSession
from partner_ingest.sftp.remote_digest import remote_sha256
from partner_ingest.sftp.walk import Listing, walk

# Content identity: time a tick may spend re-reading landed files (the sensor's gRPC timeout is 60 s).
CONTENT_CHECK_SECONDS = 20
MAX_ARCHIVES_REGISTERED_PER_TICK = 2_000
_UNFINISHED = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING, DagsterRunStatus.MANAGED}


def sensor_name(partner: PartnerConfig) -> str:
    return f"{partner.name}_files_sensor"


def run_requests(partner: PartnerConfig, plan: Plan) -> list[RunRequest]:
    """Each run selects the partner's files with their checks; archives are expanded by the same run."""
    selection = [files_asset_key(partner)]
    requests = []
    for batch in plan.runs:
        tags = {PARTNER_TAG: partner.name, FILE_COUNT_TAG: str(len(batch.keys))}
        if len(batch.keys) == 1:
            requests.append(RunRequest(run_key=batch.run_key, asset_selection=selection,
                                       partition_key=batch.keys[0], tags=tags))
        else:
            tags.update({RANGE_START_TAG: batch.keys[0], RANGE_END_TAG: batch.keys[-1]})
            requests.append(RunRequest(run_key=batch.run_key, asset_selection=selection, tags=tags))
    return requests


def _attempts(context: SensorEvaluationContext, partner: PartnerConfig) -> tuple[set[str], dict[str, int]]:
    """Partitions whose latest attempt has no materialization: in flight, or failed (with the attempt's id)."""
    storage = context.instance.event_log_storage
    attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        files_asset_key(partner))
    if not attempts:
        return set(), {}
    run_ids = sorted({run_id for run_id, _ in attempts.values()})
    unfinished = set()
    for start in range(0, len(run_ids), 500):
        records = context.instance.get_run_records(RunsFilter(run_ids=run_ids[start:start + 500]))
        unfinished |= {r.dagster_run.run_id for r in records if r.dagster_run.status in _UNFINISHED}
    in_progress = {key for key, (run_id, _) in attempts.items() if run_id in unfinished}
    failed = {key: storage_id for key, (run_id, storage_id) in attempts.items() if run_id not in unfinished}
    return in_progress, failed


def _current_keys(storage, partner: PartnerConfig, materialized: dict[str, str], in_progress: set[str],
                  failed: dict[str, int], last_landed: dict[str, int]
                  ) -> tuple[dict[str, str], set[str], dict[str, int], dict[str, int]]:
    """The sensor's inputs keyed by today's partition keys. A partition registered by an earlier version
    (its key percent-encoded more) counts for its file, so an upgrade re-copies nothing; where a file has
    both keys, the later event wins, and a failure older than the file's newest landing under either key
    is no failure (Dagster keeps an alias's old failed attempt as its latest attempt forever)."""
    keys = set(materialized) | in_progress | set(failed) | set(last_landed)
    aliases = {key for key in keys if current_key(key) != key}
    if not aliases:
        return materialized, in_progress, failed, last_landed
    involved = aliases | {current_key(key) for key in aliases}
    landed_ids = storage.get_latest_storage_id_by_partition(
        files_asset_key(partner), DagsterEventType.ASSET_MATERIALIZATION, partitions=involved)
    newest_landing = newest_by_current_key(landed_ids, landed_ids)
    failed = {key: storage_id for key, storage_id in newest_by_current_key(failed, failed).items()
              if storage_id > newest_landing.get(key, -1)}
    return (newest_by_current_key(materialized, landed_ids), {current_key(key) for key in in_progress}, failed,
            newest_by_current_key(last_landed, last_landed))


def _unregistered_archives(context: SensorEvaluationContext, partner: PartnerConfig,
                           materialized: Mapping[str, str]) -> list[str]:
    """Landed archives that are not yet partitions of the contents asset: those landed before it had its
    own partition set (the run that expands an archive registers it). A few thousand per tick at most."""
    if not partner.unzip:
        return []
    landed = [key for key in materialized if is_archive_name(key)]  # the suffix is never percent-encoded
    if not landed:
        return []
    known = set(context.instance.get_dynamic_partitions(archives_partitions_name(partner)))
    return sorted(key for key in landed if key not in known)[:MAX_ARCHIVES_REGISTERED_PER_TICK]


def _content_digests(context: SensorEvaluationContext, session: SftpSession, partner: PartnerConfig,
                     listing: Listing, materialized: dict[str, str], cursor: SensorCursor) -> dict[str, str]:
    """Hash the remote bytes of landed files whose identity includes content, within the tick's budget.

    The files are taken in key order starting after the last one hashed on the previous tick, so with
    more bytes than the budget every file still gets its turn (``content_after`` in the cursor).
    """
    wanted = needs_content_check(partner, listing, materialized)
    if not wanted:
        return {}
    start = next((i for i, (key, _) in enumerate(wanted) if key > cursor.content_after), 0)
    ordered = wanted[start:] + wanted[:start]
    budget = partner.limits.max_content_check_bytes_per_tick
    deadline = time.monotonic() + CONTENT_CHECK_SECONDS
    digests: dict[str, str] = {}
    spent = too_big = 0
    for key, entry in ordered:
        if entry.size > budget:
            too_big += 1  # never fits a tick: its content is proven by the run that re-lands it, if any
            cursor.content_after = key
            continue
        if spent + entry.size > budget or time.monotonic() > deadline:
            break
        try:
            digest = remote_sha256(session.sftp, session.remote_path(entry.relative_path), entry.size,
                                   server_limit=session.read_limit, deadline=deadline)
        except (OSError, EOFError, paramiko.SSHException) as exc:  # the next listing or the run reports it
            context.log.warning(f"partner '{partner.name}': could not hash '{entry.relative_path}': {exc}")
            digest = None
        if digest is None and time.monotonic() > deadline:
            break
        cursor.content_after = key
        spent += entry.size
        if digest is not None:
            digests[key] = digest
    checked = len(digests) + too_big
    if checked >= len(wanted):
        cursor.content_after = ""
    if checked < len(wanted) or too_big:
        context.log.info(f"partner '{partner.name}': content identity: {len(digests)} of {len(wanted)} landed files "
                         f"re-read this tick ({spent} bytes of a {budget}-byte budget, at most "
                         f"{CONTENT_CHECK_SECONDS}s); {too_big} larger than the budget are not re-read; the rest "
                         "on later ticks")
    return digests


def _report_problems(context: SensorEvaluationContext, partner: PartnerConfig, listing: Listing,
                     cursor: SensorCursor) -> None:
    """Skipped entries, unreadable directories and identity notes are logged when they change, not every tick."""
    problems = listing.problems()
    notes = listing.notes()
    digest = hashlib.sha256("\n".join(problems + notes).encode()).hexdigest()[:16] if problems or notes else ""
    if digest != cursor.problems_digest:
        for line in notes:
            context.log.warning(f"partner '{partner.name}': {line}. What to do: nothing; set change_detection: "
                                "content to say so explicitly, or ask the partner's server to send mtimes")
        for line in problems[:200]:
            context.log.warning(f"partner '{partner.name}': not ingested: {line}. What to do: nothing if "
                                "intended; otherwise ask the partner for a regular, readable file")
        if len(problems) > 200:
            context.log.warning(f"partner '{partner.name}': and {len(problems) - 200} more entries not ingested")
        cursor.problems_digest = digest


def build_files_sensor(partner: PartnerConfig) -> SensorDefinition:
    partitions = partner_partitions(partner)

    @sensor(
        name=sensor_name(partner),
        minimum_interval_seconds=partner.sensor.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if partner.sensor.running else DefaultSensorStatus.STOPPED,
        # The files asset only (with its checks): archive contents have their own partition set.
        target=AssetSelection.assets(files_asset_key(partner)),
        description=(f"Lists {partner.host}:{partner.port}{partner.remote_dir} and lands new and changed files "
                     f"once stable, in runs of up to {partner.limits.max_files_per_run} files."),
        tags={PARTNER_TAG: partner.name},
    )
    def _files_sensor(context: SensorEvaluationContext, sftp: ResourceParam[SftpResource]):
        started = time.monotonic()
        cursor = SensorCursor.decode(context.cursor)
        if cursor.reset:
            context.log.warning(f"partner '{partner.name}': the sensor cursor was unreadable and was reset; files "
                                "wait one more stability interval")
        # Dagster's state first, then the listing: a run finishing meanwhile then looks in flight or
        # landed at worst, never "landed but still on the server".
        storage = context.instance.event_log_storage
        materialized = {
            key: tags.get(DATA_VERSION_TAG, "")
            for key, tags in storage.get_latest_tags_by_partition(
                files_asset_key(partner), DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG]).items()
        }
        in_progress, failed = _attempts(context, partner)
        last_landed = (storage.get_latest_storage_id_by_partition(
            files_asset_key(partner), DagsterEventType.ASSET_MATERIALIZATION)
            if partner.after_landing != "leave" else {})
        materialized, in_progress, failed, last_landed = _current_keys(
            storage, partner, materialized, in_progress, failed, last_landed)
        with sftp.open(partner) as session:
            listing = walk(session, Selection(partner))
            listed = time.monotonic()
            content_digests = _content_digests(context, session, partner, listing, materialized, cursor)
        _report_problems(context, partner, listing, cursor)
        plan = plan_ingestion(
            partner, listing, materialized_versions=materialized, in_progress=in_progress, failed_attempts=failed,
            existing_keys=lambda: context.instance.get_dynamic_partitions(partitions_name(partner)),
            cursor=cursor, now=int(time.time()), last_landed=last_landed, content_digests=content_digests)
        context.log.info(
            f"partner '{partner.name}': {len(listing.files)} files in {listing.directories} directories listed in "
            f"{listed - started:.1f}s; {plan.candidates} new or changed, {plan.waiting_for_stability} not yet "
            f"stable, {plan.in_progress} in flight, {len(plan.new_keys)} partitions added, {len(plan.regroup_keys)} "
            f"scattered changed partitions re-added next tick, {plan.backing_off} failing files backing off, "
            f"{len(plan.runs)} runs "
            f"requested, {plan.deferred} left for the next tick ({time.monotonic() - started:.1f}s)")
        if listing.truncated:
            context.log.warning(f"partner '{partner.name}': listing stopped at its entry limit")
        partition_requests = []
        if plan.new_keys:
            partition_requests.append(partitions.build_add_request(plan.new_keys))
        if plan.regroup_keys:
            partition_requests.append(partitions.build_delete_request(plan.regroup_keys))
        archives = _unregistered_archives(context, partner, materialized)
        if archives:
            partition_requests.append(archive_partitions(partner).build_add_request(archives))
        result = SensorResult(
            run_requests=run_requests(partner, plan),
            dynamic_partitions_requests=partition_requests,
            cursor=plan.cursor.encode(),
        )
        if not plan.runs and not partition_requests:
            result = SensorResult(skip_reason=SkipReason(
                f"nothing to ingest: {plan.waiting_for_stability} files waiting to be stable, "
                f"{plan.in_progress} in flight"), cursor=plan.cursor.encode())
        return result

    return _files_sensor
