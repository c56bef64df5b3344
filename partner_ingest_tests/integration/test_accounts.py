"""The test accounts stay while any live process holds them and go with the last holder; a holder
killed without releasing does not keep them forever."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

from partner_ingest_tests.harness import accounts
from partner_ingest_tests.harness.processes import stop_process

HOLD = ("import sys, time; from partner_ingest_tests.harness import accounts; accounts.acquire('other'); "
        "print('held', flush=True); time.sleep(120)")


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _other_live_holders() -> set[int]:
    markers = accounts._HOLDERS.glob("*.*") if accounts._HOLDERS.exists() else []
    pids = {int(m.name.split(".", 1)[0]) for m in markers}
    return {pid for pid in pids if pid != os.getpid() and accounts._alive(pid)}


def test_accounts_outlive_a_release_while_another_process_holds_them():
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        accounts.acquire("probe")
        assert accounts.release("probe") is False          # the child still holds them
        assert _exists(accounts.PASSWORD_USER) and _exists(accounts.KEY_USER)
        child.kill()                                        # dies without releasing: a stale marker
        child.wait(10)
        assert any(m.name.startswith(f"{child.pid}.") for m in accounts._HOLDERS.glob("*"))
        accounts.acquire("probe")
        deadline = time.monotonic() + 5
        while child.pid in _other_live_holders() and time.monotonic() < deadline:
            time.sleep(0.1)
        others = _other_live_holders()                      # e.g. this session's own sshd fixture
        removed = accounts.release("probe")
        assert removed is (not others)
        assert _exists(accounts.PASSWORD_USER) is bool(others)
        assert accounts.STATE_DIR.exists() is bool(others)
    finally:
        if child.poll() is None:
            stop_process(child)
