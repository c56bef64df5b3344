"""One SFTP session used by many threads at once, against the real OpenSSH sftp-server: every thread
gets its own replies (synchronous calls, pipelined reads and stats interleaved), and a dropped link
reaches every waiting thread at once instead of each waiting out its own timeout."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest
from dagster_aws.secretsmanager import SecretsManagerResource
from paramiko.sftp import CMD_READ, int64

from partner_ingest.defs.resources import SftpResource
from partner_ingest.sftp.reader import PipelinedReader, Responses
from partner_ingest.sftp.remote_file import lstat_regular_file
from partner_ingest.sftp.shared_client import (
    SftpStatusError,
    SharedSFTPClient,
    close_without_waiting,
    forget_requests,
)
from partner_ingest_tests.harness.fault_proxy import Fault, FaultProxy


def test_many_threads_share_one_session_and_each_gets_its_own_replies(make_partner):
    rig = make_partner()
    files = {f"{i:02d}.bin": os.urandom(1000 + 977 * i) for i in range(32)}
    for name, data in files.items():
        rig.write(name, data)
    session = SftpResource(secrets=SecretsManagerResource()).open(rig.partner)
    assert isinstance(session.sftp, SharedSFTPClient)

    def fetch(name: str) -> tuple[str, str, int]:
        path = session.remote_path(name)
        version = lstat_regular_file(session.sftp, rig.partner, path, root=session.root_realpath)
        with session.sftp.open(path, "rb") as remote:  # paramiko's synchronous OPEN and CLOSE
            reader = PipelinedReader(session.sftp, remote.handle, size=version.size, chunk_size=4096,
                                     max_in_flight=4)
            data = b"".join(iter(lambda: reader.read(3000), b""))
            reader.confirm_eof()
        return name, hashlib.sha256(data).hexdigest(), session.sftp.stat(path).st_size

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(fetch, list(files) * 3))
    finally:
        session.close()
    assert len(results) == 96
    for name, digest, size in results:
        assert digest == hashlib.sha256(files[name]).hexdigest() and size == len(files[name])


def test_a_dropped_link_fails_every_waiting_thread_at_once(make_partner, sshd):
    proxy = FaultProxy(sshd.port)
    try:
        proxy.add(Fault(stall_after=2 * 1024 * 1024))  # the session's link goes silent 2 MiB into the big file
        rig = make_partner(port=proxy.port)
        rig.write("big.bin", os.urandom(8 * 1024 * 1024))
        session = SftpResource(secrets=SecretsManagerResource(), channel_timeout_seconds=30.0).open(rig.partner)
        errors: list[BaseException] = []

        def read_the_big_file() -> None:
            try:
                with session.sftp.open(session.remote_path("big.bin"), "rb") as remote:
                    reader = PipelinedReader(session.sftp, remote.handle, size=8 * 1024 * 1024)
                    while reader.read(1024 * 1024):
                        pass
            except (OSError, EOFError, paramiko.SSHException) as exc:
                errors.append(exc)

        def stat_it() -> None:
            try:
                session.sftp.stat(session.remote_path("big.bin"))
            except (OSError, EOFError, paramiko.SSHException) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read_the_big_file)]
        threads[0].start()
        deadline = time.monotonic() + 10
        while not proxy.faults_fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.faults_fired == 1
        threads += [threading.Thread(target=stat_it) for _ in range(7)]
        for t in threads[1:]:
            t.start()
        time.sleep(0.5)  # all eight wait on a link that answers nothing
        assert not errors
        began = time.monotonic()
        proxy.close()     # the link drops
        for t in threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in threads)
        assert len(errors) == 8
        assert time.monotonic() - began < 10, "the waiting threads should learn of the drop together"
        session.close()
    finally:
        proxy.close()


def test_replies_nobody_collects_are_dropped_on_arrival(make_partner):
    rig = make_partner()
    rig.write("a.bin", os.urandom(512 * 1024))
    session = SftpResource(secrets=SecretsManagerResource()).open(rig.partner)
    try:
        sftp = session.sftp
        with sftp.open(session.remote_path("a.bin"), "rb") as remote:
            holder = Responses()
            numbers = [sftp._async_request(holder, CMD_READ, remote.handle, int64(i * 32768), 32768)
                       for i in range(16)]
            forget_requests(sftp, numbers)  # e.g. a reader that gave up on its file
            sftp.stat(session.remote_path("a.bin"))  # read after the sixteen answers: they arrive first
        assert not sftp._arrived and not holder.arrived
    finally:
        session.close()


def test_a_close_not_waited_for_still_closes_the_handle(make_partner):
    rig = make_partner()
    rig.write("a.bin", b"x" * 1000)
    session = SftpResource(secrets=SecretsManagerResource()).open(rig.partner)
    try:
        sftp = session.sftp
        remote = sftp.open(session.remote_path("a.bin"), "rb")
        handle = remote.handle
        close_without_waiting(remote)
        assert remote.closed
        # The server handles requests in order: a read on that handle after it is an error, not data.
        with pytest.raises(OSError):
            sftp._request(CMD_READ, handle, int64(0), 10)
        assert not sftp._arrived and not sftp._expecting
    finally:
        session.close()


def test_a_failure_status_fails_only_its_request_and_the_session_goes_on(make_partner):
    """OpenSSH answers SSH_FX_FAILURE to a READ of a directory's handle (read(2): EISDIR). That is the server's
    answer about one request: it must not read as a broken link, which would replace the session under the
    other files sharing it."""
    rig = make_partner()
    rig.write("sub/a.bin", b"a" * 100)
    session = SftpResource(secrets=SecretsManagerResource()).open(rig.partner)
    try:
        sftp = session.sftp
        with sftp.open(session.remote_path("sub"), "rb") as directory, pytest.raises(SftpStatusError):
            sftp._request(CMD_READ, directory.handle, int64(0), 10)
        assert not sftp.broken
        assert sftp.stat(session.remote_path("sub/a.bin")).st_size == 100
    finally:
        session.close()


def test_a_stalled_link_is_a_link_error_in_the_thread_that_was_reading_too(make_partner, sshd):
    """The reading thread's timeout must not surface as a bare OSError, which callers read as a server status
    (e.g. "remote_dir cannot be resolved"): every thread on the session gets the same link error."""
    proxy = FaultProxy(sshd.port)
    try:
        proxy.add(Fault(stall_after=1024 * 1024))
        rig = make_partner(port=proxy.port)
        rig.write("big.bin", os.urandom(4 * 1024 * 1024))
        session = SftpResource(secrets=SecretsManagerResource(), channel_timeout_seconds=1.0).open(rig.partner)
        with pytest.raises(paramiko.SSHException), session.sftp.open(session.remote_path("big.bin"), "rb") as remote:
            reader = PipelinedReader(session.sftp, remote.handle, size=4 * 1024 * 1024)
            while reader.read(1024 * 1024):
                pass
        assert session.sftp.broken
        with pytest.raises(paramiko.SSHException):  # and it refuses further requests at once
            session.sftp.stat(session.remote_path("big.bin"))
        session.close()
    finally:
        proxy.close()
