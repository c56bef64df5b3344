"""Which remote paths are a partner's files: one rule for the sensor's walk and for a run's keys.

A partition key is untrusted (anyone with the UI can add one), so a run must refuse exactly what the
sensor would never have listed: paths outside the include/exclude globs or under a pruned directory
(``exclude: ["**/*.part"]`` protects uploads in progress, and with ``after_landing: delete`` landing
one would delete the partner's half-written file), done markers and checksum files (companions of a
file, never files of their own), anything under ``archive_dir``, names with control characters or
backslashes, and names with the reserved ``.unzipped`` suffix where archives expand.
"""

from __future__ import annotations

import posixpath
import re

from partner_ingest.config import PartnerConfig
from partner_ingest.ingest.archives import RESERVED_SUFFIX
from partner_ingest.ingest.source_checksums import is_checksum_file
from partner_ingest.sftp.directory_listing import not_utf8
from partner_ingest.sftp.globs import PathFilter

UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def archive_dir_inside(partner: PartnerConfig) -> frozenset[str]:
    """``archive_dir`` relative to ``remote_dir`` when it lies inside it: never listed, never re-ingested."""
    archive = partner.archive_root
    if not archive:
        return frozenset()
    root = posixpath.normpath(partner.remote_dir)
    relative = posixpath.relpath(archive, root)
    return frozenset() if relative == ".." or relative.startswith("../") else frozenset({relative})


class Selection:
    """The partner's rules for names, directories and files, as the walk applies them level by level."""

    def __init__(self, partner: PartnerConfig) -> None:
        self.partner = partner
        self.filter = PathFilter(list(partner.include), list(partner.exclude))
        self.skip_dirs = archive_dir_inside(partner)
        self.reserved_suffix = RESERVED_SUFFIX if partner.unzip else None
        self.marker_suffix = partner.stability.done_marker

    def name_refusal(self, name: str) -> str | None:
        """Why one path segment is not accepted, or None."""
        if UNSAFE_NAME.search(name):
            return "name not accepted: control characters or a slash or backslash"
        if not_utf8(name):
            return "name not accepted: it is not UTF-8 (ask the partner to name files in UTF-8)"
        if self.reserved_suffix and name.endswith(self.reserved_suffix):
            return f"name not accepted: the reserved suffix '{self.reserved_suffix}' (archives expand there)"
        return None

    def walks_dir(self, relative_dir: str) -> bool:
        return relative_dir not in self.skip_dirs and self.filter.walks_dir(relative_dir)

    def role(self, relative_path: str) -> str | None:
        """"marker", "checksum" or "file" for a regular file in a walked directory; None: not wanted."""
        name = posixpath.basename(relative_path)
        if self.marker_suffix and name.endswith(self.marker_suffix):
            return "marker"
        if is_checksum_file(self.partner.source_checksums, relative_path):
            return "checksum"
        return "file" if self.filter.wants_file(relative_path) else None

    def refusal(self, relative_path: str) -> str | None:
        """Why a run must not land ``relative_path`` (one the walk would never list as a file), or None."""
        segments = relative_path.split("/")
        if not self.partner.recursive and len(segments) > 1:
            return "it lies in a subdirectory and the partner is not listed recursively"
        for depth, segment in enumerate(segments):
            why = self.name_refusal(segment)
            if why:
                return why
            if depth < len(segments) - 1:
                directory = "/".join(segments[: depth + 1])
                if not self.walks_dir(directory):
                    return f"directory '{directory}' is excluded or is the archive directory"
        role = self.role(relative_path)
        if role is None:
            return "it does not match the partner's include/exclude globs"
        if role != "file":
            return f"it is a {'done marker' if role == 'marker' else 'checksum file'}, a companion of another file"
        return None
