"""A real OpenSSH sshd on 127.0.0.1 with its own host keys, config and users.

Needs root (it authenticates system accounts) and openssh-server; scripts/test.sh installs it.
Two accounts: one that logs in with a password, one with public keys (Ed25519, RSA with a
passphrase, ECDSA). SFTP is ``internal-sftp`` forced for both.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from partner_ingest_tests.harness import accounts
from partner_ingest_tests.harness.processes import free_port, run_tool, stop_process, wait_for_port

PASSWORD_USER = accounts.PASSWORD_USER
KEY_USER = accounts.KEY_USER
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class ClientKey:
    kind: str
    private_pem: str
    passphrase: str | None
    public_line: str


@dataclass
class Sshd:
    port: int
    workdir: Path
    password: str
    host_key_lines: dict[str, str]
    client_keys: dict[str, ClientKey]
    proc: subprocess.Popen | None = None
    other_host_key_line: str = ""
    log_path: Path = field(default_factory=Path)

    def stop(self) -> None:
        """Stop sshd by its PID, delete its directory (keys, config, partner trees) and, if no other
        process still uses them, the test accounts."""
        try:
            if self.proc is not None:
                stop_process(self.proc)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            accounts.release("sshd")


def _public(path: Path) -> str:
    return Path(f"{path}.pub").read_text().strip()


def start_sshd() -> Sshd:
    if os.geteuid() != 0:
        raise RuntimeError("the sshd test fixture needs root (it authenticates system accounts): "
                           "run the suite with scripts/test.sh as root")
    if not Path(SSHD).exists():
        raise RuntimeError("sshd not found: apt-get install openssh-server (scripts/test.sh does this)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"pi-sshd-{os.getpid()}-"))  # the PID: whose it is
    workdir.chmod(0o755)
    password = accounts.acquire("sshd")

    host_keys: dict[str, str] = {}
    host_key_paths = []
    for kind in ("ed25519", "rsa", "ecdsa"):
        path = workdir / f"ssh_host_{kind}_key"
        run_tool("ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path))
        host_keys[kind] = " ".join(_public(path).split()[:2])
        host_key_paths.append(path)
    stranger = workdir / "stranger_host_key"
    run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger))

    client_keys: dict[str, ClientKey] = {}
    for kind, passphrase in (("ed25519", None), ("rsa", secrets.token_urlsafe(12)), ("ecdsa", None)):
        path = workdir / f"client_{kind}"
        run_tool("ssh-keygen", "-q", "-t", kind, "-N", passphrase or "", "-f", str(path))
        client_keys[kind] = ClientKey(kind, path.read_text(), passphrase, _public(path))
    keys_dir = workdir / "authorized_keys"
    keys_dir.mkdir()
    (keys_dir / KEY_USER).write_text("\n".join(k.public_line for k in client_keys.values()) + "\n")

    port = free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        *[f"HostKey {p}" for p in host_key_paths],
        f"PidFile {workdir}/sshd.pid",
        f"AuthorizedKeysFile {keys_dir}/%u",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin no",
        f"AllowUsers {PASSWORD_USER} {KEY_USER}",
        "Subsystem sftp internal-sftp",
        "ForceCommand internal-sftp",
        "MaxStartups 200:30:400",
        "MaxSessions 100",
        "MaxAuthTries 10",
        "LogLevel VERBOSE",
        "",
    ]))
    log_path = workdir / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return Sshd(port=port, workdir=workdir, password=password, host_key_lines=host_keys,
                client_keys=client_keys, proc=proc, other_host_key_line=" ".join(_public(stranger).split()[:2]),
                log_path=log_path)


def make_tree_dir(sshd: Sshd, name: str) -> Path:
    """A directory the test accounts can read (and the password user can write)."""
    path = Path(tempfile.mkdtemp(prefix=f"pi-{name}-", dir=sshd.workdir))
    path.chmod(0o755)
    user = pwd.getpwnam(PASSWORD_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path
