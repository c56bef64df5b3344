"""Which incidents are open for a partner, and which messages a change in them calls for (no Dagster here).

Three kinds, each with a stable id so the notifications sensor's cursor can remember what it has told:

* ``late:<partner>``: the partner's ``expect_every`` window passed without a new landing;
* ``file:<partner>:<partition key>``: a file failed in ``threshold`` runs in a row (failures after its
  latest successful landing, counted once per run);
* ``host_key:<partner>``: the partner's files sensor's newest tick failed because the server offered a
  host key that is not pinned (the sensor lists before any run exists, so with a changed key no run is
  ever launched), or a run failed so and no landing has succeeded since.

The cursor keeps only the ids of open incidents (plus when watching started), so it stays small.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

LATE = "late"
FILE = "file"
HOST_KEY = "host_key"

DEFAULT_FAILURE_THRESHOLD = 3
MAX_OPEN_FILE_INCIDENTS = 200  # per partner: bounds the cursor; one message says when more are failing

_HOST_KEY_TEXT = re.compile(r"offered host key .*? which is not pinned", re.DOTALL)


def is_host_key_failure(message: str | None) -> bool:
    """The wording of ``HostKeyError`` (partner_ingest.sftp.connection), as it shows in a run's failure."""
    return bool(message) and _HOST_KEY_TEXT.search(message) is not None


@dataclass(frozen=True)
class FailedAttempt:
    """One partition that a run planned and did not land (Dagster's 'failed to materialize' event)."""

    partition: str | None
    storage_id: int
    run_id: str
    message: str = ""


@dataclass(frozen=True)
class Incident:
    id: str
    kind: str
    partner: str
    problem: str
    action: str
    file: str | None = None
    run_id: str | None = None


def incident_id(kind: str, partner: str, partition: str | None = None) -> str:
    return f"{kind}:{partner}" + (f":{partition}" if partition is not None else "")


def parse_incident_id(value: str) -> tuple[str, str, str | None]:
    kind, _, rest = value.partition(":")
    partner, sep, partition = rest.partition(":")  # partner names have no ':'; partition keys may
    return kind, partner, (partition if sep else None)


def late_incident(partner: str, expect_every: timedelta | None, last_landed: float | None,
                  watching_since: float, now: float, run_id: str | None = None) -> Incident | None:
    """Late when ``expect_every`` passed since the latest landing (or, if nothing ever landed, since the
    notifications sensor started watching: a fresh deployment is not late on its first tick)."""
    if expect_every is None:
        return None
    reference = last_landed if last_landed is not None else watching_since
    if now - reference <= expect_every.total_seconds():
        return None
    since = "nothing has landed yet" if last_landed is None else f"the last file landed {_ago(now - last_landed)}"
    return Incident(
        id=incident_id(LATE, partner), kind=LATE, partner=partner, run_id=run_id,
        problem=f"is late: it is expected every {_duration(expect_every.total_seconds())} and {since}",
        action=("check with the partner that they delivered; check the partner's sensor is running and its "
                "latest ticks in the Dagster UI; run `partner-ingest check` for this partner"))


def failing_file_incidents(partner: str, failures: Iterable[FailedAttempt], last_landed: Mapping[str, int],
                           describe: Callable[[str], str], threshold: int = DEFAULT_FAILURE_THRESHOLD,
                           ) -> list[Incident]:
    """Files whose attempts since their latest landing (storage ids compare in event order) failed in at
    least ``threshold`` distinct runs. Host-key failures do not count: the host-key incident covers them."""
    runs: dict[str, list[FailedAttempt]] = {}
    for failure in failures:
        if failure.partition is None or is_host_key_failure(failure.message):
            continue
        if failure.storage_id <= last_landed.get(failure.partition, -1):
            continue
        runs.setdefault(failure.partition, []).append(failure)
    incidents = []
    for partition, attempts in runs.items():
        distinct = {a.run_id for a in attempts}
        if len(distinct) < threshold:
            continue
        latest = max(attempts, key=lambda a: a.storage_id)
        file = describe(partition)
        reason = _first_line(_error_for_file(latest.message, file))
        incidents.append(Incident(
            id=incident_id(FILE, partner, partition), kind=FILE, partner=partner, file=file,
            run_id=latest.run_id,
            problem=f"failed in {len(distinct)} runs in a row" + (f"; latest error: {reason}" if reason else ""),
            action=("open the run's logs for the cause; fix it at the source (ask the partner to re-send the "
                    "file, or fix permissions or the bucket) and re-materialize the partition")))
    incidents.sort(key=lambda i: i.id)
    return incidents[:MAX_OPEN_FILE_INCIDENTS]


def host_key_incident(partner: str, failures: Iterable[FailedAttempt], last_landed_storage_id: int | None,
                      sensor_tick_error: str | None = None, sensor: str | None = None) -> Incident | None:
    """Open while the partner's files sensor's newest tick failed on the host key (``sensor_tick_error``:
    that tick's error text, None when it did not fail), or while the newest run failure on it is newer
    than the partner's newest landing."""
    newest = None
    for failure in failures:
        if is_host_key_failure(failure.message) and (newest is None or failure.storage_id > newest.storage_id):
            newest = failure
    if newest is not None and last_landed_storage_id is not None and newest.storage_id <= last_landed_storage_id:
        newest = None
    seen_by = ""
    if is_host_key_failure(sensor_tick_error):
        message, run_id = sensor_tick_error or "", None
        seen_by = f" (the newest tick of sensor '{sensor}' failed on it)" if sensor else ""
    elif newest is not None:
        message, run_id = newest.message, newest.run_id
    else:
        return None
    return Incident(
        id=incident_id(HOST_KEY, partner), kind=HOST_KEY, partner=partner, run_id=run_id,
        problem=f"the SFTP server's host key changed: {_first_line(_host_key_sentence(message))}{seen_by}",
        action=("confirm the new key with the partner out of band (never trust it from the connection); if it "
                "is theirs, add it to the partner's host_keys in partners.yaml and redeploy; if not, keep the "
                "partner stopped and treat it as a possible interception"))


@dataclass(frozen=True)
class Changes:
    opened: list[Incident]
    cleared: list[str]
    open_ids: list[str]


def changes(previously_open: Iterable[str], current: Sequence[Incident], evaluated_partners: Iterable[str],
            ) -> Changes:
    """What to tell: incidents now open that were not, and open ones that are gone. Ids of partners not
    evaluated this time (an error reading their events) stay open and unchanged."""
    before = set(previously_open)
    evaluated = set(evaluated_partners)
    now = {i.id: i for i in current}
    opened = [i for i in current if i.id not in before]
    cleared = sorted(i for i in before if i not in now and parse_incident_id(i)[1] in evaluated)
    kept = {i for i in before if parse_incident_id(i)[1] not in evaluated}
    return Changes(opened=opened, cleared=cleared, open_ids=sorted(kept | set(now)))


@dataclass(frozen=True)
class NotificationsCursor:
    open_ids: tuple[str, ...] = ()
    watching_since: float | None = None

    def serialize(self) -> str:
        return json.dumps({"v": 1, "open": list(self.open_ids), "since": self.watching_since},
                          separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def parse(cls, raw: str | None) -> NotificationsCursor:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(open_ids=tuple(str(i) for i in data.get("open", [])),
                       watching_since=float(data["since"]) if data.get("since") is not None else None)
        except (ValueError, TypeError, AttributeError, KeyError):
            return cls()  # an unreadable cursor re-announces what is open: better twice than never


def run_link(run_id: str | None, ui_url: str | None) -> str | None:
    if not run_id:
        return None
    return f"{ui_url.rstrip('/')}/runs/{run_id}" if ui_url else f"run {run_id}"


def opened_message(incident: Incident, ui_url: str | None) -> str:
    lines = [f"[partner-ingest] OPEN {incident.kind}: partner '{incident.partner}'"
             + (f", file '{incident.file}'" if incident.file else "") + f" {incident.problem}.",
             f"What to do: {incident.action}."]
    link = run_link(incident.run_id, ui_url)
    if link:
        lines.append(f"Run: {link}")
    return "\n".join(lines)


def cleared_message(incident_id_: str, describe: Callable[[str, str], str], ui_url: str | None,
                    run_id: str | None = None) -> str:
    kind, partner, partition = parse_incident_id(incident_id_)
    what = {LATE: "is no longer late: a new file landed",
            FILE: "landed (or is no longer failing)",
            HOST_KEY: "connects again with a pinned host key"}.get(kind, "cleared")
    file = f", file '{describe(partner, partition)}'" if partition is not None else ""
    lines = [f"[partner-ingest] CLEARED {kind}: partner '{partner}'{file} {what}.", "Nothing to do."]
    link = run_link(run_id, ui_url)
    if link:
        lines.append(f"Run: {link}")
    return "\n".join(lines)


def _error_for_file(message: str, file: str) -> str:
    """The part of a run's failure that is about this file (errors name it as ``file '<path>'``), else
    the whole failure."""
    marker = f"file '{file}'"
    at = message.find(marker)
    if at < 0:
        return message
    start = message.rfind("[", 0, at)
    start = at if start < 0 else start
    end = message.find("; [", at)
    return message[start: end if end >= 0 else len(message)]


def _host_key_sentence(message: str) -> str:
    """From a failure text, the HostKeyError's own problem: ``<host:port> offered host key ..., which is
    not pinned (pinned: ...)``, without the partner prefix and the advice (the message gives its own)."""
    at = message.find("offered host key")
    if at < 0:
        return message
    bracket = message.rfind("] ", 0, at)
    begin = bracket + 2 if bracket >= 0 else max(message.rfind("\n", 0, at) + 1, 0)
    finish = message.find(". What to do", at)
    return message[begin: finish if finish >= 0 else len(message)].strip()


def _first_line(message: str | None, limit: int = 300) -> str:
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h ago"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
    return f"{seconds // 60}m {seconds % 60}s ago"
