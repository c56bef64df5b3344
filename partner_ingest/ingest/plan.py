"""Decide what a sensor tick asks for: which files are new or changed, stable, not already in flight,
and how they are cut into a few ranged runs. Pure functions, no Dagster and no I/O, so the rules are
tested directly.

Rules:
* A file's version is ``<size>-<mtime>``. It needs ingesting when the latest materialization of its
  partition is not at that version (never "the partition exists": partitions can exist whose run
  failed or never ran), and no run for it is in progress.
* Stability, ``min_age_seconds``: the same (path, size, mtime) seen on two listings at least that far
  apart. First sightings are kept as 8-byte fingerprints with the time first seen; at most
  ``2 * max_partitions_per_tick`` are kept, so the cursor does not grow with the tree.
  ``done_marker``: ``x<suffix>`` exists next to ``x``.
* Batching: Dagster runs many partitions only as a contiguous range in insertion order. New keys are
  added sorted in one request, so they form ranges of their own. Keys that already exist (changed or
  failed files) are ranged where at least ``MIN_RANGE_OF_EXISTING`` of them are consecutive (a failed
  run's range, a rewritten folder); up to ``MAX_SCATTERED_RUNS`` short groups run as they are; beyond
  that, scattered ones would each need a run of their own, so they are
  deleted from the partition set instead (their materialization history stays) and come back on the
  next tick as new keys, sorted and contiguous. Dagster refuses adding and deleting one key in the
  same tick, hence the extra tick of latency for scattered changes. Every range is capped by
  ``max_files_per_run`` and ``max_bytes_per_run``; one tick requests at most
  ``max_partitions_per_tick`` files and leaves the rest for the next tick.
* With ``after_landing`` delete or move, a file still on the server although landed at its version
  is asked for again: its action failed, and the run redoes only the action.
* Run keys hash the files, their versions and the id of the failed attempt being retried, so a
  repeated evaluation of the same state asks for the same run (Dagster drops the duplicate) while a
  retry after a failure gets a new key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from partner_ingest.config import PartnerConfig
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.sftp.walk import Listing, RemoteEntry
from partner_ingest.versions import DIGEST_CHARS, NO_MTIME, parse_token, uses_content_identity, version_token

_FP = struct.Struct(">8sI")
_RETRY = struct.Struct(">8sQHI")
# A file that fails again waits interval x 2^(failures - 2) before its next try (the first retry is
# immediate), at most this long: a permanently broken file costs a run every few hours, not every tick.
MAX_RETRY_DELAY_SECONDS = 6 * 3600
# Existing partitions needing a run (changed or failed files) are ranged directly only in consecutive
# runs at least this long; scattered ones are deleted and re-added sorted on the next tick.
MIN_RANGE_OF_EXISTING = 20
# Up to this many short groups are simply run as they are (one changed file needs no extra tick).
MAX_SCATTERED_RUNS = 2


def _fingerprint(key: str, token: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{token}".encode(), digest_size=8).digest()


@dataclass
class SensorCursor:
    """Everything a partner's sensor carries between ticks; a few tens of KiB at most.

    ``first_seen``: fingerprint -> when that (path, size, mtime) was first listed.
    ``retries``: fingerprint -> (id of the failed attempt last counted, consecutive failures, retry not
    before), for files whose runs (or delete/move) keep failing.
    """

    first_seen: dict[bytes, int] = field(default_factory=dict)
    problems_digest: str = ""
    retries: dict[bytes, tuple[int, int, int]] = field(default_factory=dict)
    content_after: str = ""   # content identity: the last key whose remote bytes were hashed (rotation point)
    reset: bool = field(default=False, compare=False)  # decoded from an unreadable cursor: say so once

    def encode(self) -> str:
        seen = b"".join(_FP.pack(fp, ts) for fp, ts in sorted(self.first_seen.items()))
        retries = b"".join(_RETRY.pack(fp, *state) for fp, state in sorted(self.retries.items()))
        return json.dumps({"v": 1, "seen": base64.b64encode(seen).decode(), "problems": self.problems_digest,
                           "retries": base64.b64encode(retries).decode(), "content_after": self.content_after})

    @classmethod
    def decode(cls, text: str | None) -> SensorCursor:
        """Anything unreadable, including valid JSON that is not an object, starts afresh (``reset``)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                return cls(reset=True)
            packed = base64.b64decode(data.get("seen", ""))
            seen = dict(_FP.iter_unpack(packed)) if len(packed) % _FP.size == 0 else {}
            packed = base64.b64decode(data.get("retries", ""))
            retries = ({fp: (attempt, failures, after) for fp, attempt, failures, after in _RETRY.iter_unpack(packed)}
                       if len(packed) % _RETRY.size == 0 else {})
            return cls(first_seen=seen, problems_digest=str(data.get("problems", "")), retries=retries,
                       content_after=str(data.get("content_after", ""))[:4096])
        except (ValueError, TypeError, struct.error, AttributeError):
            return cls(reset=True)  # an unreadable cursor only costs one extra stability wait


@dataclass(frozen=True)
class RunBatch:
    keys: tuple[str, ...]
    total_bytes: int
    run_key: str


@dataclass
class Plan:
    new_keys: list[str]
    runs: list[RunBatch]
    cursor: SensorCursor
    regroup_keys: list[str] = field(default_factory=list)
    backing_off: int = 0
    candidates: int = 0
    waiting_for_stability: int = 0
    in_progress: int = 0
    deferred: int = 0


@dataclass(frozen=True)
class _Candidate:
    key: str
    entry: RemoteEntry

    @property
    def token(self) -> str:
        return version_token(self.entry.size, self.entry.mtime)


def _comparison(partner: PartnerConfig, entry: RemoteEntry, materialized: str | None) -> str:
    """How the listing compares with the latest data version: "new", "changed", "same" (size and
    mtime), or "content" (size and mtime agree, and only the remote bytes' digest can tell).

    Servers may send an mtime in a listing and not in a stat (or the reverse), so the sensor and the
    run may see different attributes: sizes must agree, mtimes must agree where both are known, and
    the digest decides wherever either side had no mtime or the partner asks for content identity.
    """
    if materialized is None:
        return "new"
    size, mtime, digest = parse_token(materialized)
    if size != str(entry.size):
        return "changed"
    if mtime != NO_MTIME and entry.mtime is not None and mtime != str(entry.mtime):
        return "changed"
    if not (uses_content_identity(partner.change_detection, entry.mtime) or mtime == NO_MTIME):
        return "same"
    if digest is None:
        # Landed before content identity applied: with change_detection: content, prove it once (the run
        # re-reads and records the digest); a listing without mtime cannot be compared more closely.
        return "changed" if partner.change_detection == "content" else "same"
    return "content"


def _landed_state(partner: PartnerConfig, entry: RemoteEntry, materialized: str | None,
                  content_digests: Mapping[str, str], key: str) -> str:
    """"new", "landed" or "changed"; a file whose bytes were not hashed this tick counts as landed until
    its turn comes."""
    comparison = _comparison(partner, entry, materialized)
    if comparison in ("new", "changed"):
        return comparison
    if comparison == "same":
        return "landed"
    digest = content_digests.get(key)
    if digest is None:
        return "landed"
    assert materialized is not None
    return "landed" if digest[:DIGEST_CHARS] == parse_token(materialized)[2] else "changed"


def needs_content_check(partner: PartnerConfig, listing: Listing, materialized_versions: Mapping[str, str]
                        ) -> list[tuple[str, RemoteEntry]]:
    """Landed files whose size and mtime agree but whose identity includes content: (key, entry), sorted."""
    wanted = []
    for entry in listing.files:
        key = encode_partition_key(entry.relative_path)
        if _comparison(partner, entry, materialized_versions.get(key)) == "content":
            wanted.append((key, entry))
    return sorted(wanted, key=lambda item: item[0])


def plan_ingestion(
    partner: PartnerConfig,
    listing: Listing,
    *,
    materialized_versions: Mapping[str, str],
    in_progress: set[str],
    failed_attempts: Mapping[str, int],
    existing_keys: Callable[[], Sequence[str]],
    cursor: SensorCursor,
    now: int,
    last_landed: Mapping[str, int] | None = None,
    content_digests: Mapping[str, str] | None = None,
) -> Plan:
    """``failed_attempts``: partition → storage id of its latest failed attempt; ``last_landed``:
    partition → storage id of its latest materialization (needed with delete/move, whose retries
    land nothing new). Both go into run keys, so a retry never collides with the run it retries."""
    limits = partner.limits
    attempt_ids = {**(last_landed or {}), **failed_attempts}
    candidates, awaiting_action = [], []
    for entry in listing.files:
        key = encode_partition_key(entry.relative_path)
        if _landed_state(partner, entry, materialized_versions.get(key), content_digests or {}, key) != "landed":
            candidates.append(_Candidate(key, entry))
        elif partner.after_landing != "leave" and key not in in_progress:
            # Landed at this version but still on the server: its delete/move failed. Ask again; the
            # run finds it landed and only redoes the action.
            awaiting_action.append(_Candidate(key, entry))
    candidates.sort(key=lambda c: c.key)
    busy = [c for c in candidates if c.key in in_progress]
    candidates = [c for c in candidates if c.key not in in_progress]

    stable, waiting, first_seen = _stable(partner, listing, candidates, cursor.first_seen, now, busy)
    retried = {c.key for c in stable if c.key in failed_attempts} | {c.key for c in awaiting_action}
    retries, backing_off = _back_off(partner, stable + awaiting_action, retried, attempt_ids, cursor.retries, now)
    stable = [c for c in stable if c.key not in backing_off]
    awaiting_action = [c for c in awaiting_action if c.key not in backing_off]
    # Files never attempted come first, so files that keep failing (or keep refusing their delete/move)
    # cannot take a tick's whole budget and starve new ones.
    stable = sorted(stable, key=lambda c: (c.key in failed_attempts, c.key)) + sorted(
        awaiting_action, key=lambda c: c.key)
    taken, deferred = stable[: limits.max_partitions_per_tick], len(stable) - limits.max_partitions_per_tick

    new_keys: list[str] = []
    runs: list[RunBatch] = []
    regroup: list[str] = []
    if taken:
        order = {key: i for i, key in enumerate(existing_keys())}
        new = [c for c in taken if c.key not in order]
        old = sorted((c for c in taken if c.key in order), key=lambda c: order[c.key])
        new_keys = [c.key for c in new]
        runs.extend(_cut(partner, new, attempt_ids))
        short = []
        for group in _consecutive(old, order):
            if len(group) >= min(MIN_RANGE_OF_EXISTING, limits.max_files_per_run):
                runs.extend(_cut(partner, group, attempt_ids))
            else:
                short.append(group)
        if len(short) <= MAX_SCATTERED_RUNS:
            for group in short:
                runs.extend(_cut(partner, group, attempt_ids))
        else:
            regroup = [c.key for group in short for c in group]
    next_cursor = SensorCursor(first_seen, cursor.problems_digest, retries, content_after=cursor.content_after)
    return Plan(new_keys=new_keys, runs=runs, cursor=next_cursor,
                regroup_keys=regroup, backing_off=len(backing_off),
                candidates=len(candidates) + len(busy), waiting_for_stability=waiting, in_progress=len(busy),
                deferred=max(deferred, 0))


def _stable(partner: PartnerConfig, listing: Listing, candidates: list[_Candidate], seen: Mapping[bytes, int],
            now: int, in_flight: list[_Candidate]) -> tuple[list[_Candidate], int, dict[bytes, int]]:
    rule = partner.stability
    checksums = partner.source_checksums
    listed_candidates = len(candidates)
    if checksums and checksums.required:
        # A file whose published digest is not there yet is not complete from the partner's side.
        candidates = [c for c in candidates
                      if _checksum_listed(checksums, c.entry.relative_path, listing.checksum_files)]
    if rule.done_marker:
        # The marker must be at least as new as the file: yesterday's marker does not vouch for today's file.
        ready = [c for c in candidates if _marker_vouches(listing, c.entry, rule.done_marker)]
        return ready, listed_candidates - len(ready), {}
    if rule.min_age_seconds == 0:
        return candidates, listed_candidates - len(candidates), {}
    # Only fingerprints of current candidates survive (a changed or vanished file drops out). Files that
    # became stable stay tracked, so a deferred file or one whose run failed needs no second wait; new
    # sightings fill the remaining capacity, so the cursor never outgrows it.
    capacity = 2 * partner.limits.max_partitions_per_tick
    ready, tracked, unseen = [], {}, []
    for candidate in candidates:
        fp = _fingerprint(candidate.key, candidate.token)
        first = seen.get(fp)
        if first is None:
            unseen.append(fp)
        else:
            tracked[fp] = first
            if now - first >= rule.min_age_seconds:
                ready.append(candidate)
    for candidate in in_flight:  # if their run fails they are retried without a second wait
        fp = _fingerprint(candidate.key, candidate.token)
        if fp in seen:
            tracked[fp] = seen[fp]
    for fp in unseen[: max(capacity - len(tracked), 0)]:
        tracked[fp] = now
    return ready, listed_candidates - len(ready), tracked


def _marker_vouches(listing: Listing, entry: RemoteEntry, suffix: str) -> bool:
    path = entry.relative_path + suffix
    if path not in listing.markers:
        return False
    marker_mtime = listing.markers[path]
    return marker_mtime is None or entry.mtime is None or marker_mtime >= entry.mtime


def _checksum_listed(rule, relative_path: str, listed: set[str]) -> bool:
    if rule.sidecar:
        return relative_path + rule.sidecar in listed
    directory = relative_path.rsplit("/", 1)[0] if "/" in relative_path else ""
    return (f"{directory}/{rule.manifest}" if directory else rule.manifest) in listed


def _back_off(partner: PartnerConfig, candidates: list[_Candidate], retried: set[str], attempt_ids: Mapping[str, int],
              previous: Mapping[bytes, tuple[int, int, int]], now: int
              ) -> tuple[dict[bytes, tuple[int, int, int]], set[str]]:
    """Count consecutive failures per file version and hold back those not yet due for another try."""
    state: dict[bytes, tuple[int, int, int]] = {}
    waiting: set[str] = set()
    capacity = 2 * partner.limits.max_partitions_per_tick
    for candidate in candidates:
        if candidate.key not in retried or len(state) >= capacity:
            continue
        fp = _fingerprint(candidate.key, candidate.token)
        attempt = attempt_ids.get(candidate.key, 0)
        counted, failures, not_before = previous.get(fp, (0, 0, 0))
        if counted != attempt:  # a failure not counted yet
            failures += 1
            delay = 0 if failures < 2 else partner.sensor.interval_seconds * 2 ** (failures - 2)
            not_before = now + min(delay, MAX_RETRY_DELAY_SECONDS)
        state[fp] = (attempt, min(failures, 65_535), not_before)
        if now < not_before:
            waiting.add(candidate.key)
    return state, waiting


def _consecutive(candidates: list[_Candidate], order: Mapping[str, int]) -> list[list[_Candidate]]:
    groups: list[list[_Candidate]] = []
    for candidate in candidates:
        if groups and order[groups[-1][-1].key] + 1 == order[candidate.key]:
            groups[-1].append(candidate)
        else:
            groups.append([candidate])
    return groups


def _cut(partner: PartnerConfig, group: Sequence[_Candidate], failed_attempts: Mapping[str, int]) -> list[RunBatch]:
    limits = partner.limits
    batches, current, size = [], [], 0
    for candidate in group:
        if current and (len(current) >= limits.max_files_per_run
                        or size + candidate.entry.size > limits.max_bytes_per_run):
            batches.append(_batch(partner, current, size, failed_attempts))
            current, size = [], 0
        current.append(candidate)
        size += candidate.entry.size
    if current:
        batches.append(_batch(partner, current, size, failed_attempts))
    return batches


def _batch(partner: PartnerConfig, members: Sequence[_Candidate], size: int,
           failed_attempts: Mapping[str, int]) -> RunBatch:
    digest = hashlib.sha256()
    for member in members:
        digest.update(f"{member.key}={member.token}@{failed_attempts.get(member.key, 0)}\n".encode())
    return RunBatch(keys=tuple(m.key for m in members), total_bytes=size,
                    run_key=f"{partner.name}:{digest.hexdigest()[:40]}")
