"""A remote file's identity: what the sensor compares with what landed, and the run records.

One definition for both sides: the sensor decides "needs landing" by comparing a listing's token
with the materialization's data version, so they must be built by the same function.

* ``<size>-<mtime>`` (``change_detection: metadata``, the default): what rclone and NiFi compare.
  A partner that rewrites a file in place with the same size and a preserved mtime is not seen.
* ``<size>-<mtime>-<sha256 prefix>`` (``change_detection: content``, and for every file whose server
  sends no mtime, where ``<mtime>`` is ``nomtime``): the content is part of the identity, so a
  same-size rewrite is a new version. The run knows the digest from the bytes it landed; the sensor
  reads the remote file to compare it (see the README for the cost).
"""

from __future__ import annotations

from dataclasses import dataclass

NO_MTIME = "nomtime"
DIGEST_CHARS = 16


def version_token(size: int, mtime: int | None, sha256: str | None = None) -> str:
    base = f"{size}-{mtime if mtime is not None else NO_MTIME}"
    return f"{base}-{sha256[:DIGEST_CHARS]}" if sha256 else base


def parse_token(token: str) -> tuple[str, str, str | None]:
    """(size, mtime or ``nomtime``, digest prefix or None) of a data version."""
    parts = token.split("-")
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "",
            parts[2] if len(parts) > 2 and parts[2] else None)


def metadata_part(token: str) -> str:
    """``<size>-<mtime>`` of a token, with or without a content digest."""
    parts = token.split("-")
    return "-".join(parts[:2])


def uses_content_identity(change_detection: str, mtime: int | None) -> bool:
    return change_detection == "content" or mtime is None


@dataclass(frozen=True)
class RemoteVersion:
    """Size and mtime (whole seconds; None when the server sends none) of one remote file."""

    size: int
    mtime: int | None

    @property
    def token(self) -> str:
        return version_token(self.size, self.mtime)

    def token_with(self, change_detection: str, sha256: str | None) -> str:
        """The data version a landing of these bytes records."""
        if uses_content_identity(change_detection, self.mtime):
            return version_token(self.size, self.mtime, sha256)
        return self.token
