"""SHA-256 of a remote file's bytes, for the sensor's content identity (``partner_ingest.versions``).

Read through the same bounded, verified pipeline as a landing (short replies completed, long ones
refused, EOF proven at the size), so the digest compared here is computed the way the run computes
the one it records.
"""

from __future__ import annotations

import hashlib
import time

import paramiko

from partner_ingest.sftp.reader import PipelinedReader, RemoteFileMismatch

READ_SIZE = 1024 * 1024


def remote_sha256(sftp: paramiko.SFTPClient, remote_path: str, size: int, *, server_limit: int | None = None,
                  deadline: float | None = None) -> str | None:
    """The hex digest; "" when the bytes do not match the listed size (the file changed: land it again);
    None when ``deadline`` (``time.monotonic()``) passed first (not known this time)."""
    digest = hashlib.sha256()
    with sftp.open(remote_path, "rb") as remote:
        reader = PipelinedReader(sftp, remote.handle, size=size, server_limit=server_limit)
        try:
            while chunk := reader.read(READ_SIZE):
                digest.update(chunk)
                if deadline is not None and time.monotonic() > deadline:
                    return None
            reader.confirm_eof()
        except RemoteFileMismatch:
            return ""
        finally:
            reader.drain()
    return digest.hexdigest()
