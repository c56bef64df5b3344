"""What happens to the remote file once its S3 object is verified: leave it, delete it, or move it to
``archive_dir`` (keeping its relative path; a name clash gets a unique suffix).

The action runs only for a file whose landing was verified (size read back, SHA-256 tag written), and
only if the remote file is still the version that landed: a partner that already replaced it with a
new version keeps its new file. A failed action is an error, never a warning: the run fails naming the
files still waiting, and the sensor asks for them again; the retry finds them landed and only redoes
the action.
"""

from __future__ import annotations

import posixpath
import stat
import time
from dataclasses import dataclass

import paramiko

from partner_ingest.errors import AfterLandingError
from partner_ingest.sftp.link import PartnerLink
from partner_ingest.transfer import LandedFile, RemoteVersion


@dataclass(frozen=True)
class AfterLandingOutcome:
    action: str          # "left", "deleted", "moved", "skipped"
    detail: str

    def describe(self) -> str:
        return f"{self.action}: {self.detail}" if self.detail else self.action


def archive_path(archive_dir: str, relative_path: str) -> str:
    return posixpath.join(archive_dir.rstrip("/") or "/", relative_path)


def apply_after_landing(link: PartnerLink, landed: LandedFile) -> AfterLandingOutcome:
    partner = link.session.partner
    if partner.after_landing == "leave":
        return AfterLandingOutcome("left", "")
    sftp = link.session.sftp
    path = landed.remote_path
    try:
        attrs = sftp.stat(path)
    except FileNotFoundError:
        return AfterLandingOutcome("skipped", "the remote file is already gone")
    except (OSError, paramiko.SSHException) as exc:
        raise _failed(partner.name, path, partner.after_landing, exc) from None
    now = RemoteVersion(size=attrs.st_size or 0, mtime=int(attrs.st_mtime or 0))
    if now != landed.version:
        return AfterLandingOutcome("skipped", f"the partner replaced it ({landed.version.token} -> {now.token}); "
                                              "the new version is ingested on its own")
    marker = path + partner.stability.done_marker if partner.stability.done_marker else None
    try:
        if partner.after_landing == "delete":
            sftp.remove(path)
            if marker and _exists(sftp, marker):
                sftp.remove(marker)  # the partner's next upload of this name needs a new marker
            return AfterLandingOutcome("deleted", path)
        assert partner.archive_dir is not None
        target = _free_name(sftp, archive_path(partner.archive_dir, landed.relative_path))
        _makedirs(sftp, posixpath.dirname(target))
        sftp.rename(path, target)
        if marker and _exists(sftp, marker):
            sftp.rename(marker, _free_name(sftp, target + (partner.stability.done_marker or "")))
        return AfterLandingOutcome("moved", target)
    except (OSError, paramiko.SSHException) as exc:
        raise _failed(partner.name, path, partner.after_landing, exc) from None


def _failed(partner: str, path: str, action: str, exc: BaseException) -> AfterLandingError:
    return AfterLandingError(
        f"landed and verified, but could not {action} the remote file: {type(exc).__name__}: {exc}",
        partner=partner, path=path,
        action=(f"grant the SFTP user permission to {action} files there (or set after_landing: leave); "
                "the sensor retries the action without landing the file again"))


def _free_name(sftp: paramiko.SFTPClient, target: str) -> str:
    """``target``, or ``target.<UTC timestamp>[-n]`` when something already has that name."""
    if not _exists(sftp, target):
        return target
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        candidate = f"{target}.{stamp}" + (f"-{n}" if n else "")
        if not _exists(sftp, candidate):
            return candidate
    raise OSError(f"no free name next to {target} after 1000 tries")


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    missing = []
    while directory not in ("", "/"):
        try:
            if not stat.S_ISDIR(sftp.stat(directory).st_mode or 0):
                raise NotADirectoryError(f"{directory} exists and is not a directory")
            break
        except FileNotFoundError:
            missing.append(directory)
            directory = posixpath.dirname(directory)
    for path in reversed(missing):
        sftp.mkdir(path)
