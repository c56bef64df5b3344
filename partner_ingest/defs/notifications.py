"""``partner_notifications_sensor``: tells an operator when a partner is late, a file keeps failing, or a
host key changed. Open-source Dagster has no alerting (alert policies and asset health are Dagster+), so
this sensor reads the instance's own records and sends to the channels the environment names:

* ``PARTNER_INGEST_SNS_TOPIC_ARN``: ``sns.publish`` (boto3 client from the environment, as everywhere:
  ``AWS_ENDPOINT_URL``, region, task role);
* ``PARTNER_INGEST_WEBHOOK_URL``: a Slack-compatible incoming webhook, POST ``{"text": ...}``. Such URLs
  are secrets: only their host is ever logged;
* ``DAGSTER_WEBSERVER_URL`` or ``PARTNER_INGEST_UI_URL``: prefix for run links (else the run id is named);
* ``PARTNER_INGEST_NOTIFICATIONS_RUNNING=1``: the sensor starts running (default: stopped).

Channels are read from the environment only, never from run config, and at each evaluation.

What it reads, per partner, from the ``partners/<name>/files`` asset:

* late: the latest materialization against ``expect_every``;
* failing file and host key: the asset's "materialization planned" events joined with the status of
  their runs. A partition that a FAILED run planned and did not materialize is a failed attempt, whichever
  way the run was launched (the partner's sensor, the UI, a backfill: only sensor runs carry the
  ``partner`` tag, so run tags would miss the rest), and in a ranged run only the files that did not land
  count. The error text is the run's step failure (the asset's ``Failure`` description, which names each
  failed file's error; for an unreachable server, e.g. a changed host key, the connection error).
  Dagster's "failed to materialize" events were not recorded for these failed runs (1.13.27), and the
  ``failed_files`` metadata holds remote paths, not partition keys, so neither is used.

* host key, also: the newest tick of the partner's files sensor, when it failed. The sensor lists the
  server before any run exists, so with a changed key it fails at every tick and launches nothing; run
  failures alone would never show it. Ticks are found through the instance's sensor states (by name, in
  this code location when the daemon says which).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

import boto3
from dagster import (
    DagsterEventType,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

# Dagster has no public API for another sensor's ticks; these are the instance's own types (1.13.27).
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from partner_ingest.config import IngestConfig, PartnerConfig
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.sensors import sensor_name
from partner_ingest.ingest.incidents import (
    FailedAttempt,
    Incident,
    NotificationsCursor,
    changes,
    cleared_message,
    failing_file_incidents,
    host_key_incident,
    late_incident,
    opened_message,
)
from partner_ingest.ingest.run_pipeline import remote_path_of_key

SENSOR_NAME = "partner_notifications_sensor"
SNS_TOPIC_ENV = "PARTNER_INGEST_SNS_TOPIC_ARN"
WEBHOOK_ENV = "PARTNER_INGEST_WEBHOOK_URL"
UI_URL_ENVS = ("DAGSTER_WEBSERVER_URL", "PARTNER_INGEST_UI_URL")
RUNNING_ENV = "PARTNER_INGEST_NOTIFICATIONS_RUNNING"
MINIMUM_INTERVAL_SECONDS = 300
INTERVAL_ENV = "PARTNER_INGEST_NOTIFICATIONS_INTERVAL_SECONDS"  # default MINIMUM_INTERVAL_SECONDS, at least 30
RUN_LOOKBACK = 50  # newest runs of each partner's asset read per evaluation (enough for "3 in a row")
PLANNED_PAGE = 1000
PLANNED_PAGES = 10
WEBHOOK_TIMEOUT_SECONDS = 10


def _now() -> float:
    """The sensor's clock (one place, so a test can move it past a freshness window)."""
    return time.time()


def _ui_url() -> str | None:
    for name in UI_URL_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def webhook_host(url: str) -> str:
    """What may be logged of a webhook URL: its host (the path carries the token)."""
    return urllib.parse.urlsplit(url).hostname or "<unparseable webhook URL>"


class Channels:
    def __init__(self, log) -> None:
        self.log = log
        self.topic = os.environ.get(SNS_TOPIC_ENV) or None
        self.webhook = os.environ.get(WEBHOOK_ENV) or None
        self._sns = None

    @property
    def configured(self) -> bool:
        return bool(self.topic or self.webhook)

    def send(self, subject: str, text: str) -> bool:
        """True if at least one channel took the message (or none is configured: the log is the channel)."""
        self.log.info(f"notification: {text}")
        if not self.configured:
            return True
        delivered = False
        if self.topic:
            try:
                if self._sns is None:
                    self._sns = boto3.client("sns")
                self._sns.publish(TopicArn=self.topic, Subject=subject[:100], Message=text)
                delivered = True
            except Exception as exc:  # noqa: BLE001  (any failure: log it, retry next tick)
                self.log.error(f"SNS publish to {self.topic} failed: {type(exc).__name__}: {exc}")
        if self.webhook:
            delivered = self._post(text) or delivered
        return delivered

    def _post(self, text: str) -> bool:
        host = webhook_host(self.webhook)
        if urllib.parse.urlsplit(self.webhook).scheme not in ("https", "http"):
            self.log.error(f"{WEBHOOK_ENV} is not an http(s) URL; nothing sent to it")
            return False
        request = urllib.request.Request(self.webhook, data=json.dumps({"text": text}).encode(),  # noqa: S310
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
                response.read(1024)
            return True
        except urllib.error.HTTPError as exc:
            self.log.error(f"webhook at {host} answered HTTP {exc.code}")
        except (OSError, ValueError) as exc:  # never str(exc) of a URL error: it may quote the URL
            self.log.error(f"webhook at {host} failed: {type(exc).__name__}")
        return False


def _failures(context: SensorEvaluationContext, partner: PartnerConfig) -> list[FailedAttempt]:
    """Each partition a failed run planned and did not land, with that run's failure text."""
    key = files_asset_key(partner)
    by_run: dict[str, list[tuple[int, str | None]]] = {}
    for record in _recent_planned(context, key):
        data = record.event_log_entry.dagster_event.event_specific_data
        if getattr(data, "partition", None):
            keys = [data.partition]
        elif getattr(data, "partitions_subset", None) is not None:
            keys = list(data.partitions_subset.get_partition_keys())
        else:
            keys = [None]
        by_run.setdefault(record.run_id, []).extend((record.storage_id, k) for k in keys)
    if not by_run:
        return []
    failed_runs = context.instance.get_run_records(
        RunsFilter(run_ids=list(by_run), statuses=[DagsterRunStatus.FAILURE]))
    attempts = []
    for run_record in failed_runs:
        run_id = run_record.dagster_run.run_id
        landed = {entry.dagster_event.event_specific_data.materialization.partition
                  for entry in context.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
                  if entry.dagster_event.asset_key == key}
        message = _run_failure_text(context, run_id)
        attempts.extend(FailedAttempt(partition=partition, storage_id=storage_id, run_id=run_id, message=message)
                        for storage_id, partition in by_run[run_id] if partition is None or partition not in landed)
    return attempts


def _recent_planned(context: SensorEvaluationContext, key) -> list:
    """The newest planned-materialization events of the asset, newest first: pages until enough distinct
    runs are seen (a ranged run plans one event per partition) or the page budget is spent."""
    records, runs, cursor = [], set(), None
    for _ in range(PLANNED_PAGES):
        page = context.instance.fetch_planned_materializations(key, limit=PLANNED_PAGE, cursor=cursor)
        records.extend(page.records)
        runs.update(r.run_id for r in page.records)
        if not page.has_more or len(runs) >= RUN_LOOKBACK:
            break
        cursor = page.cursor
    return records


def _run_failure_text(context: SensorEvaluationContext, run_id: str) -> str:
    texts = []
    for entry in context.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.event_specific_data
        user = getattr(data, "user_failure_data", None)
        if user is not None and user.description:
            texts.append(user.description)
        elif getattr(data, "error", None) is not None:
            texts.append(data.error.message)
    return "\n".join(texts)


def files_sensor_tick_errors(context: SensorEvaluationContext, names: Sequence[str]) -> dict[str, str]:
    """Sensor name -> error text of its newest tick, for those of ``names`` whose newest tick failed."""
    wanted = set(names)
    location = getattr(context.code_location_origin, "location_name", None)
    errors: dict[str, str] = {}
    for state in context.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name not in wanted:
            continue
        if location and state.origin.repository_origin.code_location_origin.location_name != location:
            continue
        ticks = context.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if ticks and ticks[0].status == TickStatus.FAILURE and ticks[0].error is not None:
            errors[state.instigator_name] = ticks[0].error.to_string()
    return errors


def partner_incidents(context: SensorEvaluationContext, partner: PartnerConfig, watching_since: float,
                      now: float, sensor_tick_error: str | None = None) -> list[Incident]:
    key = files_asset_key(partner)
    latest = context.instance.fetch_materializations(key, limit=1).records
    last = latest[0] if latest else None
    failures = _failures(context, partner)
    partitions = {f.partition for f in failures if f.partition is not None}
    landed = (context.instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, partitions=partitions) if partitions else {})
    incidents = []
    late = late_incident(partner.name, partner.expect_every_timedelta, last.timestamp if last else None,
                         watching_since, now, run_id=last.run_id if last else None)
    if late:
        incidents.append(late)
    host_key = host_key_incident(partner.name, failures, last.storage_id if last else None,
                                 sensor_tick_error=sensor_tick_error, sensor=sensor_name(partner))
    if host_key:
        incidents.append(host_key)
    incidents.extend(failing_file_incidents(partner.name, failures, landed,
                                            lambda k: remote_path_of_key(partner, k)))
    return incidents


def interval_seconds() -> int:
    """How often the sensor evaluates: ``$PARTNER_INGEST_NOTIFICATIONS_INTERVAL_SECONDS`` (at least 30), else
    every 5 minutes. Read when the code location loads; an unreadable value keeps the default."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        return max(30, int(raw)) if raw else MINIMUM_INTERVAL_SECONDS
    except ValueError:
        return MINIMUM_INTERVAL_SECONDS


def build_notifications_sensor(config: IngestConfig) -> SensorDefinition:
    partners = {p.name: p for p in config.partners}
    running = os.environ.get(RUNNING_ENV, "").strip().lower() in ("1", "true", "yes", "on")

    @sensor(name=SENSOR_NAME, minimum_interval_seconds=interval_seconds(),
            default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
            description=(
                "Tells an operator when a partner is late (expect_every passed without a new landing), a "
                "file failed in 3 runs in a row, or a run failed on a changed host key; one message when an "
                f"incident opens and one when it clears. Sends to ${SNS_TOPIC_ENV} (SNS) and/or "
                f"${WEBHOOK_ENV} (Slack-compatible webhook); with neither set it still evaluates and logs, "
                "and sends nothing."))
    def _notifications(context: SensorEvaluationContext):
        now = _now()
        cursor = NotificationsCursor.parse(context.cursor)
        since = cursor.watching_since if cursor.watching_since is not None else now
        channels = Channels(context.log)
        current: list[Incident] = []
        evaluated: list[str] = []
        try:
            tick_errors = files_sensor_tick_errors(context, [sensor_name(p) for p in partners.values()])
        except Exception as exc:  # noqa: BLE001  (without ticks, run failures still tell)
            context.log.error(f"could not read the files sensors' ticks: {type(exc).__name__}: {exc}")
            tick_errors = {}
        for partner in partners.values():
            try:
                current.extend(partner_incidents(context, partner, since, now,
                                                 sensor_tick_error=tick_errors.get(sensor_name(partner))))
                evaluated.append(partner.name)
            except Exception as exc:  # noqa: BLE001  (one partner's unreadable events must not silence others)
                context.log.error(f"partner '{partner.name}': could not evaluate incidents: "
                                  f"{type(exc).__name__}: {exc}")
        delta = changes(cursor.open_ids, current, evaluated)
        open_ids = set(delta.open_ids)
        ui = _ui_url()
        for incident in delta.opened:
            subject = f"partner-ingest: {incident.partner} {incident.kind.replace('_', ' ')}"
            if not channels.send(subject, opened_message(incident, ui)):
                open_ids.discard(incident.id)  # not told: try again next tick
        for cleared in delta.cleared:
            partner_name = cleared.split(":", 2)[1]
            text = cleared_message(cleared, _describe, ui, run_id=_latest_run(context, partners.get(partner_name)))
            if not channels.send(f"partner-ingest: {partner_name} cleared", text):
                open_ids.add(cleared)
        new_cursor = NotificationsCursor(open_ids=tuple(sorted(open_ids)), watching_since=since).serialize()
        sent = len(delta.opened) + len(delta.cleared)
        where = "sent" if channels.configured else "logged (no channel configured)"
        summary = (f"{len(open_ids)} open incident(s); {len(delta.opened)} opened, {len(delta.cleared)} cleared, "
                   f"{where}" if sent else f"{len(open_ids)} open incident(s); nothing new")
        return SensorResult(skip_reason=SkipReason(summary), cursor=new_cursor)

    def _describe(partner_name: str, partition: str) -> str:
        partner = partners.get(partner_name)
        return remote_path_of_key(partner, partition) if partner else partition

    return _notifications


def _latest_run(context: SensorEvaluationContext, partner: PartnerConfig | None) -> str | None:
    if partner is None:
        return None
    records = context.instance.fetch_materializations(files_asset_key(partner), limit=1).records
    return records[0].run_id if records else None


__all__: Sequence[str] = ["SENSOR_NAME", "build_notifications_sensor", "webhook_host"]
