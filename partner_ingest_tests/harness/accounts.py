"""The test servers' system accounts (``pi_pw`` with a password, ``pi_key`` with keys) and the
machine's test password, created on first use and removed when the last user of them stops.

Several processes may use them at once (two pytest sessions, a benchmark beside the suite), so each
holder leaves a marker named by its PID; whoever releases last, with no other marker of a live
process left, deletes the accounts and ``/var/lib/partner-ingest-tests``. A holder killed without
releasing leaves a stale marker, which the next release ignores (its PID is gone). A lock file held
across each acquire and each release keeps one process from deleting what another is creating.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from partner_ingest_tests.harness.processes import run_tool

PASSWORD_USER = "pi_pw"
KEY_USER = "pi_key"
STATE_DIR = Path("/var/lib/partner-ingest-tests")
_HOLDERS = STATE_DIR / "holders"
_LOCK = Path("/run/lock/partner-ingest-tests.lock")   # outside STATE_DIR, which release deletes


@contextmanager
def _locked() -> Iterator[None]:
    _LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)   # released when the file closes
        yield


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        run_tool("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name)


def _machine_password() -> str:
    """One random password per machine (root-only file), so concurrent holders agree on it."""
    path = STATE_DIR / "pi_pw.password"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(18))
    return path.read_text().strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(holder: str) -> str:
    """Create the accounts if needed, mark ``holder`` (of this process) as using them; the password."""
    with _locked():
        return _acquire(holder)


def _acquire(holder: str) -> str:
    _HOLDERS.mkdir(mode=0o700, parents=True, exist_ok=True)
    STATE_DIR.chmod(0o700)
    (_HOLDERS / f"{os.getpid()}.{holder}").touch()
    for user in (PASSWORD_USER, KEY_USER):
        _ensure_user(user)
    password = _machine_password()
    run_tool("chpasswd", input=f"{PASSWORD_USER}:{password}\n")
    run_tool("usermod", "-p", "*", KEY_USER)  # unlocked for key login with UsePAM no, no password
    return password


def release(holder: str) -> bool:
    """Drop ``holder``'s marker; remove accounts and state when no live holder is left. True if removed."""
    with _locked():
        return _release(holder)


def _release(holder: str) -> bool:
    (_HOLDERS / f"{os.getpid()}.{holder}").unlink(missing_ok=True)
    others = [m for m in _HOLDERS.glob("*.*") if m.name.split(".", 1)[0].isdigit()
              and _alive(int(m.name.split(".", 1)[0]))] if _HOLDERS.exists() else []
    if others:
        return False
    for user in (PASSWORD_USER, KEY_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        # --force: an sshd session of the account may still be closing.
        subprocess.run(["userdel", "--force", user], check=False, capture_output=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    return True
