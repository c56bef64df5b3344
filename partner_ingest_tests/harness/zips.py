"""Build test archives, benign and hostile, with the standard library's zipfile."""

from __future__ import annotations

import io
import stat
import zipfile


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_raw_names(names: list[str], data: bytes = b"payload") -> bytes:
    """Entries whose names zipfile would normally not let us write (absolute, '..', duplicates)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            info = zipfile.ZipInfo("placeholder")
            info.filename = name
            archive.writestr(info, data)
    return buffer.getvalue()


def symlink_zip(name: str = "link", target: str = "/etc/passwd") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def encrypted_flag_zip() -> bytes:
    """An entry flagged as encrypted (bit 0 of the general purpose flags), as a ZipCrypto archive has."""
    data = bytearray(make_zip({"secret.txt": b"x" * 100}, compression=zipfile.ZIP_STORED))
    # Set the flag in the local header (offset 6) and in the central directory entry (offset 8).
    data[6] |= 0x1
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 0x1
    return bytes(data)


def bomb_zip(size: int) -> bytes:
    return make_zip({"zeros.bin": b"\0" * size})


def many_entries_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"e/{i:06d}.txt", b"")
    return buffer.getvalue()
