"""moto in server mode over HTTP on 127.0.0.1, reached through AWS_ENDPOINT_URL like real AWS."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from partner_ingest_tests.harness.processes import free_port, stop_process, wait_for_port

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass
class MotoServer:
    port: int
    proc: subprocess.Popen

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**AWS_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto() -> MotoServer:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, timeout=60)
    return MotoServer(port=port, proc=proc)
