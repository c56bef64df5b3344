"""An embedded S3 and Secrets Manager for the demo: moto's threaded server on a loopback port.

Everything lives in memory, so the bucket and the secret are created on every start and vanish on
stop. The clients made here, and the environment built for ``dagster dev``, ignore the user's AWS
profile, config files, endpoint overrides and proxy settings, so the demo can never reach (or be
billed by) a real AWS account. moto itself runs in this process and builds boto3 sessions from
``os.environ``, so starting it also drops the AWS profile variables from this process's environment.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore.config import Config
from moto.server import ThreadedMotoServer

DEMO_ACCESS_KEY_ID = "demo"
DEMO_SECRET_ACCESS_KEY = "demo"  # noqa: S105 - moto accepts any key; nothing real is protected by it
DEMO_REGION = "us-east-1"

# werkzeug logs every request at INFO (and adds its own stderr handler unless a level is set).
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def demo_aws_environment(base: Mapping[str, str], endpoint_url: str, region: str = DEMO_REGION) -> dict[str, str]:
    """``base`` without any ``AWS_*`` variable, plus what points boto3 at the demo endpoint.

    Dropping every inherited ``AWS_*`` variable (profile, session token, ``AWS_ENDPOINT_URL_S3`` and
    the like, which would override ``AWS_ENDPOINT_URL``) and the user's AWS files keeps the child's
    boto3 on the demo endpoint whatever the user's shell holds.
    """
    env = {name: value for name, value in base.items() if not name.startswith("AWS_")}
    env.update({
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DEMO_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    host = urlsplit(endpoint_url).hostname or "127.0.0.1"
    for name in ("NO_PROXY", "no_proxy"):
        entries = [e for e in env.get(name, "").split(",") if e.strip()]
        env[name] = ",".join(dict.fromkeys([*entries, host, "127.0.0.1", "localhost"]))
    return env


def _isolate_this_process() -> None:
    """moto's server builds boto3 sessions in this process; a profile or config of the user's must not apply.

    A missing ``AWS_PROFILE`` makes moto answer every request with a 500 (ProfileNotFound).
    """
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def isolated_client(service: str, endpoint_url: str, region: str = DEMO_REGION) -> Any:
    """A boto3 client for the demo endpoint with fixed dummy credentials and no profile or proxy."""
    core = botocore.session.Session(session_vars={
        "profile": (None, None, None, None),  # ignore AWS_PROFILE / AWS_DEFAULT_PROFILE
        "config_file": (None, None, os.devnull, None),
        "credentials_file": (None, None, os.devnull, None),
    })
    session = boto3.session.Session(aws_access_key_id=DEMO_ACCESS_KEY_ID,
                                    aws_secret_access_key=DEMO_SECRET_ACCESS_KEY,
                                    region_name=region, botocore_session=core)
    return session.client(service, endpoint_url=endpoint_url,
                          config=Config(proxies={}, retries={"max_attempts": 2, "mode": "standard"}))


class DemoObjectStore:
    """moto's server on ``host`` and a free port; use as a context manager or ``start``/``stop``."""

    def __init__(self, host: str = "127.0.0.1", region: str = DEMO_REGION) -> None:
        self._host = host
        self._region = region
        self._server: ThreadedMotoServer | None = None
        self._endpoint_url: str | None = None

    def __enter__(self) -> DemoObjectStore:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("the demo object store is not running; call start() first")
        return self._endpoint_url

    @property
    def region(self) -> str:
        return self._region

    def start(self) -> str:
        """Start the server and return its endpoint URL (``http://host:port``); see the module note on os.environ."""
        if self._endpoint_url is not None:
            return self._endpoint_url
        _isolate_this_process()
        # Port 0: the OS picks a free port and the server reports it, so there is no probe-then-bind race.
        server = ThreadedMotoServer(ip_address=self._host, port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self._endpoint_url = f"http://{host}:{port}"
        return self._endpoint_url

    def stop(self) -> None:
        """Stop the server; its buckets and secrets are gone afterwards. Safe to call twice."""
        server, self._server, self._endpoint_url = self._server, None, None
        if server is not None:
            server.stop()

    def client(self, service: str) -> Any:
        return isolated_client(service, self.endpoint_url, self._region)

    def create_bucket(self, bucket: str, *, versioned: bool = True) -> None:
        s3 = self.client("s3")
        if self._region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self._region})
        if versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def put_password_secret(self, secret_id: str, password: str) -> None:
        """Store ``{"password": ...}`` as the secret's SecretString, the shape the ingest code reads."""
        self.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps({"password": password}))
