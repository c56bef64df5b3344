"""``partner-ingest demo``: a demo partner, a local S3 and the Dagster UI from one command.

The SFTP server and moto run in this process (threads); ``dagster dev`` runs as a child in its own
session and process group, so a Ctrl-C in the terminal reaches only this process, which then stops
the whole group (webserver, daemon, code server, run workers) with a bounded wait before SIGKILL,
and stops the servers last. The partner's password exists only in memory: it goes into the SFTP
server and the moto secret, and is never printed, logged or written to the state directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from partner_ingest.config import BUCKET_ENV, CONFIG_ENV, parse_config
from partner_ingest.defs.tags import PARTNER_TAG
from partner_ingest.demo.object_store import (
    DemoObjectStore,
    demo_aws_environment,
)
from partner_ingest.demo.sample_files import INBOUND_DIR, generate_sample_tree
from partner_ingest.demo.sftp_server import DemoSftpServer, SftpEndpoint

LOOPBACK = "127.0.0.1"
DEFAULT_UI_PORT = 3000
DEFAULT_STATE_DIR = ".demo"
DEMO_PARTNER = "demo"
DEMO_USERNAME = "demo"
DEMO_BUCKET = "partner-ingest-demo"
DEMO_SECRET_ID = "partner-ingest/demo"  # noqa: S105 - the secret's name, not its value
DEFINITIONS_MODULE = "partner_ingest.definitions"
STOP_GRACE_SECONDS = 30.0
# The directory that holds the ``partner_ingest`` package, so the code server imports it from any cwd.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class DemoPaths:
    """The state directory's layout."""

    state_dir: Path
    dagster_home: Path
    sftp_root: Path
    partners_yaml: Path

    @classmethod
    def at(cls, state_dir: Path | str) -> DemoPaths:
        state = Path(state_dir).expanduser().resolve()
        return cls(state_dir=state, dagster_home=state / "dagster_home", sftp_root=state / "sftp_root",
                   partners_yaml=state / "partners.yaml")

    def create(self) -> None:
        for directory in (self.state_dir, self.dagster_home, self.sftp_root):
            directory.mkdir(parents=True, exist_ok=True)


def write_dagster_yaml(dagster_home: Path) -> Path:
    """Create ``dagster.yaml`` unless present: no storage section, so SQLite in DAGSTER_HOME; telemetry
    off; one run per partner at a time, as on AWS: every pool (one per partner's asset) takes one step,
    which binds runs from the UI and backfills too, and sensor runs' ``partner`` tag is limited as well."""
    path = dagster_home / "dagster.yaml"
    if not path.exists():
        settings = {
            "telemetry": {"enabled": False},
            "concurrency": {
                "pools": {"default_limit": 1, "granularity": "op"},
                "runs": {"tag_concurrency_limits": [
                    {"key": PARTNER_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]},
            },
        }
        _write_atomically(path, "# Written by `partner-ingest demo`; storage defaults to SQLite in this directory.\n"
                                + yaml.safe_dump(settings, sort_keys=False))
    return path


def demo_partners_config(sftp: SftpEndpoint) -> dict[str, Any]:
    """partners.yaml for the demo partner, pinned to this start's host key and port."""
    return {
        "landing": {"bucket": DEMO_BUCKET},
        "partners": [{
            "name": DEMO_PARTNER,
            "host": sftp.host,
            "port": sftp.port,
            "username": sftp.username,
            "secret_id": DEMO_SECRET_ID,
            "host_keys": [sftp.host_key_line],
            "remote_dir": f"/{INBOUND_DIR}",
            "include": ["**/*.csv", "**/*.bin", "**/*.zip"],
            "unzip": True,
            "landing_prefix": f"partners/{DEMO_PARTNER}",
            "sensor": {"interval_seconds": 30, "running": True},
            "stability": {"min_age_seconds": 0},
        }],
    }


def write_partners_yaml(path: Path, sftp: SftpEndpoint) -> Path:
    """Validate with the project's own schema, then write; rewritten on every start (new key and port)."""
    raw = demo_partners_config(sftp)
    parse_config(raw, source=str(path))
    _write_atomically(path, "# Written by `partner-ingest demo` on every start: the host key and port change.\n"
                            + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def child_environment(paths: DemoPaths, endpoint_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``dagster dev``: demo AWS endpoint and dummy keys, the demo config and home."""
    env = demo_aws_environment(os.environ if base is None else base, endpoint_url)
    env.pop(BUCKET_ENV, None)  # it would override the demo bucket
    env[CONFIG_ENV] = str(paths.partners_yaml)
    env["DAGSTER_HOME"] = str(paths.dagster_home)
    return env


def dagster_command(port: int, host: str = LOOPBACK) -> list[str]:
    """``dagster dev`` through this interpreter, so it works even when the venv's bin is not on PATH."""
    return [sys.executable, "-m", "partner_ingest.demo.dagster_dev", "dev", "-h", host, "-p", str(port),
            "-m", DEFINITIONS_MODULE, "-d", str(PROJECT_ROOT)]


def run_demo(port: int = DEFAULT_UI_PORT, state_dir: Path | str | None = None) -> int:
    """Run the demo until SIGINT/SIGTERM or until ``dagster dev`` exits; return the exit code."""
    paths = DemoPaths.at(state_dir if state_dir is not None else Path.cwd() / DEFAULT_STATE_DIR)
    _ensure_port_free(LOOPBACK, port)
    _reset_dagster_history(paths.dagster_home)
    paths.create()
    write_dagster_yaml(paths.dagster_home)
    generate_sample_tree(paths.sftp_root)
    password = secrets.token_urlsafe(24)

    with _StopSignals() as stop, ExitStack() as stack:
        sftp = stack.enter_context(DemoSftpServer(paths.sftp_root, username=DEMO_USERNAME, password=password,
                                                  host=LOOPBACK))
        store = stack.enter_context(DemoObjectStore(host=LOOPBACK))
        store.create_bucket(DEMO_BUCKET, versioned=True)
        store.put_password_secret(DEMO_SECRET_ID, password)
        write_partners_yaml(paths.partners_yaml, sftp)
        _write_atomically(paths.state_dir / "endpoints.json", json.dumps({
            "ui": f"http://{LOOPBACK}:{port}", "aws_endpoint_url": store.endpoint_url, "bucket": DEMO_BUCKET,
            "sftp": f"{sftp.host}:{sftp.port}", "sftp_user": sftp.username}, indent=2) + "\n")
        if stop.requested.is_set():
            return 0
        child = subprocess.Popen(dagster_command(port), env=child_environment(paths, store.endpoint_url),
                                 cwd=paths.state_dir, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            ui_url = f"http://{LOOPBACK}:{port}"
            _print_banner(ui_url, sftp, store.endpoint_url, paths)
            _supervise(child, stop, ui_url)
        finally:
            code = stop_process_group(child, STOP_GRACE_SECONDS, force=stop.forced)
    if stop.requested.is_set():
        return 0
    print(f"partner-ingest demo: dagster dev exited with code {code}; servers stopped.", file=sys.stderr)
    return 128 - code if code < 0 else code or 1  # killed by signal N: 128 + N, like a shell


def _reset_dagster_history(dagster_home: Path) -> None:
    """The demo bucket lives in memory, so history from an earlier start would point at objects that are
    gone: start every demo with empty Dagster storage (a user-edited dagster.yaml is kept)."""
    if not dagster_home.is_dir():
        return
    for entry in dagster_home.iterdir():
        if entry.name == "dagster.yaml":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def stop_process_group(child: subprocess.Popen[Any], grace: float,
                       force: threading.Event | None = None) -> int:
    """SIGTERM the child's process group, wait up to ``grace`` seconds for every member, then SIGKILL.

    The group outlives the child when a grandchild is still shutting down, so the wait is on the
    group, not only on the child. Setting ``force`` (a second Ctrl-C) skips the rest of the wait.
    """
    pgid = child.pid  # start_new_session makes the child its group's leader
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(child, pgid) and time.monotonic() < deadline and not (force and force.is_set()):
        time.sleep(0.2)
    if _group_alive(child, pgid):
        _signal_group(pgid, signal.SIGKILL)
    try:
        return child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return -signal.SIGKILL


class _StopSignals:
    """SIGINT/SIGTERM/SIGHUP set ``requested``; a second one sets ``forced``. Old handlers return on exit.

    SIGHUP matters: the child has its own session, so a closed terminal reaches only this process.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.forced = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            self.forced.set()
            print("\npartner-ingest demo: stopping now (SIGKILL).", file=sys.stderr, flush=True)
        else:
            self.requested.set()
            print(f"\npartner-ingest demo: stopping (up to {STOP_GRACE_SECONDS:.0f} s; again to force).",
                  file=sys.stderr, flush=True)


def _supervise(child: subprocess.Popen[Any], stop: _StopSignals, ui_url: str) -> None:
    announced = False
    while not stop.requested.wait(0.5):
        if child.poll() is not None:
            return
        if not announced and _answers(f"{ui_url}/server_info"):
            announced = True
            print(f"partner-ingest demo: the Dagster UI is up at {ui_url}", flush=True)


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy
    try:
        with opener.open(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    """Its own killpg, not the test harness's nor psutil: the product may not depend on either (test-only)."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(child: subprocess.Popen[Any], pgid: int) -> bool:
    if child.poll() is None:
        return True
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DemoError(f"cannot listen on {host}:{port} ({exc.strerror}); "
                            "stop whatever uses it or pass --port with another port") from None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _print_banner(ui_url: str, sftp: SftpEndpoint, endpoint_url: str, paths: DemoPaths) -> None:
    listing = f".venv/bin/partner-ingest landed --demo --state-dir {paths.state_dir}"
    lines = [
        "",
        "partner-ingest demo",
        f"  Dagster UI   {ui_url}  (starting; ready in a few seconds)",
        f"  SFTP         sftp://{sftp.username}@{sftp.host}:{sftp.port}/{INBOUND_DIR}  host key {sftp.fingerprint}",
        f"               serving {paths.sftp_root / INBOUND_DIR}; drop more *.csv files there to see them picked up",
        f"  S3 (moto)    s3://{DEMO_BUCKET} at {endpoint_url}, in memory: empty on every start",
        f"  List it      {listing}  (S3 key, size, sha256; no AWS CLI needed)",
        f"  State        {paths.state_dir}  (partners.yaml, DAGSTER_HOME; delete it for a clean slate)",
        "  Stop         Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)
