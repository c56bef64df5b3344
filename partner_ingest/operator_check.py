"""What ``partner-ingest keyscan`` and ``partner-ingest check`` do, apart from the command line.

``check`` yields one :class:`Step` per stage and partner, in order, and stops a partner at its first
failure with the typed error's message (which says what to do). No step's detail ever holds a secret:
the typed errors take names, paths and fingerprints only, and credentials are never formatted.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from botocore.exceptions import BotoCoreError, ClientError

from partner_ingest.config import IngestConfig, load_config
from partner_ingest.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailedError,
    HostKeyError,
    PartnerIngestError,
)

# One connection per entry, as OpenSSH's ssh-keyscan does: a server offers one host key per handshake,
# the one of the first type both sides accept.
KEYSCAN_TYPES: tuple[tuple[str, ...], ...] = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256",),
    ("ecdsa-sha2-nistp384",),
    ("ecdsa-sha2-nistp521",),
    ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
)

PIN_ADVICE = ("Confirm a fingerprint with the partner out of band (phone, signed email) before pinning its line "
              "in host_keys.")


class KeyscanError(Exception):
    """The host could not be reached or did not speak SSH."""


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:`` fingerprint of a public key blob: unpadded base64 of its SHA-256."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def key_line(key_type: str, blob: bytes) -> str:
    """A ``partners.yaml`` host_keys item with its fingerprint as a YAML comment."""
    return f"- {key_type} {base64.b64encode(blob).decode('ascii')}  # {fingerprint(blob)}"


def _scan_one(host: str, port: int, key_types: tuple[str, ...], timeout: float) -> paramiko.PKey | None:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise KeyscanError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        options = transport.get_security_options()
        available = set(options.key_types)
        options.key_types = tuple(k for k in key_types if k in available)
        try:
            transport.start_client(timeout=timeout)
        except paramiko.SSHException as exc:
            if "host key" in str(exc).lower():
                return None  # the server holds no key of these types
            raise KeyscanError(f"{host}:{port} did not complete an SSH handshake: {exc}") from None
        except (OSError, EOFError) as exc:
            raise KeyscanError(f"{host}:{port} dropped the SSH handshake: {type(exc).__name__}: {exc}") from None
        return transport.get_remote_server_key()
    finally:
        transport.close()


def scan_host_keys(host: str, port: int = 22, timeout: float = 10.0) -> list[tuple[str, bytes]]:
    """(OpenSSH type name, public key blob) of each host key the server offers, without authenticating."""
    found: list[tuple[str, bytes]] = []
    for key_types in KEYSCAN_TYPES:
        key = _scan_one(host, port, key_types, timeout)
        if key is not None and all(key.asbytes() != blob for _, blob in found):
            found.append((key.get_name(), key.asbytes()))
    if not found:
        raise KeyscanError(f"{host}:{port} offered no host key of a type partner-ingest accepts")
    return found


@dataclass(frozen=True)
class Step:
    partner: str | None
    name: str
    ok: bool
    detail: str


def _size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} bytes" if unit == "bytes" else f"{count} bytes ({size:.1f} {unit})"
        size /= 1024
    return f"{count} bytes"


def check(names: Iterable[str] = (), config: Path | str | None = None, *, resources: dict | None = None,
          s3: Any = None) -> Iterator[Step]:
    """Check each named partner (all when none), in order; a partner stops at its first failed step.

    ``s3``: the client for the landing bucket (default: boto3's, from the standard AWS environment, the
    same environment the code location's S3 resource reads)."""
    try:
        ingest: IngestConfig = load_config(config)
    except ConfigError as exc:
        yield Step(None, "config OK", False, str(exc))
        return
    wanted = list(names) or [p.name for p in ingest.partners]
    if not wanted:
        yield Step(None, "config OK", False, "partners.yaml lists no partners. What to do: add one (see "
                                             "partners.example.yaml)")
        return
    if resources is None:
        from partner_ingest.defs.resources import default_resources
        resources = default_resources()
    if s3 is None:
        import boto3
        s3 = boto3.client("s3")
    sftp = resources["sftp"]
    for name in wanted:
        yield from _check_partner(ingest, name, sftp, s3)


# Directories whose mtime is compared with their newest file: a sample, one STAT each.
DIRECTORY_SAMPLE = 50
# Landed objects compared by listing the prefix: beyond this many, the count is given as "at most".
LANDED_LISTING_LIMIT = 100_000


def _directory_mtimes(session, listing) -> str:
    """Whether directory mtimes move when files arrive: a directory older than a file inside it means
    files were rewritten in place or the server does not update them, so nothing may rely on them to skip
    unchanged directories (the sensor lists every directory; this tells whether a cheaper walk could)."""
    newest: dict[str, int] = {}
    for entry in listing.files:
        if entry.mtime is not None:
            parent = posixpath.dirname(entry.relative_path)
            newest[parent] = max(newest.get(parent, entry.mtime), entry.mtime)
    if not newest:
        return "directory mtimes not compared (no file with an mtime)"
    sample = sorted(newest)[:DIRECTORY_SAMPLE]
    missing = behind = 0
    for relative in sample:
        try:
            mtime = session.sftp.stat(session.remote_path(relative) if relative else session.partner.remote_dir
                                      ).st_mtime
        except (OSError, paramiko.SSHException):
            missing += 1
            continue
        if mtime is None:
            missing += 1
        elif int(mtime) + 1 < newest[relative]:
            behind += 1
    if missing == len(sample):
        return "directory mtimes missing"
    if behind:
        return (f"directory mtimes: {behind} of {len(sample)} directories older than a file inside them "
                "(files rewritten in place, or the server does not update directory mtimes)")
    return f"directory mtimes follow their files ({len(sample)} directories compared)"


def _not_landed(ingest: IngestConfig, partner, listing, s3) -> str:
    """How many matching files have no object of their size at their landing key (one listing of the
    prefix, never the partner's bytes). A different size counts as not landed: the run lands it again."""
    from partner_ingest.s3.keys import landing_key

    prefix = partner.landing_prefix.rstrip("/") + "/"
    sizes: dict[str, int] = {}
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=ingest.landing.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                sizes[item["Key"]] = int(item["Size"])
            if len(sizes) >= LANDED_LISTING_LIMIT:
                break
    except (ClientError, BotoCoreError) as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        return f"not-yet-landed count unknown: cannot list s3://{ingest.landing.bucket}/{prefix} ({code})"
    waiting = sum(sizes.get(landing_key(partner.landing_prefix, e.relative_path)) != e.size for e in listing.files)
    at_most = "at most " if len(sizes) >= LANDED_LISTING_LIMIT and waiting else ""
    return f"{at_most}{waiting} not yet landed in s3://{ingest.landing.bucket}/{prefix}"


def _check_partner(ingest: IngestConfig, name: str, sftp, s3) -> Iterator[Step]:
    try:
        partner = ingest.partner(name)
    except ConfigError as exc:
        yield Step(name, "config OK", False, str(exc))
        return
    yield Step(name, "config OK", True, f"{partner.username}@{partner.host}:{partner.port} {partner.remote_dir}")

    try:
        credentials = sftp.credentials(partner)
    except PartnerIngestError as exc:
        yield Step(name, "secret found", False, str(exc))
        return
    yield Step(name, "secret found", True, f"'{partner.secret_id}' holds a {credentials.description}")

    where = f"{partner.host}:{partner.port}"
    timeout = sftp.settings().connect_timeout
    try:
        socket.create_connection((partner.host, partner.port), timeout=timeout).close()
    except OSError as exc:
        cause = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        error = ConnectionFailedError(
            f"cannot reach {where} over TCP: {cause}", partner=name,
            action="check host and port, that the partner's server is up, and that it allowlists our egress IP")
        yield Step(name, "TCP reachable", False, str(error))
        return
    yield Step(name, "TCP reachable", True, where)

    try:
        session = sftp.open(partner)
    except HostKeyError as exc:
        yield Step(name, "host key matches the pin", False, str(exc))
        return
    except AuthenticationError as exc:
        yield Step(name, "host key matches the pin", True, "the server's key is pinned")
        yield Step(name, "authentication OK", False, str(exc))
        return
    except PartnerIngestError as exc:
        yield Step(name, "SSH session opened", False, str(exc))
        return
    with session:
        transport = session.client.get_transport()
        key = transport.get_remote_server_key() if transport is not None else None
        yield Step(name, "host key matches the pin", True,
                   f"{key.get_name()} {fingerprint(key.asbytes())}" if key is not None else "pinned")
        yield Step(name, "authentication OK", True, f"user '{partner.username}' ({credentials.description})")
        try:
            session.check_remote_dir()
            from partner_ingest.ingest.selection import Selection
            from partner_ingest.sftp.walk import walk
            listing = walk(session, Selection(partner))
        except PartnerIngestError as exc:
            yield Step(name, "remote directory readable", False, str(exc))
            return
        yield Step(name, "remote directory readable", True, partner.remote_dir)

        try:
            limit = session.read_limit
        except (paramiko.SSHException, OSError) as exc:
            limit = None
            limit_text = f"limits@openssh.com unanswered ({type(exc).__name__})"
        else:
            limit_text = f"largest read {limit} bytes" if limit else "limits@openssh.com not offered"
        no_size = sum("reports no size" in s for s in listing.skipped)
        if listing.files or no_size:
            size_text = "size present" if not no_size else f"size missing for {no_size} file(s)"
            mtime_text = ("mtime present" if not listing.without_mtime
                          else f"mtime missing for {listing.without_mtime} file(s)")
            listed = f"{size_text}, {mtime_text}"
        else:
            listed = "size and mtime not seen (no matching files)"
        yield Step(name, "server capabilities", True, f"{limit_text}; {listed}; {_directory_mtimes(session, listing)}")

        total = sum(entry.size for entry in listing.files)
        notes = []
        if listing.problems():
            notes.append(f"{len(listing.problems())} skipped or unreadable")
        if listing.truncated:
            notes.append("listing truncated")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        yield Step(name, "files matching the globs", True,
                   f"{len(listing.files)} file(s), {_size(total)}{suffix}; {_not_landed(ingest, partner, listing, s3)}")
