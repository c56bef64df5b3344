"""Container health check: ``healthcheck.py webserver|daemon|code-server`` (no argument: guess from PID 1).

Besides "is the process serving", every service checks that it can still log in to Postgres with the
password ECS injected at start. RDS rotates its managed master password; a task holding the old one
then turns unhealthy and ECS replaces it with one that reads the new secret, instead of failing every
sensor tick and UI request until someone restarts it by hand.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path


def check_postgres() -> None:
    import psycopg2  # installed with dagster-postgres

    conn = psycopg2.connect(
        host=os.environ["DAGSTER_PG_HOST"],
        port=int(os.environ.get("DAGSTER_PG_PORT", "5432")),
        dbname=os.environ["DAGSTER_PG_DB"],
        user=os.environ["DAGSTER_PG_USERNAME"],
        password=os.environ["DAGSTER_PG_PASSWORD"],
        sslmode=os.environ.get("DAGSTER_PG_SSLMODE", "require"),
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        conn.close()


def check_webserver() -> None:
    with urllib.request.urlopen("http://127.0.0.1:3000/server_info", timeout=5) as response:  # noqa: S310
        if response.status != 200:
            raise RuntimeError(f"/server_info answered {response.status}")


def check_code_server() -> None:
    with socket.create_connection(("127.0.0.1", 4000), timeout=5):
        pass


def check_daemon() -> None:
    subprocess.run(["dagster-daemon", "liveness-check"], check=True, timeout=45,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


CHECKS = {
    "webserver": (check_webserver, check_postgres),
    "code-server": (check_code_server, check_postgres),
    "daemon": (check_daemon,),  # the liveness check reads heartbeats from Postgres
}


def guess_role() -> str | None:
    try:
        cmdline = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for marker, role in (("dagster-webserver", "webserver"), ("dagster-daemon", "daemon"),
                         ("code-server", "code-server")):
        if marker in cmdline:
            return role
    return None


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else guess_role()
    if role is None:
        return 0  # a run task: nothing long-lived to probe
    if role not in CHECKS:
        print(f"unknown role '{role}'; expected one of {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    for check in CHECKS[role]:
        try:
            check()
        except Exception as exc:  # a health check reports, it does not raise
            print(f"{role} unhealthy: {check.__name__}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
