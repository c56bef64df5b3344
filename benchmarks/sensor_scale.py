"""How long the partner sensor's ticks take on a busy partner's tree, against Dagster's 60 s sensor timeout.

Why: a sensor tick must list the whole remote tree and decide what is new from what Dagster has
materialized, and it is killed after 60 s (``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``). A full recursive
walk in one tick is exactly how peers have blown that timeout. This puts numbers on the ticks that
matter at 100,000 files, shows where the time goes (cProfile), and gives OpenSSH's own ``sftp`` listing
the same tree as the reference for the listing part.

Everything runs on this machine over 127.0.0.1: a real OpenSSH sshd and a moto server (Secrets Manager
holds the partner's password) from the test harness (``partner_ingest_tests/harness``), started here
and stopped by PID at the end, even on Ctrl-C or an error. Dagster storage is a temporary SQLite
instance (``dagster.instance_for_test()``), as in the local deployment (production uses Postgres). The
sensor is evaluated as the test helper ``SensorDriver`` does and its partition requests are applied the
way the daemon applies them (``_handle_dynamic_partitions_requests`` in ``dagster/_daemon/sensor.py``: one
``has_dynamic_partition`` per key, then one ``add_dynamic_partitions`` for the missing keys of an
``AddDynamicPartitionsRequest``, or one ``delete_dynamic_partition`` per existing key of a
``DeleteDynamicPartitionsRequest``, Dagster having no bulk delete).
Runs are never launched; where a tick needs earlier runs to exist or to have succeeded, that state is
written to the instance directly (runs created, not started, with their per-partition "materialization
planned" events; successful files recorded as runless materializations at the file's version).

Needs root (sshd authenticates system accounts) and openssh-server/-client. Run from the repository
root:

    sudo .venv/bin/python benchmarks/sensor_scale.py                      # 100,000 files, 100 per directory
    sudo .venv/bin/python benchmarks/sensor_scale.py --files 20000 --per-dir 50

Ticks measured (the partner's default limits: ``max_partitions_per_tick`` 2000, ``max_files_per_run`` 500):

1. first tick: every file is new; at most 2000 partitions are added, the rest come on later ticks;
2. second tick: the first tick's runs exist, not finished (their partitions in flight), 2000 more are added;
3. steady state: every file materialized at its current version, nothing new (reached by
   pre-populating: ticks with ``max_partitions_per_tick`` 10000, each requested file then recorded as
   materialized);
4. after ``--new`` (1000) new files are spread over the existing directories;
5. after ``--changed`` (1000) existing files, scattered over the tree, are rewritten with a new size: their
   partitions exist and are not consecutive, so the sensor deletes them (``DeleteDynamicPartitionsRequest``)
   rather than ask one run per file;
6. the tick after: the deleted keys come back as new keys, added sorted and contiguous, in ranged runs.

Profiled with cProfile (sensor evaluation only, on the same state again): the first tick (on a throwaway
instance), the steady-state tick and the changed-files tick (tick 5's state, evaluated again before its
partition requests are applied). cProfile slows per-call Python code several
times (``encode_partition_key`` most), so read its seconds as shares, the timed ticks as the costs.

References, same tree, page cache warm: OpenSSH ``sftp -b`` with one ``ls -l <dir>`` line per directory
(OpenSSH's sftp has no recursive ls), the whole command timed including its login (a batch with only
``pwd`` is timed too, for the login alone); and ``partner_ingest.sftp.walk.walk()`` alone after
``SftpResource.open``.

Memory is the benchmark process's peak RSS (``ru_maxrss``, monotonic). The cursor size is the
length of the encoded cursor after each tick. The tree is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import math
import os
import platform
import pstats
import re
import resource
import secrets
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SENSOR_TIMEOUT_SECONDS = 60.0
SLOW_TICK_SECONDS = 20.0
PARTITIONS_PER_PREPOPULATE_TICK = 10_000
FAST_WRITE_CHUNK = 500


# --------------------------------------------------------------------------------------------------
# the tree on disk


@dataclass(frozen=True)
class Shape:
    """``files`` files, ``per_dir`` to a leaf directory, ``subdirs`` leaf directories to a top directory."""

    files: int
    per_dir: int
    subdirs: int

    @property
    def leaf_count(self) -> int:
        return math.ceil(self.files / self.per_dir)

    def leaf(self, index: int) -> str:
        return f"d{index // self.subdirs:03d}/s{index % self.subdirs:02d}"

    def leaves(self) -> list[str]:
        return [self.leaf(i) for i in range(self.leaf_count)]

    def directories(self) -> list[str]:
        """Every directory a recursive listing visits, relative to the tree root ("" is the root)."""
        tops = sorted({leaf.split("/")[0] for leaf in self.leaves()})
        return ["", *tops, *self.leaves()]

    def file(self, index: int) -> str:
        return f"{self.leaf(index // self.per_dir)}/f{index:06d}.csv"


@dataclass
class Tree:
    """The files written under ``root`` and each one's version token as the sensor will see it."""

    root: Path
    shape: Shape
    versions: dict[str, str] = field(default_factory=dict)  # relative path -> "<size>-<mtime>"

    def write(self, relative_path: str, data: bytes) -> None:
        from partner_ingest.ingest.plan import version_token

        path = self.root / relative_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fchmod(fd, 0o644)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        # SFTP (v3) carries whole seconds; the walk uses int(st_mtime), so does the token here.
        self.versions[relative_path] = version_token(st.st_size, int(st.st_mtime))


def build_tree(root: Path, shape: Shape) -> Tree:
    tree = Tree(root=root, shape=shape)
    for relative in shape.directories()[1:]:
        directory = root / relative
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)
    for index in range(shape.files):
        tree.write(shape.file(index), f"{index}\n".encode())
    return tree


def add_new_files(tree: Tree, count: int) -> list[str]:
    """``count`` new files spread round-robin over the existing leaf directories."""
    leaves = tree.shape.leaves()
    names = [f"{leaves[i % len(leaves)]}/new{i:05d}.csv" for i in range(count)]
    for name in names:
        tree.write(name, b"new file\n")
    return names


def change_files(tree: Tree, count: int) -> list[str]:
    """``count`` existing files, evenly scattered over the tree, rewritten with a different size."""
    step = max(tree.shape.files // max(count, 1), 1)
    names = [tree.shape.file(i) for i in range(0, tree.shape.files, step)][:count]
    for name in names:
        tree.write(name, b"rewritten by the partner, longer than before\n")
    return names


# --------------------------------------------------------------------------------------------------
# measurements


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class TickResult:
    label: str
    evaluate_s: float  # the sensor function as Dagster evaluates it: what the 60 s timeout covers
    apply_s: float  # the daemon's part: has_dynamic_partition per requested key, then the add or the deletes
    added: int
    deleted: int
    runs: int
    files_in_runs: int
    largest_run: int
    cursor_bytes: int
    peak_rss_mib: float
    skip_reason: str | None
    sensor_log: list[str]
    requested_keys: list[str]
    run_requests: list[Any]

    @property
    def total_s(self) -> float:
        return self.evaluate_s + self.apply_s


class LogCapture(logging.Handler):
    """The sensor's own log lines (its summary says how long the listing took), kept instead of printed."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def capture_sensor_log(context: Any) -> LogCapture:
    """The sensor context's logger writes to its own console handler; collect its lines instead."""
    capture = LogCapture()
    logger = context.log
    for handler in list(logger.handlers):
        if type(handler).__name__ == "DispatchingLogHandler":
            logger.removeHandler(handler)
    logger.addHandler(capture)
    return capture


def expand(keys: Sequence[str], requests: Sequence[Any]) -> list[list[str]]:
    """The partition keys of each run request (one key, or a range of ``keys``, the partitions in insertion order).

    Like the harness's ``SensorDriver.keys_of``, but one index of ``keys`` serves every request instead of
    a partition listing and a linear search per request."""
    from partner_ingest.defs.tags import RANGE_END_TAG, RANGE_START_TAG

    position = {key: i for i, key in enumerate(keys)}
    batches = []
    for request in requests:
        if request.partition_key:
            batches.append([request.partition_key])
            continue
        start = position[request.tags[RANGE_START_TAG]]
        end = position[request.tags[RANGE_END_TAG]]
        batches.append(keys[start:end + 1])
    return batches


@dataclass
class Evaluation:
    data: Any  # SensorExecutionData
    seconds: float
    sensor_log: list[str]


def evaluate(driver: Any, *, profile: cProfile.Profile | None = None) -> Evaluation:
    """``evaluate_tick`` as ``SensorDriver.tick`` calls it, timed: what the 60 s sensor timeout covers."""
    from dagster import build_sensor_context

    from partner_ingest.defs.resources import default_resources

    instance = driver.instance
    with build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=driver.defs,
                              cursor=driver.cursor, resources=default_resources()) as context:
        log = capture_sensor_log(context)
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        try:
            data = driver.sensor.evaluate_tick(context)
        finally:
            if profile is not None:
                profile.disable()
        seconds = time.perf_counter() - started
    return Evaluation(data=data, seconds=seconds, sensor_log=log.lines)


def apply_partition_requests(instance: Any, requests: Sequence[Any], *, daemon_checks: bool = True
                             ) -> tuple[int, int]:
    """As ``_handle_dynamic_partitions_requests`` in ``dagster/_daemon/sensor.py``: per request, one
    ``has_dynamic_partition`` per key; an add request adds the missing keys in one call, a delete request
    deletes the existing keys one ``delete_dynamic_partition`` at a time. Returns (added, deleted).
    ``daemon_checks=False`` skips the existence checks (pre-population only)."""
    from dagster import AddDynamicPartitionsRequest, DeleteDynamicPartitionsRequest

    added = deleted = 0
    for request in requests:
        name = request.partitions_def_name
        if isinstance(request, AddDynamicPartitionsRequest):
            missing = [k for k in request.partition_keys
                       if not daemon_checks or not instance.has_dynamic_partition(name, k)]
            if missing:
                instance.add_dynamic_partitions(name, missing)
            added += len(missing)
        elif isinstance(request, DeleteDynamicPartitionsRequest):
            present = [k for k in request.partition_keys
                       if not daemon_checks or instance.has_dynamic_partition(name, k)]
            for key in present:
                instance.delete_dynamic_partition(name, key)
            deleted += len(present)
        else:
            raise TypeError(f"unexpected dynamic partitions request {request!r}")
    return added, deleted


def keys_after(keys: Sequence[str], requests: Sequence[Any]) -> list[str]:
    """The partitions in insertion order as they would be after ``requests``, without applying them."""
    from dagster import DeleteDynamicPartitionsRequest

    result = list(keys)
    for request in requests:
        if isinstance(request, DeleteDynamicPartitionsRequest):
            gone = set(request.partition_keys)
            result = [k for k in result if k not in gone]
        else:
            present = set(result)
            result.extend(k for k in request.partition_keys if k not in present)
    return result


def settle(driver: Any, label: str, evaluation: Evaluation, *, apply: bool = True, daemon_checks: bool = True
           ) -> TickResult:
    """The daemon's half of a tick: apply the partition requests (timed) and advance the cursor; then read
    the run requests' partitions. ``apply=False`` leaves the instance and the cursor as they were (for
    evaluating the same state again) and counts what would have been added or deleted."""
    from dagster import DeleteDynamicPartitionsRequest

    from partner_ingest.defs.partitions import partitions_name

    instance, data = driver.instance, evaluation.data
    requests = list(data.dynamic_partitions_requests or [])
    started = time.perf_counter()
    if apply:
        added, deleted = apply_partition_requests(instance, requests, daemon_checks=daemon_checks)
    applied = time.perf_counter()
    keys = list(instance.get_dynamic_partitions(partitions_name(driver.partner)))
    if apply:
        driver.cursor = data.cursor
    else:
        after = keys_after(keys, requests)
        added = len(set(after) - set(keys))
        deleted = sum(len(r.partition_keys) for r in requests if isinstance(r, DeleteDynamicPartitionsRequest))
        keys = after
    batches = expand(keys, data.run_requests)
    return TickResult(
        label=label, evaluate_s=evaluation.seconds, apply_s=applied - started if apply else 0.0, added=added,
        deleted=deleted, runs=len(data.run_requests), files_in_runs=sum(len(b) for b in batches),
        largest_run=max((len(b) for b in batches), default=0), cursor_bytes=len((data.cursor or "").encode()),
        peak_rss_mib=peak_rss_mib(), skip_reason=data.skip_message, sensor_log=evaluation.sensor_log,
        requested_keys=[k for b in batches for k in b], run_requests=list(data.run_requests))


def tick(driver: Any, label: str, *, profile: cProfile.Profile | None = None, daemon_checks: bool = True,
         apply: bool = True) -> TickResult:
    """``SensorDriver.tick`` with its two halves timed apart, the daemon's per-key existence checks included
    (``daemon_checks=False``: no checks, for pre-population only; ``apply=False``: see ``settle``)."""
    return settle(driver, label, evaluate(driver, profile=profile), apply=apply, daemon_checks=daemon_checks)


# --------------------------------------------------------------------------------------------------
# state a tick depends on: queued runs, successful materializations


def _entry(dagster_event: Any, run_id: str) -> Any:
    from dagster._core.events.log import EventLogEntry

    return EventLogEntry(user_message="", level=logging.INFO, job_name=dagster_event.job_name, run_id=run_id,
                         error_info=None, timestamp=time.time(), step_key=dagster_event.step_key,
                         dagster_event=dagster_event)


def store_asset_events(instance: Any, entries: Sequence[Any], *, fast: bool) -> None:
    """Write asset events as ``store_event`` does, or (``fast``) the same rows a few hundred per transaction.

    ``store_event`` on SQLite opens four connections per event (~9 ms here), so 100,000 events take
    15 minutes; the fast path writes the same rows (run shard, index shard, indexed tags, the asset's
    latest-event row) with the storage's own statement builders. The caller checks the result
    through the public read API.
    """
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    if not fast or not isinstance(storage, SqliteEventLogStorage):
        for entry in entries:
            instance.handle_new_event(entry)
        return
    by_run: dict[str, list[Any]] = {}
    for entry in entries:
        by_run.setdefault(entry.run_id, []).append(entry)
    for run_id, group in by_run.items():
        for start in range(0, len(group), FAST_WRITE_CHUNK):
            chunk = group[start:start + FAST_WRITE_CHUNK]
            with storage.run_connection(run_id) as conn:
                conn.execute(storage.prepare_insert_event_batch(chunk))
            with storage.index_transaction() as conn:
                ids = [conn.execute(storage.prepare_insert_event(e)).inserted_primary_key[0] for e in chunk]
                storage._store_asset_event_tags(conn, chunk, ids)
                storage._store_asset_event(conn, chunk[-1], ids[-1])  # one asset: only the latest row counts


def record_materialized(instance: Any, driver: Any, keys: Sequence[str], tree: Tree, *, fast: bool) -> None:
    """Each key as landed at the file's current version: what ``defs/assets.py`` ``materialization()`` records."""
    from dagster import AssetMaterialization
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    from partner_ingest.defs.asset_keys import files_asset_key
    from partner_ingest.defs.tags import DATA_VERSION_TAG
    from partner_ingest.ingest.partition_keys import decode_partition_key

    asset_key = files_asset_key(driver.partner)
    events = [AssetMaterialization(asset_key=asset_key, partition=key,
                                   tags={DATA_VERSION_TAG: tree.versions[decode_partition_key(key)]})
              for key in keys]
    if not fast:
        for event in events:
            instance.report_runless_asset_event(event)
        return
    entries = [_entry(DagsterEvent(event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                                   event_specific_data=StepMaterializationData(event), job_name=RUNLESS_JOB_NAME),
                      RUNLESS_RUN_ID) for event in events]
    store_asset_events(instance, entries, fast=True)


def queue_runs(instance: Any, driver: Any, result: TickResult, *, fast: bool) -> None:
    """Create the tick's runs (NOT_STARTED, never launched) with one "materialization planned" event per
    partition, as the daemon's run creation does on SQLite, so the next tick sees those partitions in flight."""
    from dagster import DagsterRunStatus
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent
    from dagster._core.test_utils import create_run_for_test

    from partner_ingest.defs.asset_keys import files_asset_key
    from partner_ingest.defs.partitions import partitions_name

    asset_key = files_asset_key(driver.partner)
    step_key = asset_key.to_python_identifier()
    entries = []
    batches = expand(instance.get_dynamic_partitions(partitions_name(driver.partner)), result.run_requests)
    for request, keys in zip(result.run_requests, batches, strict=True):
        run_id = str(uuid.uuid4())
        create_run_for_test(instance, job_name="__ASSET_JOB", run_id=run_id, status=DagsterRunStatus.NOT_STARTED,
                            tags=dict(request.tags), asset_selection=frozenset({asset_key}))
        for key in keys:
            planned = DagsterEvent.build_asset_materialization_planned_event(
                "__ASSET_JOB", step_key, AssetMaterializationPlannedData(asset_key, partition=key))
            entries.append(_entry(planned, run_id))
    store_asset_events(instance, entries, fast=fast)


# --------------------------------------------------------------------------------------------------
# reference listings


def time_openssh_listing(sshd: Any, tree: Tree, scratch: Path, timeout: float) -> tuple[float, float, int]:
    """OpenSSH ``sftp -b``: one ``ls -l <dir>`` per directory of the tree, and the same login with only ``pwd``."""
    from partner_ingest_tests.harness.sshd import KEY_USER

    key_file = scratch / "client_ed25519"
    key_file.write_text(sshd.client_keys["ed25519"].private_pem)
    key_file.chmod(0o600)
    known_hosts = scratch / "known_hosts"
    known_hosts.write_text("".join(f"[127.0.0.1]:{sshd.port} {line}\n" for line in sshd.host_key_lines.values()))

    def run(batch: str) -> tuple[float, str]:
        batch_file = scratch / f"batch-{secrets.token_hex(4)}"
        batch_file.write_text(batch)
        cmd = ["sftp", "-q", "-F", "/dev/null", "-b", str(batch_file), "-i", str(key_file),
               "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=15",
               "-P", str(sshd.port), f"{KEY_USER}@127.0.0.1"]
        from partner_ingest_tests.harness.processes import run_in_own_group

        started = time.perf_counter()
        done = run_in_own_group(cmd, timeout=timeout)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"sftp exited with {done.returncode}: {done.stderr[-2000:]}")
        return seconds, done.stdout

    login_only, _ = run("pwd\n")
    batch = "".join(f"ls -l {tree.root / d if d else tree.root}\n" for d in tree.shape.directories())
    seconds, out = run(batch)
    lines = sum(1 for line in out.splitlines() if line and not line.startswith("sftp>"))
    return seconds, login_only, lines


def time_our_walk(partner: Any) -> tuple[float, float, int, int]:
    """``SftpResource.open`` (secret from moto, SSH login) and ``walk()`` alone, as the sensor calls them."""
    from partner_ingest.defs.resources import default_resources
    from partner_ingest.ingest.selection import Selection
    from partner_ingest.sftp.walk import walk

    sftp = default_resources()["sftp"]
    started = time.perf_counter()
    with sftp.open(partner) as session:  # type: ignore[attr-defined]
        connected = time.perf_counter()
        listing = walk(session, Selection(partner))
        walked = time.perf_counter()
    return connected - started, walked - connected, len(listing.files), listing.directories


# --------------------------------------------------------------------------------------------------
# profiles


PHASES: list[tuple[str, str, str]] = [
    # (label, file suffix, function name)
    ("SftpResource.open (secret + SSH login)", "defs/resources.py", "open"),
    ("walk() (recursive SFTP listing)", "sftp/walk.py", "walk"),
    ("  paramiko listdir_attr", "paramiko/sftp_client.py", "listdir_attr"),
    ("get_latest_tags_by_partition (materialized versions)", "sql_event_log.py", "get_latest_tags_by_partition"),
    ("_attempts (in-flight / failed partitions)", "defs/sensors.py", "_attempts"),
    ("plan_ingestion", "ingest/plan.py", "plan_ingestion"),
    ("  encode_partition_key", "ingest/partition_keys.py", "encode_partition_key"),
    ("  get_dynamic_partitions (existing_keys)", "", "get_dynamic_partitions"),
    ("  _stable", "ingest/plan.py", "_stable"),
    ("  _cut (run batches)", "ingest/plan.py", "_cut"),
    ("run_requests()", "defs/sensors.py", "run_requests"),
    ("Dagster: has_dynamic_partition (storage calls)", "sql_event_log.py", "has_dynamic_partition"),
]


def profile_report(profile: cProfile.Profile, top: int) -> list[str]:
    stats = pstats.Stats(profile)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = max((ct for (_, _, _, ct, _) in raw.values()), default=0.0)
    lines = [f"    {'cum s':>7} {'own s':>7} {'calls':>9}  function (builtins and contextlib frames left out)"]
    ranked = sorted(raw.items(), key=lambda item: item[1][3], reverse=True)
    shown = 0
    for (filename, lineno, name), (_, calls, own, cumulative, _) in ranked:
        if filename == "~" or filename.endswith("contextlib.py"):
            continue  # builtins (exec, next) and context-manager plumbing only repeat their callers' time
        lines.append(f"    {cumulative:7.2f} {own:7.2f} {calls:9d}  {_short(filename)}:{lineno}({name})")
        shown += 1
        if shown >= top:
            break
    lines.append("  phases (cumulative seconds of the named calls; nested rows are part of the row above):")
    for label, suffix, name in PHASES:
        cumulative, calls = 0.0, 0
        for (filename, _, fn), (_, ncalls, _, ct, _) in raw.items():
            if fn == name and filename.endswith(suffix or ".py"):
                cumulative += ct
                calls += ncalls
        if calls:
            lines.append(f"    {cumulative:7.2f} s  {calls:7d} calls  {label}")
    lines.append(f"    {total:7.2f} s  total under the profiler (profiling slows pure-Python code)")
    return lines


def _short(filename: str) -> str:
    for marker in ("site-packages/", f"{Path(__file__).resolve().parents[1]}/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return re.sub(r"^.*/python3\.\d+/", "", filename)


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Servers:
    sshd: Any = None
    moto: Any = None
    saved_env: dict[str, str | None] = field(default_factory=dict)

    def stop(self) -> None:
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for server in (self.moto, self.sshd):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        if self.sshd is not None:
            shutil.rmtree(self.sshd.workdir, ignore_errors=True)


def start_servers(servers: Servers) -> None:
    from partner_ingest_tests.harness.moto_server import start_moto
    from partner_ingest_tests.harness.sshd import start_sshd

    servers.sshd = start_sshd()
    servers.moto = start_moto()
    names = (*servers.moto.env(), "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE")
    servers.saved_env = {name: os.environ.get(name) for name in names}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
        os.environ.pop(name, None)
    os.environ.update(servers.moto.env())


def make_partner(servers: Servers, tree_root: Path, bucket: str, **overrides: Any) -> Any:
    from partner_ingest.config import PartnerConfig
    from partner_ingest_tests.harness.sshd import PASSWORD_USER

    return PartnerConfig(name="scale", host="127.0.0.1", port=servers.sshd.port, username=PASSWORD_USER,
                         secret_id=overrides.pop("secret_id"), host_keys=[servers.sshd.host_key_lines["ed25519"]],
                         remote_dir=str(tree_root), landing_prefix="partners/scale",
                         stability={"min_age_seconds": 0}, **overrides)


def fmt_tick(r: TickResult) -> str:
    return (f"  {r.label:<44} sensor {r.evaluate_s:6.2f} s  + daemon apply {r.apply_s:5.2f} s  | "
            f"partitions added {r.added:5d} deleted {r.deleted:4d}  "
            f"runs {r.runs:4d} ({r.files_in_runs} files, largest {r.largest_run})  "
            f"cursor {r.cursor_bytes} B  peak RSS {r.peak_rss_mib:.0f} MiB")


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    import boto3
    import dagster
    import paramiko
    from dagster import instance_for_test

    from partner_ingest.config import IngestConfig, LandingConfig
    from partner_ingest.ingest.partition_keys import encode_partition_key
    from partner_ingest_tests.harness.sensor_helpers import SensorDriver
    from partner_ingest_tests.harness.sshd import make_tree_dir

    shape = Shape(files=args.files, per_dir=args.per_dir, subdirs=args.subdirs)
    fast = args.prepopulate == "batch"
    servers = Servers()
    profiles: list[tuple[str, cProfile.Profile]] = []
    ticks: list[TickResult] = []
    tree: Tree | None = None
    try:
        start_servers(servers)
        secret_id = f"partner-ingest/scale-{secrets.token_hex(4)}"
        boto3.client("secretsmanager").create_secret(Name=secret_id,
                                                     SecretString=json.dumps({"password": servers.sshd.password}))
        bucket = f"scale-{secrets.token_hex(6)}"  # never written: no run is launched
        tree_root = make_tree_dir(servers.sshd, "scale")
        scratch = servers.sshd.workdir / "bench-scratch"
        scratch.mkdir(mode=0o700)

        out(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"dagster {dagster.__version__}, paramiko {paramiko.__version__}; load average {os.getloadavg()[0]:.2f}")
        out(f"servers: OpenSSH sshd on 127.0.0.1:{servers.sshd.port} (pid {servers.sshd.proc.pid}), "
            f"moto on {servers.moto.endpoint_url} (pid {servers.moto.proc.pid}); Dagster: temporary SQLite instance "
            "from dagster.instance_for_test() on local disk, like the local deployment (production: Postgres)")
        started = time.perf_counter()
        tree = build_tree(tree_root, shape)
        out(f"tree: {shape.files} files of a few bytes, {shape.per_dir} per leaf directory, {shape.leaf_count} leaf "
            f"directories in {len(shape.directories()) - 1 - shape.leaf_count} top directories "
            f"({len(shape.directories())} directories listed in all incl. the root), written in "
            f"{time.perf_counter() - started:.1f} s under {tree_root}")

        partner = make_partner(servers, tree_root, bucket, secret_id=secret_id)
        config = IngestConfig(landing=LandingConfig(bucket=bucket), partners=[partner])
        out(f"partner limits: max_partitions_per_tick {partner.limits.max_partitions_per_tick}, "
            f"max_files_per_run {partner.limits.max_files_per_run}; stability min_age_seconds 0")

        out("")
        out("reference listings of the same tree (page cache warm; each run twice):")
        for attempt in (1, 2):
            seconds, login, lines = time_openssh_listing(servers.sshd, tree, scratch, args.timeout)
            out(f"  OpenSSH sftp -b, {len(shape.directories())} x 'ls -l <dir>' (user pi_key, Ed25519 key), whole "
                f"command incl. login, run {attempt}: {seconds:.2f} s ({lines} output lines); the same login "
                f"with only 'pwd': {login:.2f} s")
        for attempt in (1, 2):
            connect, walked, files, directories = time_our_walk(partner)
            out(f"  ours: SftpResource.open (secret from moto + SSH login as pi_pw) {connect:.2f} s, then "
                f"partner_ingest.sftp.walk.walk() {walked:.2f} s ({files} files, {directories} directories), "
                f"run {attempt}")

        out("")
        out("ticks (sensor = evaluate_tick, what the 60 s timeout covers; daemon apply = has_dynamic_partition "
            "per key + add_dynamic_partitions, or delete_dynamic_partition per key):")
        # The first tick under the profiler on a throwaway instance, then the measured run on a fresh one.
        with instance_for_test() as instance:
            first_profile = cProfile.Profile()
            profiled = tick(SensorDriver(config, instance), "0. first tick under cProfile (throwaway instance)",
                            profile=first_profile)
            out(fmt_tick(profiled))
            profiles.append(("first tick", first_profile))
        with instance_for_test() as instance:
            driver = SensorDriver(config, instance)
            first = tick(driver, "1. first tick (all files new)")
            ticks.append(first)
            out(fmt_tick(first))
            started = time.perf_counter()
            queue_runs(instance, driver, first, fast=fast)
            out(f"     (created its {first.runs} runs, NOT_STARTED, with {first.files_in_runs} planned events "
                f"in {time.perf_counter() - started:.1f} s)")
            second = tick(driver, "2. second tick (tick 1's runs in flight)")
            ticks.append(second)
            out(fmt_tick(second))
            overlap = len(set(first.requested_keys) & set(second.requested_keys))
            out(f"     (files requested by both ticks: {overlap})")

            # Pre-populate: everything asked so far, then bulk ticks, each recorded as materialized.
            started = time.perf_counter()
            record_materialized(instance, driver, first.requested_keys + second.requested_keys, tree, fast=fast)
            bulk_partner = make_partner(servers, tree_root, bucket, secret_id=secret_id, limits={
                "max_partitions_per_tick": PARTITIONS_PER_PREPOPULATE_TICK,
                "max_files_per_run": PARTITIONS_PER_PREPOPULATE_TICK})
            bulk = SensorDriver(IngestConfig(landing=LandingConfig(bucket=bucket), partners=[bulk_partner]), instance)
            bulk_ticks = []
            for _ in range(math.ceil(shape.files / PARTITIONS_PER_PREPOPULATE_TICK) + 3):
                result = tick(bulk, f"prepopulate tick {len(bulk_ticks) + 1}", daemon_checks=False)
                bulk_ticks.append(result)
                if not result.requested_keys:
                    break
                record_materialized(instance, driver, result.requested_keys, tree, fast=fast)
            out(f"     (pre-populated in {time.perf_counter() - started:.1f} s: {len(bulk_ticks)} ticks at "
                f"max_partitions_per_tick {PARTITIONS_PER_PREPOPULATE_TICK}, sensor "
                f"{', '.join(f'{t.evaluate_s:.1f}' for t in bulk_ticks)} s; materializations written with "
                f"{'the storage statements in batches' if fast else 'report_runless_asset_event'})")
            check_materialized(instance, driver, tree, encode_partition_key)

            steady = tick(driver, "3. steady state (nothing new)")
            ticks.append(steady)
            out(fmt_tick(steady))
            out(f"     (skip reason: {steady.skip_reason})")
            steady_profile = cProfile.Profile()
            steady_again = tick(driver, "3b. steady state again, under cProfile", profile=steady_profile)
            out(fmt_tick(steady_again))
            profiles.append(("steady-state tick", steady_profile))

            add_new_files(tree, args.new)
            fresh = tick(driver, f"4. after {args.new} new files")
            ticks.append(fresh)
            out(fmt_tick(fresh))
            record_materialized(instance, driver, fresh.requested_keys, tree, fast=fast)

            changed_names = change_files(tree, args.changed)
            changed_eval = evaluate(driver)
            # Profiled on the same state, before tick 5's partition requests are applied: its deletions change
            # what the next evaluation sees (that is tick 6).
            changed_profile = cProfile.Profile()
            changed_again = tick(driver, "5b. the same state again, under cProfile", profile=changed_profile,
                                 apply=False)
            changed = settle(driver, f"5. after {len(changed_names)} changed files (scattered)", changed_eval)
            ticks.append(changed)
            out(fmt_tick(changed))
            out(fmt_tick(changed_again) + "  (requests not applied)")
            profiles.append(("changed-files tick", changed_profile))
            regrouped = tick(driver, "6. next tick (deleted keys re-added sorted)")
            ticks.append(regrouped)
            out(fmt_tick(regrouped))
            changed_keys = {encode_partition_key(name) for name in changed_names}
            requested = set(changed.requested_keys) | set(regrouped.requested_keys)
            out(f"     (changed files in runs over ticks 5 and 6: {len(changed_keys & requested)} of "
                f"{len(changed_keys)}; other files in those runs: {len(requested - changed_keys)}; partitions "
                f"deleted in tick 5: {changed.deleted}, of them re-added in tick 6: "
                f"{len(set(regrouped.requested_keys) & changed_keys)})")
            for result in ticks:
                for line in result.sensor_log:
                    if "listed in" in line:
                        out(f"     sensor log, {result.label.split(' (')[0]}: {line}")

        out("")
        out("summary:")
        out(f"  first tick:             {first.evaluate_s:6.2f} s sensor + {first.apply_s:.2f} s daemon apply "
            f"({first.added} partitions added of {shape.files}; at {partner.limits.max_partitions_per_tick} a tick "
            f"all are registered after {math.ceil(shape.files / partner.limits.max_partitions_per_tick)} ticks)")
        out(f"  steady tick, no change: {steady.evaluate_s:6.2f} s sensor")
        out(f"  after {args.new} new files:   {fresh.evaluate_s:6.2f} s sensor + {fresh.apply_s:.2f} s daemon apply; "
            f"{fresh.added} partitions added, {fresh.runs} runs "
            f"= {fresh.runs * 1000 / max(args.new, 1):.1f} runs per 1,000 new files (target <= 2)")
        two_ticks = changed.runs + regrouped.runs
        out(f"  after {len(changed_names)} changed files: tick 5 {changed.evaluate_s:.2f} s sensor + "
            f"{changed.apply_s:.2f} s daemon apply, {changed.runs} runs, {changed.deleted} partitions deleted; "
            f"tick 6 {regrouped.evaluate_s:.2f} s sensor + {regrouped.apply_s:.2f} s daemon apply, {regrouped.runs} "
            f"runs, {regrouped.added} partitions added")
        out(f"    = {two_ticks * 1000 / max(len(changed_names), 1):.1f} runs per 1,000 changed files over the two "
            f"ticks ({changed.files_in_runs + regrouped.files_in_runs} files in {two_ticks} runs)")
        out("  partitions added / deleted per tick: " + ", ".join(f"{t.label.split('.')[0]}: {t.added} / {t.deleted}"
                                                               for t in ticks))
        out("  cursor bytes after each tick: " + ", ".join(f"{t.label.split('.')[0]}: {t.cursor_bytes}"
                                                          for t in ticks))
        out(f"  load average now: {os.getloadavg()[0]:.2f} (other work on this {os.cpu_count()}-CPU machine "
            "skews the times)")
        out(f"  peak RSS of this process: {peak_rss_mib():.0f} MiB (ru_maxrss; includes the tree bookkeeping and "
            "the reference walks)")
        worst = max(ticks, key=lambda t: t.evaluate_s)
        out(f"  worst tick: {worst.label}: {worst.evaluate_s:.2f} s = {worst.evaluate_s / SENSOR_TIMEOUT_SECONDS:.2f} "
            f"of the {SENSOR_TIMEOUT_SECONDS:.0f} s sensor timeout (with the daemon's apply: {worst.total_s:.2f} s)")
        for result in ticks:
            if result.evaluate_s > SLOW_TICK_SECONDS:
                out(f"  WARNING: {result.label} took {result.evaluate_s:.1f} s (> {SLOW_TICK_SECONDS:.0f} s): "
                    "see its profile")
        order = ["first tick", "steady-state tick", "changed-files tick"]
        for label, profile in sorted(profiles, key=lambda item: order.index(item[0])):
            out("")
            out(f"profile of the {label} (sensor evaluation only), top {args.top} by cumulative time:")
            for line in profile_report(profile, args.top):
                out(line)
    finally:
        if tree is not None:
            shutil.rmtree(tree.root, ignore_errors=True)
        servers.stop()


def check_materialized(instance: Any, driver: Any, tree: Tree, encode: Callable[[str], str]) -> None:
    """Through the public read API: every file is materialized at its current version."""
    from dagster import DagsterEventType

    from partner_ingest.defs.asset_keys import files_asset_key
    from partner_ingest.defs.tags import DATA_VERSION_TAG

    latest = instance.event_log_storage.get_latest_tags_by_partition(
        files_asset_key(driver.partner), DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG])
    wrong = [path for path, token in tree.versions.items()
             if latest.get(encode(path), {}).get(DATA_VERSION_TAG) != token]
    if wrong:
        raise RuntimeError(f"pre-population left {len(wrong)} files not materialized at their version, "
                           f"e.g. {wrong[:3]}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the partner sensor's ticks on a large tree served by a real sshd over loopback "
                    "(first tick, steady state, new and changed files), with cProfile and an OpenSSH reference.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="files in the tree")
    parser.add_argument("--per-dir", type=int, default=100, help="files per leaf directory")
    parser.add_argument("--subdirs", type=int, default=10, help="leaf directories per top directory")
    parser.add_argument("--new", type=int, default=1000, help="new files added for tick 4")
    parser.add_argument("--changed", type=int, default=1000, help="existing files rewritten for ticks 5 and 6")
    parser.add_argument("--prepopulate", choices=("batch", "api"), default="batch",
                        help="how successful materializations (and planned events) are written: 'api' uses "
                             "instance.report_runless_asset_event / handle_new_event one event at a time "
                             "(~9 ms each on SQLite, so ~15 min for 100,000); 'batch' writes the same rows "
                             "a few hundred per transaction")
    parser.add_argument("--top", type=int, default=15, help="profile rows shown")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for each OpenSSH sftp command, seconds")
    args = parser.parse_args(argv)
    if args.files < 1 or args.per_dir < 1 or args.subdirs < 1 or args.new < 0 or args.changed < 0:
        parser.error("--files, --per-dir and --subdirs must be >= 1; --new and --changed >= 0")
    if args.changed > args.files:
        parser.error("--changed cannot exceed --files")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root: sshd authenticates system accounts (sudo .venv/bin/python benchmarks/sensor_scale.py)",
              file=sys.stderr)
        return 2
    if shutil.which("sftp") is None:
        print("OpenSSH's sftp client is missing: apt-get install openssh-client", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with contextlib.suppress(ImportError):
        from dagster import BetaWarning, PreviewWarning

        warnings.filterwarnings("ignore", category=BetaWarning)
        warnings.filterwarnings("ignore", category=PreviewWarning)

    def out(line: str) -> None:
        print(line, flush=True)

    run(args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
