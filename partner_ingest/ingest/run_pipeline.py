"""One run's files, landed over parallel SFTP sessions, reported file by file. Knows nothing of Dagster.

A run covers many files; small files are latency-bound, so they go over up to ``limits.max_connections``
sessions at once (fewer when the partner refuses extra sessions: that only slows the run), and each
session carries ``limits.files_per_connection`` files at a time: their SFTP requests share the session
(replies come back by request number, see ``SharedSFTPClient``), and while one file's PUT waits on S3 the
session serves the others, so a run of small files is bound by the slower side instead of the sum of
both. The files on a session hold at most ``limits.read_in_flight_bytes`` between them (``ByteBudget``).
Each file is landed, optionally read back from S3, has its after-landing action applied, and, for
archives, is expanded and checked. Whatever happens to one file is that file's :class:`FileOutcome`; the
others go on.

Outcomes are yielded one by one as files finish, in the consumer's thread, so the caller can record
each file while the rest are still moving. Closing the iterator early (the run was stopped) starts no
further file, waits for the files in flight and closes every session.

A file that takes longer than ``PROGRESS_EVERY_SECONDS`` reports its progress (bytes, %, MB/s, ETA)
at most that often; the lines are made in the worker threads but handed to ``progress`` from the
consumer's thread, between outcomes, so the caller may log them wherever it records the outcomes.
"""

from __future__ import annotations

import logging
import queue
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import AfterLandingError, PartitionKeyError, PartnerIngestError
from partner_ingest.ingest.after_landing import apply_after_landing
from partner_ingest.ingest.archives import Expansion, expand_archive, is_archive_name, verify_expansion
from partner_ingest.ingest.byte_budget import ByteBudget
from partner_ingest.ingest.partition_keys import decode_partition_key, relative_path_of_key
from partner_ingest.ingest.selection import Selection
from partner_ingest.ingest.transfer import LandedFile, land_file
from partner_ingest.s3.verify import verify_object
from partner_ingest.sftp.link import PartnerLink

log = logging.getLogger(__name__)

LinkFactory = Callable[[], PartnerLink]
"""A new, not yet connected link to the run's partner (``SftpResource.link(partner)`` in a run)."""

PROGRESS_EVERY_SECONDS = 10.0
"""A file logs its progress at most this often, and only once it has taken this long."""
_PROGRESS_POLL_SECONDS = 1.0  # at most this long between a progress line being made and handed over


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def format_progress(partner: str, relative_path: str, done: int, total: int, elapsed: float) -> str:
    """``partner 'acme': big.bin: 6.2 GiB of 20.0 GiB (31%), 182.4 MB/s, ETA 1m 17s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    percent = int(100 * done / total) if total > 0 else 100
    eta = _duration((total - done) / rate) if rate > 0 else "unknown"
    return (f"partner '{partner}': {relative_path}: {_size(done)} of {_size(total)} ({percent}%), "
            f"{rate / 1e6:.1f} MB/s, ETA {eta}")


class ProgressReporter:
    """A ``transfer.Progress`` callback that emits a formatted line at most every ``every`` seconds.

    Nothing is emitted before the file has taken ``every`` seconds, nor at its last byte (the
    "landed" line follows), so small files log nothing extra. ``clock`` is injectable for tests.
    """

    def __init__(self, emit: Callable[[str], None], partner: str, relative_path: str, *,
                 every: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self._partner = partner
        self._relative_path = relative_path
        self._every = PROGRESS_EVERY_SECONDS if every is None else every
        self._clock = clock
        self._started = self._last = clock()

    def __call__(self, done: int, total: int) -> None:
        if done >= total:
            return
        now = self._clock()
        if now - self._last < self._every:
            return
        self._last = now
        self._emit(format_progress(self._partner, self._relative_path, done, total, now - self._started))


class RunTally:
    """The run's files so far, as one line at most every ``every`` seconds and once at the end.

    For runs of many files, where one line per file would be one more event per file in Dagster's event log
    (on its SQLite storage the costliest part of a run of small files); each file's details are in its
    materialization's metadata, and each failure is logged on its own.
    """

    def __init__(self, partner: str, total: int, *, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._partner = partner
        self._total = total
        self._every = PROGRESS_EVERY_SECONDS if every is None else every
        self._clock = clock
        self._started = self._last = clock()
        self.done = self.landed = self.uploaded = self.failed = self.bytes = 0

    def add(self, outcome: FileOutcome) -> str | None:
        """Count one file; the line to log if ``every`` seconds passed since the last one.

        A file that landed but whose after-landing action failed counts as landed and as failed."""
        self.done += 1
        if outcome.recorded and outcome.landed is not None:
            self.landed += 1
            self.uploaded += outcome.landed.uploaded
            self.bytes += outcome.landed.version.size
        if outcome.failures:
            self.failed += 1
        now = self._clock()
        if now - self._last < self._every:
            return None
        self._last = now
        return self.line()

    def line(self) -> str:
        elapsed = self._clock() - self._started
        done = self.done
        rate = f", {done / elapsed:.1f} files/s" if elapsed > 0 else ""
        return (f"partner '{self._partner}': {done} of {self._total} files done in {_duration(elapsed)}: "
                f"{self.landed} landed ({self.uploaded} uploaded, {_size(self.bytes)}), {self.failed} failed{rate}")


@dataclass(frozen=True)
class Wanted:
    """What the run was asked for besides landing; each costs reads of S3, so only selected work is done."""

    object_check: bool = False       # read each landed object back and compare size and SHA-256
    archive_contents: bool = False   # expand archives (only for a partner with ``unzip: true``)
    expansion_check: bool = False    # check each expansion against the archive's central directory


@dataclass(frozen=True)
class ObjectVerification:
    """The landed object read back: what users reach under the key is what was read from the partner."""

    bucket: str
    key: str
    passed: bool
    description: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ExpansionVerification:
    """Every entry of the archive's central directory, compared with what is under its expansion prefix."""

    passed: bool
    description: str
    details: dict[str, Any]


@dataclass
class FileOutcome:
    """What one file of the run produced; built in a worker thread, reported in the consumer's.

    ``error`` is set when the file did not land (or something unexpected broke: then nothing else of
    the file is reported). A landed file whose object check failed is not recorded as landed, and its
    after-landing action is not applied.
    """

    partition_key: str
    remote_path: str                                  # where the key points, for messages
    landed: LandedFile | None = None
    error: PartnerIngestError | None = None
    object_check: ObjectVerification | None = None
    verification_error: PartnerIngestError | None = None
    after_landing: str = ""                           # what the action did, or that it waits; empty if not applied
    after_landing_error: AfterLandingError | None = None
    expansion: Expansion | None = None
    expansion_error: PartnerIngestError | None = None
    expansion_check: ExpansionVerification | None = None

    @property
    def recorded(self) -> bool:
        """Landed and, where it was checked, verified: the file counts as landed."""
        return self.landed is not None and self.verification_error is None

    @property
    def waiting_for_after_landing(self) -> str | None:
        """The remote path whose after-landing action failed: the sensor asks for it again."""
        return self.landed.remote_path if self.landed is not None and self.after_landing_error else None

    @property
    def failures(self) -> list[PartnerIngestError]:
        return [e for e in (self.error, self.verification_error, self.after_landing_error, self.expansion_error)
                if e is not None]


@dataclass
class RunReport:
    """The run as a whole; complete once every outcome has been consumed.

    ``unreachable`` is set when the first session failed (connection, host key, credentials, or
    ``remote_dir`` missing): then no file was tried.
    """

    total: int                                        # keys the run was asked for, refused ones included
    accepted: list[str]
    refused: list[PartitionKeyError]
    sessions: int = 0
    unreachable: PartnerIngestError | None = None
    outcomes: list[FileOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[PartnerIngestError]:
        """Refused keys first, then each file's failures in the order the files finished."""
        return [*self.refused, *(f for outcome in self.outcomes for f in outcome.failures)]

    @property
    def waiting_for_after_landing(self) -> list[str]:
        return [path for outcome in self.outcomes if (path := outcome.waiting_for_after_landing)]

    @property
    def succeeded(self) -> bool:
        return self.unreachable is None and not self.failures


def remote_path_of_key(partner: PartnerConfig, key: str) -> str:
    """For messages only: where a key points, shown even when the key is refused."""
    try:
        return f"{partner.remote_dir.rstrip('/')}/{decode_partition_key(key)}"
    except UnicodeDecodeError:
        return key


def accepted_relative_path(partner: PartnerConfig, key: str) -> str:
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


def refuse_foreign_keys(partner: PartnerConfig, keys: Sequence[str]) -> tuple[list[str], list[PartitionKeyError]]:
    """Split keys into those the sensor could have made and refusals, before any SFTP or S3 call."""
    accepted, refused = [], []
    for key in keys:
        try:
            accepted_relative_path(partner, key)
        except PartitionKeyError as exc:
            refused.append(exc)
            continue
        accepted.append(key)
    return accepted, refused


def verify_landed_object(s3: Any, *, bucket: str, key: str, size: int, sha256: str,
                         version_id: str | None) -> ObjectVerification:
    passed, description, metadata = verify_object(s3, bucket=bucket, key=key, size=size, sha256=sha256,
                                                  version_id=version_id)
    return ObjectVerification(bucket=bucket, key=key, passed=passed, description=description, metadata=metadata)


def verify_archive_expansion(s3: Any, *, bucket: str, archive_key: str) -> ExpansionVerification:
    """A broken or unreadable archive is a failed check, not an error: the check names what is wrong."""
    try:
        passed, details = verify_expansion(s3, bucket=bucket, archive_key=archive_key)
        description = (f"{details['entries_found']} of {details['entries_expected']} entries and "
                       f"{details['bytes_found']} of {details['bytes_expected']} bytes are under the expansion "
                       "prefix")
    except (zipfile.BadZipFile, ValueError, OSError, ClientError, BotoCoreError) as exc:
        passed, details = False, {}
        description = f"the archive cannot be checked ({type(exc).__name__}: {exc}); it was not expanded"
    return ExpansionVerification(passed=passed, description=description, details=details)


class RunPipeline:
    """Lands the accepted keys of one run; ``report`` tells what the run did once ``outcomes()`` is consumed.

    Keys are refused up front (a refused key never reaches the link factory, SFTP or S3). ``warn``
    receives what slows the run without failing a file (a refused extra session). ``progress``, if
    given, receives the progress lines of long files (see ``PROGRESS_EVERY_SECONDS``; ``progress_every``
    overrides it); like ``warn`` it is called only from the thread consuming ``outcomes()``.
    """

    def __init__(self, partner: PartnerConfig, *, bucket: str, keys: Sequence[str], links: LinkFactory, s3: Any,
                 wanted: Wanted = Wanted(), warn: Callable[[str], None] = log.warning,
                 progress: Callable[[str], None] | None = None, progress_every: float | None = None) -> None:
        self.partner = partner
        self.bucket = bucket
        self._links = links
        self._s3 = s3
        self._wanted = wanted
        self._warn = warn
        self._progress = progress
        self._progress_every = progress_every
        self._notes: queue.SimpleQueue[str] = queue.SimpleQueue()  # progress lines from the workers
        accepted, refused = refuse_foreign_keys(partner, keys)
        self.report = RunReport(total=len(keys), accepted=accepted, refused=refused)

    def outcomes(self) -> Iterator[FileOutcome]:
        """Each accepted file's outcome as soon as it is complete; nothing when no key or no session is usable."""
        keys = self.report.accepted
        if not keys:
            return
        links = self._open_links(len(keys))
        if links is None:
            return
        self.report.sessions = len(links)
        budgets = {id(link): ByteBudget(self.partner.limits.read_in_flight_bytes) for link in links}
        slots = min(len(keys), len(links) * self.partner.limits.files_per_connection)
        idle: queue.SimpleQueue[PartnerLink] = queue.SimpleQueue()
        for i in range(slots):  # round robin: the first files spread over every session
            idle.put(links[i % len(links)])

        def work(key: str) -> FileOutcome:
            link = idle.get()
            try:
                return self._land_one(link, key, budgets[id(link)])
            except Exception as exc:  # a bug or an untranslated library error: this file fails, the run goes on
                path = remote_path_of_key(self.partner, key)
                return FileOutcome(key, path, error=PartnerIngestError(
                    f"unexpected {type(exc).__name__} while landing it: {exc}", partner=self.partner.name,
                    path=path, action="the run can be retried; report this if it repeats"))
            finally:
                idle.put(link)

        pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"{self.partner.name}-file")
        try:
            order = {pool.submit(work, key): i for i, key in enumerate(keys)}
            pending = set(order)
            while pending:
                done, pending = wait(pending, timeout=_PROGRESS_POLL_SECONDS if self._progress else None,
                                     return_when=FIRST_COMPLETED)
                self._hand_over_progress()
                for future in sorted(done, key=order.__getitem__):
                    outcome = future.result()
                    self.report.outcomes.append(outcome)
                    yield outcome
        finally:
            # A stopped run stops here: files not yet started are not started.
            pool.shutdown(wait=True, cancel_futures=True)
            for link in links:
                link.close()

    def _hand_over_progress(self) -> None:
        while self._progress is not None:
            try:
                line = self._notes.get_nowait()
            except queue.Empty:
                return
            self._progress(line)

    def _open_links(self, wanted: int) -> list[PartnerLink] | None:
        """Up to ``limits.max_connections`` sessions; None (and ``report.unreachable``) if the first fails."""
        partner = self.partner
        first = self._links()
        try:
            first.session.check_remote_dir()
        except PartnerIngestError as exc:
            first.close()
            self.report.unreachable = exc
            return None
        links = [first]
        for _ in range(min(partner.limits.max_connections, wanted) - 1):
            extra = self._links()
            try:
                extra.session  # noqa: B018 - connects now, so a refused extra session is known up front
            except PartnerIngestError as exc:
                self._warn(f"partner '{partner.name}': continuing with {len(links)} connection(s): {exc}")
                break
            links.append(extra)
        return links

    def _land_one(self, link: PartnerLink, key: str, budget: ByteBudget) -> FileOutcome:
        partner, bucket, s3, wanted = self.partner, self.bucket, self._s3, self._wanted
        outcome = FileOutcome(key, remote_path_of_key(partner, key))
        try:
            relative_path = accepted_relative_path(partner, key)
            reporter = ProgressReporter(self._notes.put, partner.name, relative_path, every=self._progress_every) \
                if self._progress is not None else None
            landed = land_file(link, s3, bucket=bucket, relative_path=relative_path, progress=reporter, budget=budget)
        except PartnerIngestError as exc:
            outcome.error = exc if exc.path else type(exc)(exc.problem, partner=partner.name,
                                                           path=outcome.remote_path, action=exc.action)
            return outcome
        outcome.landed = landed
        if wanted.object_check:
            outcome.object_check = verify_landed_object(s3, bucket=bucket, key=landed.key, size=landed.version.size,
                                                        sha256=landed.sha256, version_id=landed.s3_version_id)
            if not outcome.object_check.passed:
                outcome.verification_error = PartnerIngestError(
                    outcome.object_check.description or "verification failed", partner=partner.name,
                    path=landed.remote_path, action="re-run the file")
                return outcome
        try:
            outcome.after_landing = apply_after_landing(link, landed).describe()
        except AfterLandingError as exc:
            outcome.after_landing_error = exc
            outcome.after_landing = f"failed, waiting for retry: {exc.problem}"
        if wanted.archive_contents and partner.unzip and is_archive_name(landed.relative_path):
            try:
                outcome.expansion = expand_archive(s3, bucket=bucket, archive_key=landed.key, partner=partner.name,
                                                   remote_path=landed.remote_path, limits=partner.unzip_limits,
                                                   version_id=landed.s3_version_id)
            except PartnerIngestError as exc:
                outcome.expansion_error = exc
                return outcome
            if wanted.expansion_check:
                outcome.expansion_check = verify_archive_expansion(s3, bucket=bucket, archive_key=landed.key)
        return outcome
