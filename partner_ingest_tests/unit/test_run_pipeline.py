"""The run pipeline without Dagster, root or sshd: the demo's asyncssh server as the partner, moto's
in-process server as S3, and link factories that count, refuse or remember sessions."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from partner_ingest.config import PartnerConfig
from partner_ingest.demo.object_store import DemoObjectStore
from partner_ingest.demo.sftp_server import DemoSftpServer, SftpEndpoint
from partner_ingest.errors import (
    AfterLandingError,
    ConnectionFailedError,
    PartitionKeyError,
    RemotePathError,
)
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.ingest.run_pipeline import RunPipeline, Wanted
from partner_ingest.sftp.connection import ConnectionSettings, SftpSession, open_session
from partner_ingest.sftp.credentials import SftpCredentials
from partner_ingest.sftp.link import PartnerLink, ReconnectPolicy
from partner_ingest_tests.harness.zips import make_zip

PASSWORD = secrets.token_urlsafe(12)
SETTINGS = ConnectionSettings(connect_timeout=5, banner_timeout=5, auth_timeout=5, channel_timeout=5)
RECONNECT = ReconnectPolicy(attempts=1, backoff_seconds=0.01)
EVERYTHING = Wanted(object_check=True, archive_contents=True, expansion_check=True)
AWS_PROCESS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_names = itertools.count(1)


@pytest.fixture(scope="module")
def sftp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sftp-root")


@pytest.fixture(scope="module")
def endpoint(sftp_root: Path) -> Iterator[SftpEndpoint]:
    """The server, with one session opened and closed first: the process's one-time SSH set-up (crypto
    backends, asyncssh's first connection) is not charged to whichever test happens to run first."""
    with DemoSftpServer(sftp_root, username="partner", password=PASSWORD) as served:
        partner = PartnerConfig(name="warmup", host=served.host, port=served.port, username=served.username,
                                secret_id="not-read-here", host_keys=[served.host_key_line], remote_dir="/",
                                landing_prefix="warmup")
        open_session(partner, SftpCredentials(password=PASSWORD), SETTINGS).close()
        yield served


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """One client for the module: building a boto3 client costs more than a test's S3 calls. Starting the
    store drops the AWS profile variables from this process; they are restored for the tests after these."""
    with pytest.MonkeyPatch.context() as env:
        for name in AWS_PROCESS_VARIABLES:
            env.delenv(name, raising=False)
        with DemoObjectStore() as store:
            client = store.client("s3")
            client.list_buckets()  # the first request sets up moto's backend; no test should pay for it
            yield client


@dataclass
class Rig:
    """One partner on its own directory of the shared server and its own bucket."""

    partner: PartnerConfig
    tree: Path
    bucket: str
    s3: Any
    sessions: list[SftpSession] = field(default_factory=list)
    factory_calls: int = 0

    def write(self, relative_path: str, data: bytes) -> str:
        path = self.tree / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return encode_partition_key(relative_path)

    def link(self) -> PartnerLink:
        """What ``SftpResource.link(partner)`` returns, counted, with every session it opens remembered."""
        self.factory_calls += 1

        def connect() -> SftpSession:
            session = open_session(self.partner, SftpCredentials(password=PASSWORD), SETTINGS)
            self.sessions.append(session)
            return session

        return PartnerLink(connect, RECONNECT)

    def refusing_after(self, served: int) -> Callable[[], PartnerLink]:
        """A partner that accepts ``served`` sessions and refuses every further one."""

        def factory() -> PartnerLink:
            if self.factory_calls < served:
                return self.link()
            self.factory_calls += 1
            return PartnerLink(self._refuse, RECONNECT)

        return factory

    def _refuse(self) -> SftpSession:
        raise ConnectionFailedError("could not open SSH: Connection reset by peer", partner=self.partner.name,
                                    action="check the partner's session limit")

    def run(self, keys: list[str], *, wanted: Wanted = Wanted(), links: Callable[[], PartnerLink] | None = None,
            warnings: list[str] | None = None, s3: Any = None) -> RunPipeline:
        return RunPipeline(self.partner, bucket=self.bucket, keys=keys, links=links or self.link, s3=s3 or self.s3,
                           wanted=wanted, warn=(warnings if warnings is not None else []).append)

    def landed_keys(self) -> set[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return {item["Key"] for item in listing.get("Contents", [])}


@pytest.fixture
def make_rig(endpoint: SftpEndpoint, sftp_root: Path, s3: Any) -> Callable[..., Rig]:
    def factory(**overrides: Any) -> Rig:
        name = f"p{next(_names)}"
        tree = sftp_root / name
        tree.mkdir()
        bucket = f"landing-{secrets.token_hex(6)}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        partner = PartnerConfig(**{
            "name": name, "host": endpoint.host, "port": endpoint.port, "username": endpoint.username,
            "secret_id": "not-read-here", "host_keys": [endpoint.host_key_line], "remote_dir": f"/{name}",
            "landing_prefix": f"partners/{name}", **overrides})
        return Rig(partner=partner, tree=tree, bucket=bucket, s3=s3)

    return factory


def _by_key(run: RunPipeline) -> dict:
    return {outcome.partition_key: outcome for outcome in run.outcomes()}


def test_files_land_over_several_sessions_each_with_its_own_outcome(make_rig):
    rig = make_rig(limits={"max_connections": 3})
    files = {f"small/{i:02d}.csv": f"row {i}\n".encode() * (i + 1) for i in range(6)}
    keys = [rig.write(name, data) for name, data in files.items()]
    run = rig.run(keys, wanted=Wanted(object_check=True))

    outcomes = _by_key(run)

    assert set(outcomes) == set(keys)
    assert rig.factory_calls == 3 and run.report.sessions == 3 and len(rig.sessions) == 3
    for name, data in files.items():
        outcome = outcomes[encode_partition_key(name)]
        assert outcome.recorded and outcome.failures == []
        assert outcome.landed.sha256 == hashlib.sha256(data).hexdigest()
        assert outcome.landed.remote_path == f"{rig.partner.remote_dir}/{name}"
        assert outcome.after_landing == "left"
        assert outcome.object_check.passed and outcome.object_check.metadata["size_found"] == len(data)
    assert rig.landed_keys() == {f"partners/{rig.partner.name}/{name}" for name in files}
    assert run.report.succeeded and run.report.outcomes == list(outcomes.values())
    assert all(session.client.get_transport() is None for session in rig.sessions), "sessions left open"


def test_one_failing_file_fails_alone_while_the_others_land(make_rig):
    rig = make_rig(limits={"max_connections": 2})
    keys = [rig.write("a.csv", b"a"), encode_partition_key("gone.csv"), rig.write("b.csv", b"b")]

    outcomes = _by_key(rig.run(keys))

    failed = outcomes[encode_partition_key("gone.csv")]
    assert failed.landed is None and isinstance(failed.error, RemotePathError)
    assert failed.error.path == f"{rig.partner.remote_dir}/gone.csv" and failed.failures == [failed.error]
    assert outcomes[encode_partition_key("a.csv")].recorded and outcomes[encode_partition_key("b.csv")].recorded
    assert rig.landed_keys() == {f"partners/{rig.partner.name}/a.csv", f"partners/{rig.partner.name}/b.csv"}


def test_a_refused_key_never_reaches_the_link_factory(make_rig):
    rig = make_rig()
    foreign = ["../etc/passwd", "%2Fetc%2Fpasswd", "a//b.csv"]

    run = rig.run(foreign)

    assert list(run.outcomes()) == []
    assert rig.factory_calls == 0
    assert [type(e) for e in run.report.refused] == [PartitionKeyError] * 3
    assert run.report.failures == run.report.refused and not run.report.succeeded
    assert all("is refused" in str(e) for e in run.report.refused)

    good = rig.write("good.csv", b"ok")
    run = rig.run([foreign[0], good])
    assert list(_by_key(run)) == [good]
    assert run.report.accepted == [good] and run.report.total == 2 and len(run.report.refused) == 1
    assert rig.landed_keys() == {f"partners/{rig.partner.name}/good.csv"}


def test_a_partner_refusing_extra_sessions_still_lands_over_fewer(make_rig):
    rig = make_rig(limits={"max_connections": 4})
    keys = [rig.write(f"{i}.csv", b"x" * i) for i in range(5)]
    warnings: list[str] = []

    run = rig.run(keys, links=rig.refusing_after(2), warnings=warnings)
    outcomes = _by_key(run)

    assert all(outcome.recorded for outcome in outcomes.values()) and set(outcomes) == set(keys)
    assert run.report.sessions == 2 and rig.factory_calls == 3
    assert len(warnings) == 1
    assert warnings[0].startswith(f"partner '{rig.partner.name}': continuing with 2 connection(s): ")
    assert "Connection reset by peer" in warnings[0]


def test_an_unreachable_remote_dir_stops_the_run_before_any_file(make_rig):
    rig = make_rig()
    rig.tree.rmdir()
    run = rig.run([encode_partition_key("a.csv")])

    assert list(run.outcomes()) == []
    assert isinstance(run.report.unreachable, RemotePathError) and "does not exist" in str(run.report.unreachable)
    assert rig.factory_calls == 1 and not run.report.succeeded
    assert rig.sessions[0].client.get_transport() is None


def test_an_after_landing_failure_is_reported_as_waiting(make_rig):
    rig = make_rig(after_landing="move", archive_dir="done")
    key = rig.write("a.csv", b"landed, never moved")
    (rig.tree / "done").write_bytes(b"a file where the archive directory should be")

    run = rig.run([key])
    [outcome] = run.outcomes()

    assert outcome.recorded, "the file landed and is recorded although it could not be moved"
    assert isinstance(outcome.after_landing_error, AfterLandingError)
    assert outcome.after_landing == f"failed, waiting for retry: {outcome.after_landing_error.problem}"
    assert run.report.waiting_for_after_landing == [f"{rig.partner.remote_dir}/a.csv"]
    assert run.report.failures == [outcome.after_landing_error]
    assert (rig.tree / "a.csv").exists()
    assert rig.landed_keys() == {f"partners/{rig.partner.name}/a.csv"}


class _AnotherWriter:
    """S3 as seen when someone overwrites one key between landing and the check that reads it back."""

    def __init__(self, s3: Any, key: str) -> None:
        self._s3 = s3
        self._key = key

    def get_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] == self._key:
            self._s3.put_object(Bucket=kwargs["Bucket"], Key=self._key, Body=b"not what was landed")
        return self._s3.get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_check_results_are_per_file(make_rig):
    rig = make_rig(unzip=True, limits={"max_connections": 2})
    entries = {"one.txt": b"1" * 100, "two/three.txt": b"3" * 300}
    plain, archive, overwritten = (rig.write("plain.csv", b"p"), rig.write("bundle.zip", make_zip(entries)),
                                   rig.write("touched.csv", b"t"))
    s3 = _AnotherWriter(rig.s3, f"partners/{rig.partner.name}/touched.csv")

    run = rig.run([plain, archive, overwritten], wanted=EVERYTHING, s3=s3)
    outcomes = _by_key(run)

    assert outcomes[plain].object_check.passed and outcomes[plain].expansion is None
    assert outcomes[plain].expansion_check is None
    zipped = outcomes[archive]
    assert zipped.object_check.passed and sorted(e.name for e in zipped.expansion.entries) == sorted(entries)
    assert zipped.expansion_check.passed
    assert zipped.expansion_check.details["entries_found"] == 2 and zipped.expansion_check.details["bytes_found"] == 400
    touched = outcomes[overwritten]
    assert not touched.object_check.passed and "something else wrote to the key" in touched.object_check.description
    assert not touched.recorded and touched.after_landing == ""
    assert touched.failures == [touched.verification_error]
    assert run.report.failures == [touched.verification_error]


def test_unselected_checks_and_contents_are_not_done(make_rig):
    rig = make_rig(unzip=True)
    key = rig.write("bundle.zip", make_zip({"a.txt": b"a"}))

    [outcome] = rig.run([key]).outcomes()

    assert outcome.recorded and outcome.object_check is None and outcome.expansion is None
    assert rig.landed_keys() == {f"partners/{rig.partner.name}/bundle.zip"}


def test_closing_the_outcomes_starts_no_further_file_and_closes_the_sessions(make_rig):
    rig = make_rig(limits={"max_connections": 1, "files_per_connection": 2})
    keys = [rig.write(f"{i}.csv", b"x") for i in range(12)]
    outcomes = rig.run(keys).outcomes()

    next(outcomes)
    outcomes.close()

    assert len(rig.landed_keys()) < len(keys)
    assert rig.sessions and all(session.client.get_transport() is None for session in rig.sessions)


class _BrokenFor:
    """S3 whose client breaks in a way no translation knows, for one key only."""

    def __init__(self, s3: Any, key: str) -> None:
        self._s3 = s3
        self._key = key

    def head_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] == self._key:
            raise RuntimeError("a bug")
        return self._s3.head_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_an_unexpected_error_fails_its_file_only_and_names_it(make_rig):
    rig = make_rig()
    broken, fine = rig.write("broken.csv", b"b"), rig.write("fine.csv", b"f")

    outcomes = _by_key(rig.run([broken, fine], s3=_BrokenFor(rig.s3, f"partners/{rig.partner.name}/broken.csv")))

    error = outcomes[broken].error
    assert outcomes[broken].landed is None and "unexpected RuntimeError while landing it: a bug" in str(error)
    assert error.path == f"{rig.partner.remote_dir}/broken.csv" and "report this if it repeats" in str(error)
    assert outcomes[fine].recorded


class _SlowPuts:
    """S3 whose PutObject takes 50 ms (S3 far away), counting how many are in progress at once."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0

    def put_object(self, **kwargs: Any) -> Any:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            time.sleep(0.05)
            return self._s3.put_object(**kwargs)
        finally:
            with self._lock:
                self._now -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_files_share_one_session_and_their_puts_overlap(make_rig):
    rig = make_rig(limits={"max_connections": 1, "files_per_connection": 6})
    contents = {f"f{i:02d}.csv": secrets.token_bytes(1000 + i) for i in range(24)}
    keys = [rig.write(name, data) for name, data in contents.items()]
    slow = _SlowPuts(rig.s3)
    pipeline = rig.run(keys, s3=slow)
    outcomes = list(pipeline.outcomes())
    assert pipeline.report.succeeded and pipeline.report.sessions == 1 and len(rig.sessions) == 1
    assert slow.most >= 3, "with one session, files waited for each other's S3 writes"
    assert slow.most <= 6
    for outcome in outcomes:
        name = outcome.landed.relative_path
        assert outcome.landed.sha256 == hashlib.sha256(contents[name]).hexdigest()
        body = rig.s3.get_object(Bucket=rig.bucket, Key=outcome.landed.key)["Body"].read()
        assert body == contents[name]


def test_files_sharing_a_session_hold_at_most_its_read_budget(make_rig):
    budget = 256 * 1024
    rig = make_rig(limits={"max_connections": 1, "files_per_connection": 8, "read_in_flight_bytes": budget})
    keys = [rig.write(f"{i}.bin", secrets.token_bytes(100 * 1024)) for i in range(8)]
    slow = _SlowPuts(rig.s3)
    pipeline = rig.run(keys, s3=slow)
    list(pipeline.outcomes())
    assert pipeline.report.succeeded
    assert slow.most == 2  # two 100 KiB files fit in 256 KiB; the third waits for one to finish
