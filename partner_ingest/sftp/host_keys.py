"""The OpenSSH public key line (``<type> <base64> [comment]``, as ``ssh-keyscan`` and ``authorized_keys``
write it), checked in one place.

partners.yaml pins partners' host keys in this form, and ``deploy/ecs/render_partners.py`` takes
Transfer Family users' keys in it; both call :func:`check_openssh_key_line`, so a line accepted by
one is accepted by the other. The check goes as far as the blob's own type name: a line whose label
and key disagree would otherwise load and fail only when a connection (or AWS) parses it.
"""

from __future__ import annotations

import base64
import struct

OPENSSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


def check_openssh_key_line(line: str, *, hint: str = "") -> str:
    """The key type of ``line``, or ValueError saying what is wrong with it (``hint``: where to copy a good one)."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in OPENSSH_KEY_TYPES:
        raise ValueError(f"'{line[:40]}' is not an OpenSSH public key line; expected '<type> <base64> [comment]' "
                         f"with type one of {', '.join(OPENSSH_KEY_TYPES)}" + (f" ({hint})" if hint else ""))
    key_type, data = parts[:2]
    try:
        blob = base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise ValueError(f"the key data of '{key_type} {data[:16]}...' is not base64") from exc
    try:
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4:4 + length].decode()
    except (ValueError, struct.error) as exc:
        raise ValueError(f"the key data of '{key_type} {data[:16]}...' is not a valid public key") from exc
    if embedded != key_type:
        raise ValueError(f"the key data of '{key_type} {data[:16]}...' is a {embedded} key")
    return key_type
