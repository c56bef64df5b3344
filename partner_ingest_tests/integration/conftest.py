"""Fixtures: a real sshd (and a ProFTPD mod_sftp on request), moto over HTTP, and partners wired to them."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from partner_ingest.config import IngestConfig, LandingConfig, PartnerConfig
from partner_ingest_tests.harness.misbehaving_sftp import misbehaving_partner  # noqa: F401  (a fixture, by name)
from partner_ingest_tests.harness.moto_server import MotoServer, start_moto
from partner_ingest_tests.harness.proftpd import Proftpd, start_proftpd
from partner_ingest_tests.harness.sshd import KEY_USER, PASSWORD_USER, Sshd, make_tree_dir, start_sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    server = start_sshd()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def proftpd() -> Iterator[Proftpd]:
    server = start_proftpd()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = start_moto()
    saved = {k: os.environ.get(k) for k in (*server.env(), "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE")}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
        os.environ.pop(name, None)
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3(moto: MotoServer):
    return boto3.client("s3")


@pytest.fixture
def secretsmanager(moto: MotoServer):
    return boto3.client("secretsmanager")


@pytest.fixture
def bucket(s3) -> str:
    name = f"landing-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@dataclass
class PartnerRig:
    """A partner config pointing at a fresh directory on the test sshd, with its secret in moto."""

    partner: PartnerConfig
    tree: Path
    landing: LandingConfig

    @property
    def config(self) -> IngestConfig:
        return IngestConfig(landing=self.landing, partners=[self.partner])

    def write(self, relative_path: str, data: bytes, mtime: float | None = None) -> Path:
        """Write a file as the partner would; directories belong to the SFTP user, like its own tree."""
        path = self.tree / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = self.tree.stat()
        for parent in [p for p in path.parents if self.tree in p.parents or p == self.tree]:
            parent.chmod(0o755)
            os.chown(parent, owner.st_uid, owner.st_gid)
        path.write_bytes(data)
        path.chmod(0o644)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path


@pytest.fixture
def make_partner(request, sshd: Sshd, moto: MotoServer, secretsmanager, bucket: str) -> Callable[..., PartnerRig]:
    """``server="proftpd"`` points the partner at the ProFTPD fixture (password login only); the tree
    is always made under the sshd workdir, at a path both servers serve."""
    counter = iter(range(1, 1000))

    def factory(name: str | None = None, *, auth: str = "password", secret: dict | None = None,
                host_keys: list[str] | None = None, port: int | None = None, server: str = "sshd",
                **overrides) -> PartnerRig:
        name = name or f"partner{next(counter)}"
        tree = make_tree_dir(sshd, name)
        served: Sshd | Proftpd = sshd
        username = PASSWORD_USER if auth == "password" else KEY_USER
        if server == "proftpd":
            if auth != "password":
                raise ValueError("the ProFTPD fixture has password logins only")
            served = request.getfixturevalue("proftpd")
            username = served.username
        elif server != "sshd":
            raise ValueError(f"unknown test server {server!r}")
        if secret is None:
            if auth == "password":
                secret = {"password": served.password}
            else:
                key = sshd.client_keys[auth]
                secret = {"private_key": key.private_pem, **({"passphrase": key.passphrase} if key.passphrase else {})}
        secret_id = f"partner-ingest/{name}-{secrets.token_hex(4)}"
        secretsmanager.create_secret(Name=secret_id, SecretString=json.dumps(secret))
        fields = {
            "name": name,
            "host": "127.0.0.1",
            "port": port or served.port,
            "username": username,
            "secret_id": secret_id,
            "host_keys": host_keys or [served.host_key_lines["ed25519"]],
            "remote_dir": str(tree),
            "landing_prefix": f"partners/{name}",
            **overrides,
        }
        return PartnerRig(partner=PartnerConfig(**fields), tree=tree, landing=LandingConfig(bucket=bucket))

    return factory
