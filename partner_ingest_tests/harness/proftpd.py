"""A real ProFTPD 1.3.8 ``mod_sftp`` on 127.0.0.1: a second SFTP server implementation besides OpenSSH.

It differs from OpenSSH where a client can notice: its own SSH and SFTP code, no
``limits@openssh.com`` extension, reads answered in full up to paramiko's 16 MiB packet limit, and
an LSTAT that resolves symlinks first (only READDIR and READLINK reveal a link). Everything it
needs lives in a temp dir (config, host keys, user file, pid, scoreboard, logs); the FTP listener is
off (``Port 0``) and the only listener is the SFTP virtual host bound to 127.0.0.1, so Debian's own
proftpd service (port 21, /etc/proftpd, /run/proftpd.*) is neither used nor disturbed.

The one user is virtual (``AuthUserFile``) but has the uid/gid of the sshd fixture's password account,
so it reads and writes the trees ``make_tree_dir`` creates. Without ``DefaultRoot`` it sees the real
filesystem, so a partner's ``remote_dir`` is the same absolute path on both servers.
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
from partner_ingest_tests.harness.accounts import PASSWORD_USER
from partner_ingest_tests.harness.processes import free_port, run_tool, stop_process, wait_for_port

PROFTPD = shutil.which("proftpd") or "/usr/sbin/proftpd"
FTPASSWD = shutil.which("ftpasswd") or "/usr/sbin/ftpasswd"
MODULE_DIR = Path("/usr/lib/proftpd")
VIRTUAL_USER = "pi_proftpd"
# mod_sftp 1.3.8 serves all three; ed25519 is what partners pin by default, as for the sshd fixture.
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@dataclass
class Proftpd:
    port: int
    workdir: Path
    username: str
    password: str
    host_key_lines: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path = field(default_factory=Path)
    sftp_log_path: Path = field(default_factory=Path)

    def stop(self) -> None:
        """Stop proftpd by its PID, delete its directory and, if no other process still uses them, the
        test accounts (its virtual user runs as ``pi_pw``)."""
        try:
            if self.proc is not None:
                stop_process(self.proc)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            accounts.release("proftpd")


def _check_installed() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the ProFTPD test fixture needs root (sessions switch to the test account's uid): "
                           "run the suite with scripts/test.sh as root")
    if not Path(PROFTPD).exists():
        raise RuntimeError("proftpd not found: apt-get install proftpd-core proftpd-mod-crypto "
                           "(scripts/test.sh does this)")
    if not (MODULE_DIR / "mod_sftp.so").exists():
        raise RuntimeError(f"{MODULE_DIR}/mod_sftp.so not found: apt-get install proftpd-mod-crypto "
                           "(scripts/test.sh does this)")


def _config(workdir: Path, port: int, host_keys: list[Path], user_file: Path) -> str:
    return "\n".join([
        "ServerType standalone",
        'ServerName "partner-ingest test SFTP (ProFTPD mod_sftp)"',
        "Port 0",  # no FTP listener: the main server is disabled, only the vhost below listens
        "UseIPv6 off",
        "SocketBindTight on",  # bind 127.0.0.1 itself, not the wildcard address
        "DefaultAddress 127.0.0.1",
        "User nobody",  # the master drops to nobody between connections; sessions take the user's uid
        "Group nogroup",
        f"PidFile {workdir}/proftpd.pid",
        f"ScoreboardFile {workdir}/proftpd.scoreboard",
        f"SystemLog {workdir}/proftpd.log",
        "WtmpLog off",
        "UseLastlog off",
        "UseReverseDNS off",
        "DelayEngine off",  # mod_delay would keep its table in /run (shared with a system proftpd), slow logins
        "ControlsEngine off",  # no control socket in /run either
        "<IfModule mod_ident.c>",
        "  IdentLookups off",
        "</IfModule>",
        f"ModulePath {MODULE_DIR}",
        "LoadModule mod_sftp.c",
        "<VirtualHost 127.0.0.1>",
        f"  Port {port}",
        "  SFTPEngine on",
        f"  SFTPLog {workdir}/sftp.log",
        f"  TransferLog {workdir}/xfer.log",
        *[f"  SFTPHostKey {p}" for p in host_keys],
        "  SFTPAuthMethods password",
        f"  AuthUserFile {user_file}",
        "  AuthOrder mod_auth_file.c",
        "  <IfModule mod_auth_pam.c>",
        "    AuthPAM off",
        "  </IfModule>",
        "  UseFtpUsers off",
        "  RequireValidShell off",
        "  AllowOverwrite on",
        "  MaxLoginAttempts 10",
        "  <Limit ALL>",
        "    AllowAll",
        "  </Limit>",
        "</VirtualHost>",
        "",
    ])


def start_proftpd(password: str | None = None) -> Proftpd:
    """Start ``proftpd -n`` on a free port; returns once it accepts TCP connections (bounded wait)."""
    _check_installed()
    workdir = Path(tempfile.mkdtemp(prefix=f"pi-proftpd-{os.getpid()}-"))  # the PID: whose it is
    workdir.chmod(0o755)  # the virtual user's home: it must be able to chdir there after login
    password = password or secrets.token_urlsafe(18)

    host_keys: dict[str, str] = {}
    key_paths: list[Path] = []
    for kind in HOST_KEY_TYPES:
        path = workdir / f"ssh_host_{kind}_key"
        run_tool("ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path))
        host_keys[kind] = " ".join(Path(f"{path}.pub").read_text().split()[:2])
        key_paths.append(path)

    accounts.acquire("proftpd")
    owner = pwd.getpwnam(PASSWORD_USER)
    # ftpasswd ships with proftpd-core; it prints "ftpasswd: <crypt(3) SHA-512 hash>".
    crypted = run_tool(FTPASSWD, "--hash", "--sha512", "--stdin", input=password + "\n").split()[-1]
    user_file = workdir / "users"
    user_file.write_text(f"{VIRTUAL_USER}:{crypted}:{owner.pw_uid}:{owner.pw_gid}::{workdir}:/usr/sbin/nologin\n")
    user_file.chmod(0o600)  # mod_auth_file refuses world-readable password files

    port = free_port()
    config = workdir / "proftpd.conf"
    config.write_text(_config(workdir, port, key_paths, user_file))
    checked = subprocess.run([PROFTPD, "-t", "-c", str(config)], capture_output=True, text=True)
    if checked.returncode != 0:  # a config error reads better here than as an exit before listening
        raise RuntimeError(f"ProFTPD rejected {config}: {checked.stderr.strip()[-2000:]}")
    log_path = workdir / "proftpd.log"
    proc = subprocess.Popen([PROFTPD, "-n", "-q", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(proc)
        log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"ProFTPD did not start: {exc}\n{log}") from None
    return Proftpd(port=port, workdir=workdir, username=VIRTUAL_USER, password=password,
                   host_key_lines=host_keys, proc=proc, log_path=log_path, sftp_log_path=workdir / "sftp.log")
