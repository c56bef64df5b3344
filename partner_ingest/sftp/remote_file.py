"""The one place that turns SFTP attributes into a :class:`RemoteVersion` and SFTP errors on a remote
path (a file, or ``remote_dir`` itself) into typed errors.

Attributes are untrusted (SFTP v3 makes size, permissions and mtime optional): a missing size is
an error, because without it nothing read can be proven complete; a missing mtime is allowed and
switches the file to a content identity (``partner_ingest.versions``). Paths are ``lstat``'ed, never
followed: a symlink (also one swapped in after the listing) is refused.

``LSTAT`` alone is not enough: ProFTPD's ``mod_sftp`` resolves the whole path before calling lstat(2),
so a symlink answers as the regular file it points to. ``READLINK`` succeeds only on a link, on every
server seen here, so both are sent together (one round trip) and a readable link target refuses the
path. The parent directory's ``REALPATH`` goes with them: a path that reaches through a symlinked
directory (``remote_dir/shared -> /elsewhere``, never listed by the walk, but nameable by a crafted
partition key) resolves outside ``remote_dir`` and is refused.
"""

from __future__ import annotations

import posixpath
import stat

import paramiko
from paramiko.sftp import CMD_ATTRS, CMD_LSTAT, CMD_NAME, CMD_READLINK, CMD_REALPATH, CMD_STATUS

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import RemoteFileChangedError, RemotePathError, ServerMisbehavedError
from partner_ingest.sftp.reader import Responses
from partner_ingest.versions import RemoteVersion


def version_of(attrs: paramiko.SFTPAttributes) -> RemoteVersion | None:
    """Size and mtime, or None when the server sent no size."""
    if attrs.st_size is None:
        return None
    return RemoteVersion(size=int(attrs.st_size), mtime=int(attrs.st_mtime) if attrs.st_mtime is not None else None)


def refused_path(exc: BaseException, partner: PartnerConfig, path: str, *, doing: str, gone: str,
                 gone_action: str, what: str = "") -> RemotePathError:
    """The typed error for an SFTP refusal of ``path``: ``FileNotFoundError`` reads as "``'<path>' <gone>``",
    anything else the caller hands over as "``user ... may not <doing> '<path>'``" (with the server's words
    unless it said permission denied). ``what`` names the kind of path in both (``remote directory``)."""
    named = f"{what} '{path}'" if what else f"'{path}'"
    if isinstance(exc, FileNotFoundError):
        return RemotePathError(f"{named} {gone}", partner=partner.name, path=path, action=gone_action)
    detail = "" if isinstance(exc, PermissionError) else f": {exc}"
    return RemotePathError(f"user '{partner.username}' may not {doing} {named}{detail}", partner=partner.name,
                           path=path, action="ask the partner to grant read access")


def refused_remote_dir(exc: BaseException, partner: PartnerConfig, *, doing: str) -> RemotePathError:
    """:func:`refused_path` for the partner's ``remote_dir``: missing, or not ours to ``doing``."""
    return refused_path(exc, partner, partner.remote_dir, doing=doing, what="remote directory",
                        gone=f"does not exist on {partner.host}",
                        gone_action="check remote_dir in partners.yaml with the partner")


def lstat_regular_file(sftp: paramiko.SFTPClient, partner: PartnerConfig, remote_path: str, *,
                       root: str | None = None, while_reading: bool = False) -> RemoteVersion:
    """``lstat`` the path: a regular file with a size, inside ``root`` (the real path of ``remote_dir``,
    when given), or a typed error saying what to do."""
    try:
        attrs, link_target, parent = lstat_and_readlink(sftp, remote_path, resolve_parent=root is not None)
    except (FileNotFoundError, PermissionError) as exc:
        if while_reading and isinstance(exc, FileNotFoundError):
            raise RemoteFileChangedError(f"'{remote_path}' vanished while it was read", partner=partner.name,
                                         path=remote_path,
                                         action="nothing was landed; it is ingested again if it returns") from None
        raise refused_path(exc, partner, remote_path, doing="stat", gone=f"no longer exists on {partner.host}",
                           gone_action="nothing to land; the sensor drops files that vanish") from None
    if root is not None and not is_inside(parent, root):
        raise RemotePathError(f"'{remote_path}' resolves outside remote_dir (its directory is really '{parent}')",
                              partner=partner.name, path=remote_path,
                              action="nothing was read; links are never followed, and only files inside "
                                     "remote_dir are landed")
    mode = attrs.st_mode or 0
    if stat.S_ISLNK(mode) or link_target is not None:
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


def is_inside(real_path: str | None, root: str) -> bool:
    if real_path is None:
        return False
    root = root.rstrip("/") or "/"
    return real_path == root or real_path.startswith(root if root == "/" else root + "/")


def lstat_and_readlink(sftp: paramiko.SFTPClient, path: str, *, resolve_parent: bool = False
                       ) -> tuple[paramiko.SFTPAttributes, str | None, str | None]:
    """``LSTAT``, ``READLINK`` and (optionally) the parent's ``REALPATH`` of one path, pipelined: the
    attributes, the link target (None: not a link) and the parent's real path.

    paramiko has no pipelined form of these calls, so this uses the same request plumbing as its own
    ``stat``/``readlink``/``normalize`` (``_async_request``/``_read_response``).
    """
    encoded = sftp._adjust_cwd(path)
    responses = Responses()
    realpath_num = None
    if resolve_parent:
        realpath_num = sftp._async_request(responses, CMD_REALPATH, sftp._adjust_cwd(posixpath.dirname(path) or "."))
    lstat_num = sftp._async_request(responses, CMD_LSTAT, encoded)
    readlink_num = sftp._async_request(responses, CMD_READLINK, encoded)
    parent: str | None = None
    if realpath_num is not None:
        try:
            t, msg = _await(sftp, responses, realpath_num)
            if t == CMD_NAME and msg.get_int() >= 1:
                parent = msg.get_text()
        except (OSError, EOFError):
            parent = None  # the directory cannot be resolved: refused as "outside" unless LSTAT fails first
    link_target: str | None = None
    try:
        t, msg = _await(sftp, responses, readlink_num)
        if t == CMD_NAME and msg.get_int() >= 1:
            link_target = msg.get_text()
    except (OSError, EOFError):  # "not a link" arrives as an error status, whose wording varies by server
        link_target = None
    t, msg = _await(sftp, responses, lstat_num)
    if t != CMD_ATTRS:
        raise ServerMisbehavedError(f"expected attributes for '{path}', got SFTP packet type {t}")
    return paramiko.SFTPAttributes._from_msg(msg), link_target, parent


def _await(sftp: paramiko.SFTPClient, responses: Responses, num: int) -> tuple[int, paramiko.Message]:
    if num in responses.arrived:
        t, msg = responses.arrived.pop(num)
        if t == CMD_STATUS:
            sftp._convert_status(msg)
        return t, msg
    return sftp._read_response(num)
