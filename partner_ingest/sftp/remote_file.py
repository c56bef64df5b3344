"""The one place that turns SFTP attributes into a :class:`RemoteVersion` and SFTP errors on a single
remote file into typed errors.

Attributes are untrusted (SFTP v3 makes size, permissions and mtime optional): a missing size is
an error, because without it nothing read can be proven complete; a missing mtime is allowed and
switches the file to a content identity (``partner_ingest.versions``). Paths are ``lstat``'ed, never
followed: a symlink (also one swapped in after the listing) is refused.
"""

from __future__ import annotations

import stat

import paramiko

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import RemoteFileChangedError, RemotePathError, ServerMisbehavedError
from partner_ingest.versions import RemoteVersion


def version_of(attrs: paramiko.SFTPAttributes) -> RemoteVersion | None:
    """Size and mtime, or None when the server sent no size."""
    if attrs.st_size is None:
        return None
    return RemoteVersion(size=int(attrs.st_size), mtime=int(attrs.st_mtime) if attrs.st_mtime is not None else None)


def lstat_regular_file(sftp: paramiko.SFTPClient, partner: PartnerConfig, remote_path: str, *,
                       while_reading: bool = False) -> RemoteVersion:
    """``lstat`` the path: a regular file with a size, or a typed error saying what to do."""
    try:
        attrs = sftp.lstat(remote_path)
    except FileNotFoundError:
        if while_reading:
            raise RemoteFileChangedError(f"'{remote_path}' vanished while it was read", partner=partner.name,
                                         path=remote_path,
                                         action="nothing was landed; it is ingested again if it returns") from None
        raise RemotePathError(f"'{remote_path}' no longer exists on {partner.host}", partner=partner.name,
                              path=remote_path, action="nothing to land; the sensor drops files that vanish"
                              ) from None
    except PermissionError:
        raise RemotePathError(f"user '{partner.username}' may not stat '{remote_path}'", partner=partner.name,
                              path=remote_path, action="ask the partner to grant read access") from None
    mode = attrs.st_mode or 0
    if stat.S_ISLNK(mode):
        raise RemotePathError(f"'{remote_path}' is a symbolic link" + (" now (it was replaced while it was read)"
                                                                      if while_reading else ""),
                              partner=partner.name, path=remote_path,
                              action="links are never followed; ask the partner to place the file itself there")
    if attrs.st_mode is not None and not stat.S_ISREG(mode):
        raise RemotePathError(f"'{remote_path}' is not a regular file", partner=partner.name, path=remote_path,
                              action="exclude it in partners.yaml")
    version = version_of(attrs)
    if version is None:
        raise ServerMisbehavedError(
            f"{partner.host}:{partner.port} reported no size for '{remote_path}', so a complete read cannot be "
            "proven", partner=partner.name, path=remote_path,
            action="nothing was landed and the remote file is untouched; ask the partner's server administrator "
                   "to report file sizes (SFTP attribute 'size')")
    return version
