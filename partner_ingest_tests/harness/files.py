"""Sizes, and files for the partner's SFTP tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


def write_random(path: Path, size: int) -> str:
    """Incompressible content in 8 MiB blocks (never the whole file in memory), readable by the SFTP
    test users; returns its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 8 * MiB))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
    path.chmod(0o644)
    return digest.hexdigest()
