"""Open an SFTP session to a partner with its pinned host keys and stored credentials.

There is no trust-on-first-use: the host keys come from partners.yaml and anything else is refused
with the offered key's fingerprint and the exact line to pin once the partner has confirmed it.
"""

from __future__ import annotations

import base64
import stat
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from types import TracebackType
from typing import Any, TypeVar

import paramiko

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailedError,
    HostKeyError,
    RemotePathError,
)
from partner_ingest.sftp import channel_buffer
from partner_ingest.sftp.credentials import SftpCredentials
from partner_ingest.sftp.reader import server_read_limit
from partner_ingest.sftp.remote_file import refused_remote_dir
from partner_ingest.sftp.shared_client import SharedSFTPClient

# aes-gcm is ~20% faster than paramiko's default aes128-ctr; the rest keep paramiko's order.
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


_Settings = TypeVar("_Settings")


def setting(default: Any, unit: str, description: str) -> Any:
    """A field of a settings dataclass. Its unit names its keyword (``connect_timeout`` is set as
    ``connect_timeout_seconds``) and its description is shown with its value in the UI."""
    return field(default=default, metadata={"unit": unit, "description": description})


def setting_keywords(settings_type: type, prefix: str = "") -> dict[str, str]:
    """Keyword -> field name: ``<prefix><field>_<unit>``, the unit written once (``keepalive_seconds``)."""
    keywords = {}
    for item in fields(settings_type):
        unit = item.metadata["unit"]
        keywords[prefix + (item.name if not unit or item.name.endswith(unit) else f"{item.name}_{unit}")] = item.name
    return keywords


def with_keywords(settings: _Settings, values: dict[str, Any], prefix: str = "") -> _Settings:
    """``settings`` with the ``values`` named by :func:`setting_keywords`; the others are left to the caller."""
    keywords = setting_keywords(type(settings), prefix)
    return replace(settings, **{keywords[k]: v for k, v in values.items() if k in keywords})


def describe_settings(settings: object, prefix: str = "") -> str:
    """``name=value`` (what it bounds) per setting, for the resource's description in the UI."""
    by_field = {name: keyword for keyword, name in setting_keywords(type(settings), prefix).items()}
    return "; ".join(f"{by_field[item.name]}={getattr(settings, item.name)} ({item.metadata['description']})"
                     for item in fields(settings))


@dataclass(frozen=True)
class ConnectionSettings:
    """Timeouts and flow control of one session, declared here only (``SftpResource`` takes them by keyword)."""

    connect_timeout: float = setting(15.0, "seconds", "TCP connect")
    banner_timeout: float = setting(15.0, "seconds", "the server's SSH banner")
    auth_timeout: float = setting(30.0, "seconds", "the server's answer to authentication")
    channel_timeout: float = setting(30.0, "seconds", "opening the SFTP channel, then every wait on it")
    keepalive_seconds: int = setting(15, "seconds", "SSH keepalive interval")
    window_size: int = setting(16 * 1024 * 1024, "bytes", "SSH channel window: how much the server may send "
                                                          "ahead of our reads")
    max_packet_size: int = setting(256 * 1024, "bytes", "largest SSH data packet")


def channel_window(settings: ConnectionSettings, partner: PartnerConfig) -> int:
    """The SFTP channel's window: twice the partner's reads in flight. Smaller than the reads in flight, it
    caps a far link at window / RTT (64 MiB in flight in a 16 MiB window: 102-110 MiB/s at 100 ms RTT,
    like 16 MiB in flight); 1x and 2x measured alike on a quiet machine (32 MiB at 100 ms: 165-174 vs
    160-184 MiB/s, benchmarks/throughput.py), and the server sends only what was requested, so 2x costs
    no memory: it is headroom."""
    return max(settings.window_size, 2 * partner.limits.read_in_flight_bytes + 2 * settings.max_packet_size)


def host_key_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pinned_host_keys(partner: PartnerConfig) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    name = host_key_name(partner.host, partner.port)
    for line in partner.host_keys:
        key_type, data = line.split()[:2]
        try:
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
        except Exception as exc:  # paramiko raises several types for malformed blobs
            raise ConfigError(f"host key '{key_type} {data[:16]}...' cannot be parsed: {exc}",
                              partner=partner.name, action="copy the key line again from ssh-keyscan") from None
        keys.add(name, key.get_name(), key)
    return keys


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _transport_factory(pinned_types: list[str]):
    """A Transport that asks for the pinned key types first and prefers aes-gcm.

    paramiko itself only moves the *first* pinned key type to the front; listing all of them
    means a server that holds any one pinned key offers that one, as OpenSSH's client does.
    """
    wanted: list[str] = []
    for key_type in pinned_types:
        wanted.extend(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if key_type == "ssh-rsa" else [key_type])

    def factory(sock, **kwargs) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **kwargs)
        options = transport.get_security_options()
        ciphers = list(options.ciphers)
        options.ciphers = tuple([c for c in _PREFERRED_CIPHERS if c in ciphers]
                                + [c for c in ciphers if c not in _PREFERRED_CIPHERS])
        key_types = list(options.key_types)
        options.key_types = tuple([k for k in wanted if k in key_types] + [k for k in key_types if k not in wanted])
        return transport

    return factory


class SftpSession:
    """An open SSH connection and SFTP channel to one partner; close it (or use ``with``)."""

    def __init__(self, partner: PartnerConfig, client: paramiko.SSHClient, sftp: paramiko.SFTPClient):
        self.partner = partner
        self.client = client
        self.sftp = sftp

    def __enter__(self) -> SftpSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.client.close()

    @cached_property
    def read_limit(self) -> int | None:
        """The server's ``limits@openssh.com`` read limit, asked once per session (None: not offered)."""
        return server_read_limit(self.sftp)

    @cached_property
    def root_realpath(self) -> str:
        """``remote_dir`` as the server resolves it (``REALPATH``): files must resolve inside it."""
        try:
            return self.sftp.normalize(self.partner.remote_dir)
        except OSError as exc:
            raise RemotePathError(f"remote directory '{self.partner.remote_dir}' cannot be resolved on "
                                  f"{self.partner.host}: {exc}", partner=self.partner.name,
                                  path=self.partner.remote_dir,
                                  action="check remote_dir in partners.yaml with the partner") from None

    def remote_path(self, relative_path: str) -> str:
        base = self.partner.remote_dir
        return f"{base.rstrip('/')}/{relative_path}" if base not in ("", ".") else relative_path

    def check_remote_dir(self) -> None:
        """Fail with the partner and the directory when ``remote_dir`` is missing or unreadable."""
        try:
            attrs = self.sftp.stat(self.partner.remote_dir)
        except (FileNotFoundError, PermissionError) as exc:
            raise refused_remote_dir(exc, self.partner, doing="read") from None
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise RemotePathError(
                f"remote_dir '{self.partner.remote_dir}' is not a directory",
                partner=self.partner.name, path=self.partner.remote_dir,
                action="point remote_dir at the directory that holds the files")


def _connect_cause(exc: BaseException, settings: ConnectionSettings) -> str:
    """paramiko hides the socket error inside NoValidConnectionsError; surface it (e.g. Connection refused)."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "; ".join(f"{addr[0]}:{addr[1]} {err.strerror or err}" for addr, err in exc.errors.items())
    if isinstance(exc, TimeoutError):
        return f"no answer within {settings.connect_timeout:.0f}s (timed out)"
    return f"{type(exc).__name__}: {exc}"


def open_session(partner: PartnerConfig, credentials: SftpCredentials,
                 settings: ConnectionSettings = ConnectionSettings()) -> SftpSession:
    """Connect, verify the host key against the pinned ones, authenticate, open the SFTP channel."""
    client = paramiko.SSHClient()
    pinned = pinned_host_keys(partner)
    for name, entry in pinned.items():
        for key_type, key in entry.items():
            client.get_host_keys().add(name, key_type, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    where = f"{partner.host}:{partner.port}"
    try:
        client.connect(
            partner.host,
            port=partner.port,
            username=partner.username,
            password=credentials.password,
            pkey=credentials.private_key,
            timeout=settings.connect_timeout,
            banner_timeout=settings.banner_timeout,
            auth_timeout=settings.auth_timeout,
            channel_timeout=settings.channel_timeout,
            allow_agent=False,
            look_for_keys=False,
            transport_factory=_transport_factory([k.split()[0] for k in partner.host_keys]),
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        offered = exc.key
        raise HostKeyError(
            f"{where} offered host key {describe_key(offered)}, which is not pinned "
            f"(pinned: {', '.join(describe_key(k) for e in pinned.values() for k in e.values())})",
            partner=partner.name,
            action=("do not connect until the partner confirms this fingerprint out of band; if they rotated "
                    f"their key, pin it in host_keys: '{offered.get_name()} {offered.get_base64()}'"),
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise AuthenticationError(
            f"{where} refused user '{partner.username}' with the {credentials.description} "
            f"from secret '{partner.secret_id}'",
            partner=partner.name,
            action=f"check the username and update secret '{partner.secret_id}' with the partner's current credentials",
        ) from None
    except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        raise ConnectionFailedError(
            f"could not open SSH to {where}: {_connect_cause(exc, settings)}",
            partner=partner.name,
            action="check host and port, that the partner's server is up, and that it allowlists our egress IP",
        ) from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(settings.keepalive_seconds)
    try:
        sftp = SharedSFTPClient.from_transport(
            transport, window_size=channel_window(settings, partner), max_packet_size=settings.max_packet_size)
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise ConnectionFailedError(
            f"{where} accepted SSH but not the SFTP subsystem: {exc}", partner=partner.name,
            action="ask the partner to enable SFTP for this user") from None
    if sftp is None:
        client.close()
        raise ConnectionFailedError(f"{where} refused the SFTP channel", partner=partner.name,
                                    action="ask the partner to enable SFTP for this user")
    channel = sftp.get_channel()
    channel.settimeout(settings.channel_timeout)
    channel_buffer.install(channel)
    return SftpSession(partner, client, sftp)
