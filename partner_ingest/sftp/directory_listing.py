"""One directory's entries with their attributes, tolerating names that are not UTF-8.

Written by hand because paramiko's ``listdir_attr`` decodes every name strictly: one file whose name is
not UTF-8 (a Latin-1 name from an old Windows tool, say) raises ``UnicodeDecodeError`` for the whole
directory, so every tick of the partner would fail and none of its files would land, and the open
directory handle is never closed. This is the same request sequence (OPENDIR, READDIR until EOF, CLOSE)
through paramiko's own request and attribute parsing; names are decoded with ``surrogateescape``, so a
bad name survives as a string the walk can refuse (and report) on its own.
"""

from __future__ import annotations

import contextlib

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR

# Bounds one directory: a server that never answers EOF to READDIR cannot keep the walk here forever.
MAX_READDIR_REPLIES = 1_000_000


def not_utf8(name: str) -> bool:
    """The name held bytes that are not UTF-8 (they decoded to lone surrogates)."""
    return any("\udc80" <= char <= "\udcff" for char in name)


def list_directory(sftp: paramiko.SFTPClient, path: str) -> list[paramiko.SFTPAttributes]:
    """``sftp.listdir_attr(path)``, but a name that is not UTF-8 arrives surrogate-escaped."""
    kind, msg = sftp._request(CMD_OPENDIR, path)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = msg.get_binary()
    entries: list[paramiko.SFTPAttributes] = []
    try:
        for _ in range(MAX_READDIR_REPLIES):
            try:
                kind, msg = sftp._request(CMD_READDIR, handle)
            except EOFError:
                break
            if kind != CMD_NAME:
                raise paramiko.SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                filename = msg.get_string().decode("utf-8", "surrogateescape")
                longname = msg.get_string().decode("utf-8", "replace")
                attrs = paramiko.SFTPAttributes._from_msg(msg, filename, longname)
                if filename not in (".", ".."):
                    entries.append(attrs)
        else:
            raise paramiko.SFTPError(f"directory listing of {path!r} did not end after {MAX_READDIR_REPLIES} replies")
    finally:
        with contextlib.suppress(paramiko.SFTPError, OSError, EOFError):
            sftp._request(CMD_CLOSE, handle)
    return entries
