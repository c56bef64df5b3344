"""Read the digest a partner published for a file (a sidecar or a manifest), before the transfer.

This is what makes "verified" mean "equal to the partner's file": the SHA-256 we compute while
streaming only proves S3 holds what we read; the partner's own digest proves what we read is what
they meant to send. Formats are the ones partners produce with coreutils: a bare hex digest, or
``sha256sum``/``md5sum`` lines ``<hex>  <name>`` (``*`` before the name for binary mode).
"""

from __future__ import annotations

import posixpath
import re
import stat
from dataclasses import dataclass

import paramiko

from partner_ingest.config import PartnerConfig, SourceChecksums
from partner_ingest.errors import SourceChecksumError

_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
# A sidecar is one line; a manifest lists a directory. Anything larger is not a checksum file.
MAX_CHECKSUM_FILE_BYTES = 16 * 1024 * 1024
_LINE = re.compile(r"^\s*([0-9A-Fa-f]+)(?:\s+\*?(.+?))?\s*$")


@dataclass(frozen=True)
class ExpectedDigest:
    algorithm: str
    hexdigest: str
    source: str          # "sidecar" or "manifest"
    path: str            # the remote checksum file it came from


def checksum_file_path(rule: SourceChecksums, remote_path: str) -> str:
    if rule.sidecar:
        return remote_path + rule.sidecar
    assert rule.manifest is not None
    return posixpath.join(posixpath.dirname(remote_path), rule.manifest)


def is_checksum_file(rule: SourceChecksums | None, relative_path: str) -> bool:
    """Checksum files land like any file but need no checksum of their own."""
    if rule is None:
        return False
    if rule.sidecar:
        return relative_path.endswith(rule.sidecar)
    return posixpath.basename(relative_path) == rule.manifest


def parse_digest(text: str, *, algorithm: str, name: str, manifest: bool) -> str | None:
    """The lower-case hex digest for ``name`` in a sidecar or manifest text, or None when absent."""
    length = _HEX_LENGTH[algorithm]
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        digest, listed = match.group(1), match.group(2)
        if len(digest) != length:
            continue
        if manifest:
            if listed is not None and (listed[2:] if listed.startswith("./") else listed) == name:
                return digest.lower()
        elif listed is None or posixpath.basename(listed) == name:
            return digest.lower()
    return None


def read_expected_digest(sftp: paramiko.SFTPClient, partner: PartnerConfig, remote_path: str
                         ) -> ExpectedDigest | None:
    """The partner's digest for ``remote_path``; None when none is configured or (if not required) published."""
    rule = partner.source_checksums
    if rule is None or is_checksum_file(rule, posixpath.relpath(remote_path, partner.remote_dir)):
        return None
    source = "sidecar" if rule.sidecar else "manifest"
    path = checksum_file_path(rule, remote_path)

    def missing(why: str) -> ExpectedDigest | None:
        if not rule.required:
            return None
        raise SourceChecksumError(
            f"its {source} '{path}' {why}", partner=partner.name, path=remote_path,
            action=(f"nothing was landed; ask the partner to publish the {rule.algorithm} digest in '{path}' "
                    "(the file is tried again), or set source_checksums.required: false"))

    try:
        attrs = sftp.lstat(path)
    except FileNotFoundError:
        return missing("does not exist")
    except PermissionError:
        return missing("cannot be read (permission denied)")
    if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
        return missing("is not a regular file")
    if attrs.st_size is not None and attrs.st_size > MAX_CHECKSUM_FILE_BYTES:
        return missing(f"is larger than {MAX_CHECKSUM_FILE_BYTES} bytes")
    try:
        with sftp.open(path, "rb") as handle:
            raw = handle.read(MAX_CHECKSUM_FILE_BYTES + 1)
    except (PermissionError, FileNotFoundError) as exc:
        return missing(f"cannot be read ({type(exc).__name__}: {exc})")
    # Other errors are the link's: raised, so a drop is retried as one, never read as "no digest".
    if len(raw) > MAX_CHECKSUM_FILE_BYTES:
        return missing(f"is larger than {MAX_CHECKSUM_FILE_BYTES} bytes")
    digest = parse_digest(raw.decode("utf-8", errors="replace"), algorithm=rule.algorithm,
                          name=posixpath.basename(remote_path), manifest=source == "manifest")
    if digest is None:
        return missing(f"holds no {rule.algorithm} digest for '{posixpath.basename(remote_path)}'")
    return ExpectedDigest(algorithm=rule.algorithm, hexdigest=digest, source=source, path=path)
