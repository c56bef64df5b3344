"""What happens to the remote file once its S3 object is verified: leave it, delete it, or move it to
``archive_dir`` (resolved inside ``remote_dir`` unless absolute, keeping the relative path, never leaving
the archive directory; a name clash gets a unique suffix). Done markers and sidecars follow their file.

The action runs only for a file whose landing was verified (size read back, SHA-256 tag written), and
only if the remote file is still the version that landed (``lstat``: a link is never acted on; a file
"already landed" was re-read and proven equal to the landed object before this runs): a partner that
already replaced it with a new version keeps its new file. A failed action is an error, never a
warning: the run fails naming the files still waiting, and the sensor asks for them again; the retry
finds them landed and only redoes the action.
"""

from __future__ import annotations

import posixpath
import stat
import time
from dataclasses import dataclass

import paramiko

from partner_ingest.errors import AfterLandingError, PartnerIngestError
from partner_ingest.ingest.partition_keys import encode_partition_key, relative_path_of_key
from partner_ingest.ingest.transfer import LandedFile
from partner_ingest.sftp.link import PartnerLink
from partner_ingest.sftp.remote_file import is_inside, lstat_and_readlink, version_of


@dataclass(frozen=True)
class AfterLandingOutcome:
    action: str          # "left", "deleted", "moved", "skipped"
    detail: str

    def describe(self) -> str:
        return f"{self.action}: {self.detail}" if self.detail else self.action


def archive_path(archive_root: str, relative_path: str) -> str:
    """Where a moved file goes: always inside ``archive_root``, whatever the relative path claims."""
    try:
        safe = relative_path_of_key(encode_partition_key(relative_path))
    except ValueError as exc:
        raise ValueError(f"'{relative_path}' cannot be moved into the archive: {exc}") from None
    return posixpath.join(archive_root.rstrip("/") or "/", safe)


def apply_after_landing(link: PartnerLink, landed: LandedFile) -> AfterLandingOutcome:
    partner = link.session.partner
    if partner.after_landing == "leave":
        return AfterLandingOutcome("left", "")
    sftp = link.session.sftp
    path = landed.remote_path
    try:
        root = link.session.root_realpath
        attrs, link_target, parent = lstat_and_readlink(sftp, path, resolve_parent=True)
    except FileNotFoundError:
        return AfterLandingOutcome("skipped", "the remote file is already gone")
    except (OSError, paramiko.SSHException) as exc:
        raise _failed(partner.name, path, partner.after_landing, exc) from None
    if (attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode)) or link_target is not None:
        return AfterLandingOutcome("skipped", "the path is no longer a regular file (never followed or removed)")
    if not is_inside(parent, root):
        return AfterLandingOutcome("skipped", f"the path now resolves outside remote_dir ('{parent}'): not touched")
    now = version_of(attrs)
    if now is None or now != landed.version:
        found = now.token if now else "no size"
        return AfterLandingOutcome("skipped", f"the partner replaced it ({landed.version.token} -> {found}); "
                                              "the new version is ingested on its own")
    # Companions follow their file: the partner's next upload of this name needs a new marker/sidecar.
    suffixes = [s for s in (partner.stability.done_marker,
                            partner.source_checksums.sidecar if partner.source_checksums else None) if s]
    try:
        if partner.after_landing == "delete":
            sftp.remove(path)
            for suffix in suffixes:
                if _exists(sftp, path + suffix):
                    sftp.remove(path + suffix)
            return AfterLandingOutcome("deleted", path)
        assert partner.archive_root is not None
        try:
            wanted = archive_path(partner.archive_root, landed.relative_path)
        except ValueError as exc:
            raise AfterLandingError(str(exc), partner=partner.name, path=path,
                                    action="nothing was moved; this path did not come from the partner's sensor"
                                    ) from None
        target = _free_name(sftp, wanted)
        _makedirs(sftp, posixpath.dirname(target))
        sftp.rename(path, target)
        for suffix in suffixes:
            if _exists(sftp, path + suffix):
                sftp.rename(path + suffix, _free_name(sftp, target + suffix))
        return AfterLandingOutcome("moved", target)
    except PartnerIngestError:
        raise
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
