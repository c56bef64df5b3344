"""The README's demo (``partner-ingest demo``) as a fixture: started in its own session on a free port with
its own state directory, stopped by its PID (SIGTERM to its process group, then a check that no member
outlived it); plus the UI's GraphQL API and a bounded wait that fails with the demo's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from partner_ingest_tests.harness.processes import free_port, stop_process

DEMO_FILES_ASSET = ["partners", "demo", "files"]


class Demo(NamedTuple):
    port: int
    state: Path
    proc: subprocess.Popen
    log: Path


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        return json.load(response)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen, log: Path) -> Any:
    """``predicate()``'s first truthy value, polled every second for at most ``timeout`` seconds; exceptions
    count as not yet (the server is still coming up). Fails with the demo's log when it exits or times out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode} while waiting for {what}:\n{log.read_text()[-3000:]}")
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server is still coming up
            last_error = exc
        time.sleep(1)
    pytest.fail(f"timed out after {timeout}s waiting for {what} ({last_error!r}):\n{log.read_text()[-3000:]}")


def wait_for_ui(demo: Demo, timeout: float = 180) -> None:
    """The webserver answers and the code location has loaded (its asset nodes are listed)."""
    port, _, proc, log = demo
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).status == 200,
             timeout, "the webserver", proc, log)
    wait_for(lambda: graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"],
             timeout, "the code location to load", proc, log)


@pytest.fixture(name="demo", scope="module")
def demo_fixture(tmp_path_factory) -> Iterator[Demo]:
    """The demo, as ``demo``: a test module imports ``demo_fixture`` (so the parameter does not shadow it).
    One per module: its tests read what the demo did and change nothing another of them relies on, and a
    start costs ~20 s."""
    port = free_port()
    home = tmp_path_factory.mktemp("demo")
    log = home / "demo.log"
    state = home / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "partner_ingest.cli", "demo", "--port", str(port),
                                 "--state-dir", str(state)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield Demo(port, state, proc, log)
    finally:
        stop_process(proc, group=True, timeout=60)
        assert subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).stdout == b"", \
            "processes of the demo outlived it"
