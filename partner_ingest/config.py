"""partners.yaml: the pydantic models and the loader.

Validation happens once, at code-location load, so a typo never surfaces as a failed 3 a.m. run.
Errors are re-worded to name the partner (by ``name`` when it is readable) and the dotted field.
"""

from __future__ import annotations

import os
import posixpath
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from partner_ingest.errors import ConfigError
from partner_ingest.sftp.host_keys import check_openssh_key_line

CONFIG_ENV = "PARTNER_INGEST_CONFIG"
BUCKET_ENV = "PARTNER_INGEST_BUCKET"
DEFAULT_CONFIG_FILE = "partners.yaml"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSettings(_Strict):
    """How often the partner's sensor lists the remote tree, and whether it starts running."""

    interval_seconds: Annotated[int, Field(ge=10, le=86_400)] = 300
    running: bool = False


class StabilityRule(_Strict):
    """When a remote file counts as complete.

    ``min_age_seconds``: size and mtime unchanged across two listings at least that far apart
    (mtime age alone is not enough: partners upload with preserved timestamps).
    ``done_marker``: a suffix; ``x.csv`` is complete once ``x.csv<suffix>`` exists.
    """

    min_age_seconds: Annotated[int, Field(ge=0, le=86_400)] = 60
    done_marker: Annotated[str, Field(min_length=1, pattern=r"^[^/]+$")] | None = None


class RunLimits(_Strict):
    """Caps on one run, so a busy partner gets a few batched runs rather than one per file."""

    max_files_per_run: Annotated[int, Field(ge=1, le=10_000)] = 500
    max_bytes_per_run: Annotated[int, Field(ge=1)] = 20 * 1024**3
    max_partitions_per_tick: Annotated[int, Field(ge=1, le=10_000)] = 2_000
    # Parallel SFTP sessions per run: small files are latency-bound. Partners often cap sessions per login.
    max_connections: Annotated[int, Field(ge=1, le=16)] = 4
    # Files moving at once over each of those sessions: a small file costs five round trips whatever its size,
    # so one session carries several files' requests at a time (replies come back by request number). Bytes
    # held stay within read_in_flight_bytes per session however many share it; a large file moves alone.
    files_per_connection: Annotated[int, Field(ge=1, le=64)] = 8
    # Read requests in flight per session, in bytes: one connection moves at most this much per round trip,
    # so a far partner needs its bandwidth-delay product (100 MiB/s at 100 ms is 10 MiB). Memory: the
    # server sends only what was requested, and the files sharing a session hold at most this much between
    # them (the SSH channel window is twice it, headroom only). Measured at 100 ms RTT: 8 MiB 67,
    # 16 MiB 116, 32 MiB 160-170, 64 MiB 185 MiB/s; OpenSSH sftp 18 (benchmarks/throughput.py).
    read_in_flight_bytes: Annotated[int, Field(ge=256 * 1024, le=256 * 1024**2)] = 32 * 1024**2
    # Content identity (change_detection: content, or a server without mtimes): bytes of already landed
    # files the sensor re-reads per tick to compare digests; the rest wait for later ticks, in rotation.
    max_content_check_bytes_per_tick: Annotated[int, Field(ge=1)] = 1024**3


class ArchiveLimits(_Strict):
    """Hard limits for expanding a partner's zip archives; anything beyond them is refused."""

    max_entries: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_total_bytes: Annotated[int, Field(ge=1)] = 10 * 1024**3
    max_ratio: Annotated[int, Field(ge=1, le=10_000)] = 200
    max_depth: Annotated[int, Field(ge=1, le=5)] = 2


class SourceChecksums(_Strict):
    """Where the partner publishes the digest of each file, so "verified" means equal to the partner's file.

    ``sidecar``: a suffix; ``x.csv`` is checked against ``x.csv<suffix>`` (``<hex>`` or the
    ``sha256sum`` line ``<hex>  x.csv``). ``manifest``: a file name looked up in each file's
    directory, in ``sha256sum``/``md5sum`` format (``<hex>  <name>`` per line, ``*`` binary marker
    allowed). The digest is read before the transfer; a mismatch aborts the upload. ``required``: a
    file without a published digest waits for it (the sensor) and is refused (a run); when false it
    lands unverified against the partner (``verified_against: none``).
    """

    sidecar: Annotated[str, Field(pattern=r"^\.[A-Za-z0-9._-]{1,32}$")] | None = None
    manifest: Annotated[str, Field(pattern=r"^[^/\\\x00-\x1f]{1,255}$")] | None = None
    algorithm: Literal["sha256", "sha512", "sha1", "md5"] = "sha256"
    required: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> SourceChecksums:
        if (self.sidecar is None) == (self.manifest is None):
            raise ValueError("set exactly one of 'sidecar' (a suffix such as '.sha256') or 'manifest' (a file name)")
        return self


class PartnerConfig(_Strict):
    """One partner's SFTP server and what to take from it."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65_535)] = 22
    username: Annotated[str, Field(min_length=1)]
    secret_id: Annotated[str, Field(min_length=1)]
    host_keys: Annotated[list[str], Field(min_length=1)]
    remote_dir: Annotated[str, Field(min_length=1)]
    include: list[str] = Field(default_factory=lambda: ["**"])
    exclude: list[str] = Field(default_factory=list)
    recursive: bool = True
    landing_prefix: Annotated[str, Field(min_length=1)]
    stability: StabilityRule = StabilityRule()
    sensor: SensorSettings = SensorSettings()
    limits: RunLimits = RunLimits()
    expect_every: Annotated[str, Field(pattern=r"^[1-9][0-9]*[smhd]$")] | None = None
    unzip: bool = False
    unzip_limits: ArchiveLimits = ArchiveLimits()
    after_landing: Literal["leave", "delete", "move"] = "leave"
    archive_dir: str | None = None
    change_detection: Literal["metadata", "content"] = "metadata"
    source_checksums: SourceChecksums | None = None

    @field_validator("host_keys")
    @classmethod
    def _host_keys_are_openssh_lines(cls, lines: list[str]) -> list[str]:
        for line in lines:
            check_openssh_key_line(line, hint="copy it from `ssh-keyscan -p PORT HOST`")
        return lines

    @field_validator("landing_prefix")
    @classmethod
    def _prefix_is_relative_and_clean(cls, prefix: str) -> str:
        stripped = prefix.strip("/")
        if not stripped or any(seg in ("", ".", "..") for seg in stripped.split("/")):
            raise ValueError(f"'{prefix}' must be a relative S3 prefix without empty, '.' or '..' segments")
        return stripped + "/"

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir_is_normalized(cls, remote_dir: str) -> str:
        normalized = posixpath.normpath(remote_dir)
        if ".." in normalized.split("/"):
            raise ValueError(f"'{remote_dir}' must not contain '..'")
        return normalized

    @field_validator("expect_every")
    @classmethod
    def _expect_every_at_least_a_minute(cls, value: str | None) -> str | None:
        """Dagster's ``FreshnessPolicy.time_window`` refuses windows under a minute; say so at load."""
        if value and value.endswith("s") and int(value[:-1]) < 60:
            raise ValueError(f"'{value}' is shorter than Dagster's smallest freshness window (60s / 1m)")
        return value

    @property
    def expect_every_timedelta(self) -> timedelta | None:
        """``expect_every: 24h`` (units s, m, h, d) as a timedelta, for the asset's freshness policy."""
        if not self.expect_every:
            return None
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[self.expect_every[-1]]
        return timedelta(**{unit: int(self.expect_every[:-1])})

    @field_validator("archive_dir")
    @classmethod
    def _archive_dir_is_normalized(cls, archive_dir: str | None) -> str | None:
        if not archive_dir:
            return archive_dir
        normalized = posixpath.normpath(archive_dir)
        if not normalized.startswith("/") and (normalized == ".." or normalized.startswith("../")):
            raise ValueError(f"'{archive_dir}' leaves remote_dir; a relative archive_dir is resolved inside "
                             "remote_dir (write an absolute path for a directory elsewhere)")
        return normalized

    @property
    def archive_root(self) -> str | None:
        """``archive_dir`` as an absolute remote path: relative ones are resolved against ``remote_dir``,
        in the listing (which prunes it), and in the move (which writes into it) alike."""
        if not self.archive_dir:
            return None
        return posixpath.normpath(posixpath.join(self.remote_dir, self.archive_dir))

    @model_validator(mode="after")
    def _archive_dir_when_moving(self) -> PartnerConfig:
        if self.after_landing == "move" and not self.archive_dir:
            raise ValueError("after_landing: move needs archive_dir")
        if self.archive_root and self.archive_root == posixpath.normpath(self.remote_dir):
            raise ValueError("archive_dir must not be remote_dir itself")
        return self


class LandingConfig(_Strict):
    """The bucket partner files land in."""

    bucket: str

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, bucket: str) -> str:
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(f"'{bucket}' is not a valid S3 bucket name")
        return bucket


class IngestConfig(_Strict):
    """The whole partners.yaml."""

    landing: LandingConfig
    partners: list[PartnerConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names_and_prefixes(self) -> IngestConfig:
        seen: dict[str, str] = {}
        for partner in self.partners:
            if partner.name in seen:
                raise ValueError(f"partner name '{partner.name}' is used twice")
            seen[partner.name] = partner.landing_prefix
        prefixes = sorted(seen.items(), key=lambda item: item[1])
        for (a, pa), (b, pb) in zip(prefixes, prefixes[1:], strict=False):
            if pb.startswith(pa):
                raise ValueError(f"landing_prefix of '{b}' ({pb}) lies inside that of '{a}' ({pa})")
        return self

    def partner(self, name: str) -> PartnerConfig:
        for partner in self.partners:
            if partner.name == name:
                return partner
        raise ConfigError(f"no partner named '{name}' in partners.yaml", partner=name,
                          action="check the partner name or add it to partners.yaml")


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)


def load_config(path: Path | str | None = None) -> IngestConfig:
    """Read and validate partners.yaml; ``PARTNER_INGEST_BUCKET`` overrides ``landing.bucket``."""
    path = Path(path) if path is not None else config_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"partners config '{path}' does not exist",
            action=f"create it (see partners.example.yaml) or point {CONFIG_ENV} at it",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"partners config '{path}' is not valid YAML: {exc}",
                          action="fix the YAML syntax at the line shown") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, source: str = DEFAULT_CONFIG_FILE) -> IngestConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping with 'landing' and 'partners'",
                          action="see partners.example.yaml")
    raw = dict(raw)
    bucket = os.environ.get(BUCKET_ENV)
    if bucket:
        raw["landing"] = {**(raw.get("landing") or {}), "bucket": bucket}
    try:
        return IngestConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, source),
                          action=f"fix the fields named above in {source}") from None


def _describe(exc: ValidationError, raw: dict, source: str) -> str:
    """Turn pydantic's locations into 'partner <name>, field <a.b>' phrases."""
    problems = []
    partners = raw.get("partners") if isinstance(raw.get("partners"), list) else []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        where = ""
        if loc[:1] == ["partners"] and len(loc) > 1 and isinstance(loc[1], int):
            index = loc[1]
            entry = partners[index] if index < len(partners) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            where = f"partner '{name}'" if name else f"partner #{index + 1}"
            loc = loc[2:]
        field = ".".join(str(part) for part in loc)
        label = ", ".join(x for x in (where, f"field '{field}'" if field else "") if x)
        problems.append(f"{label or 'top level'}: {err['msg']}")
    return f"{source} is invalid: " + "; ".join(problems)
