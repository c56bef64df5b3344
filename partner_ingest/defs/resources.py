"""Dagster resources: the SFTP connector (credentials via dagster-aws Secrets Manager) and S3.

Run config is user input: anyone who can launch a run can fill in the launchpad. So none of these
resources has a run-config field. Each is a ``ResourceDefinition`` whose config schema is an empty
``Shape``, against which Dagster rejects any field before the run starts (not ``config_schema=None``:
Dagster turns that into an optional ``Any`` field that accepts whatever a run sends). Endpoints,
regions and credentials come from the code location's environment through boto3's standard resolution
(``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, the task role), so the same code talks to AWS, to moto in
tests and to the demo; the bucket and partners come from partners.yaml; SFTP settings from code.

Dagster's convention is a ``ConfigurableResource`` with described fields, ``EnvVar`` for values from
the environment. Both are left out on purpose. A field, even one set to an ``EnvVar``, is part of the
run config schema, so a launched run could override it (redirect an endpoint, weaken a timeout); an
``EnvVar`` only exists as such a field's value. Nothing here reads an environment variable anyway:
boto3 resolves its own inside the process. What the UI would show as field descriptions is in each
``ResourceDefinition``'s description instead: what the resource is, where its values come from, and
the SFTP settings with their values and meaning (from ``ConnectionSettings`` / ``ReconnectPolicy``).
"""


from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from dagster import ResourceDefinition
from dagster_aws.s3 import S3Resource
from dagster_aws.s3.utils import disable_signing
from dagster_aws.secretsmanager import SecretsManagerResource
from dagster_aws.utils import construct_boto_client_retry_config

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import SecretError
from partner_ingest.s3.errors import error_code
from partner_ingest.sftp.connection import (
    ConnectionSettings,
    SftpSession,
    describe_settings,
    open_session,
    setting_keywords,
    with_keywords,
)
from partner_ingest.sftp.credentials import SftpCredentials, credentials_from_secret
from partner_ingest.sftp.link import PartnerLink, ReconnectPolicy

NO_RUN_CONFIG: dict = {}
"""The config schema of every resource here: an empty Shape, so a run naming any field fails validation."""
_RECONNECT = "reconnect_"  # SftpResource's keywords for ReconnectPolicy: reconnect_attempts, ...


def environment_only(value: object, description: str) -> ResourceDefinition:
    """``value`` as a resource that takes no run config; it is built once, from code and environment."""
    return ResourceDefinition(resource_fn=lambda _context: value, config_schema=NO_RUN_CONFIG,
                              description=description)


class SftpResource(ResourceDefinition):
    """Opens SFTP sessions to partners with pinned host keys and credentials from Secrets Manager.

    Its own resource definition (value: itself) with no run-config schema: tests and tools choose
    timeouts and reconnects in code, a launched run cannot. The settings are declared once, as
    :class:`ConnectionSettings` and :class:`ReconnectPolicy`; pass them whole (``connection=``,
    ``reconnect=``) or one by one as keywords named with their unit (``connect_timeout_seconds=3``,
    ``window_size_bytes=...``, ``reconnect_attempts=0``, ``reconnect_backoff_seconds=0.1``), which are
    derived from those fields. ``secrets`` is used as a client factory only; it is never a resource of
    the job, so no run can configure it.
    """

    def __init__(self, secrets: SecretsManagerResource, *, connection: ConnectionSettings = ConnectionSettings(),
                 reconnect: ReconnectPolicy = ReconnectPolicy(), **settings: float) -> None:
        known = [*setting_keywords(ConnectionSettings), *setting_keywords(ReconnectPolicy, _RECONNECT)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise TypeError(f"SftpResource has no setting {', '.join(unknown)}; it takes {', '.join(known)}")
        self.secrets = secrets
        self.connection = with_keywords(connection, settings)
        self.reconnect = with_keywords(reconnect, settings, _RECONNECT)
        super().__init__(resource_fn=lambda _context: self, config_schema=NO_RUN_CONFIG,
                         description="SFTP sessions to partners: host keys from partners.yaml, credentials from "
                                     "Secrets Manager via the environment. Takes no run config; set in code: "
                                     f"{describe_settings(self.connection)}; "
                                     f"{describe_settings(self.reconnect, _RECONNECT)}.")

    @property
    def reconnect_attempts(self) -> int:
        return self.reconnect.attempts

    def settings(self) -> ConnectionSettings:
        return self.connection

    def credentials(self, partner: PartnerConfig) -> SftpCredentials:
        try:
            response = self.secrets.get_client().get_secret_value(SecretId=partner.secret_id)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                raise SecretError(f"secret '{partner.secret_id}' does not exist", partner=partner.name,
                                  action="create it in Secrets Manager (same account and region) or fix secret_id"
                                  ) from None
            raise SecretError(f"could not read secret '{partner.secret_id}' ({code})", partner=partner.name,
                              action="grant secretsmanager:GetSecretValue (and kms:Decrypt) to the run role"
                              ) from None
        except BotoCoreError as exc:
            raise SecretError(f"could not reach Secrets Manager for '{partner.secret_id}': {exc}",
                              partner=partner.name, action="check AWS_ENDPOINT_URL / network and retry") from None
        return credentials_from_secret(partner.name, partner.secret_id, response.get("SecretString"))

    def open(self, partner: PartnerConfig) -> SftpSession:
        return open_session(partner, self.credentials(partner), self.connection)

    def link(self, partner: PartnerConfig) -> PartnerLink:
        """A session that reconnects (bounded, with backoff) when the network drops it mid-run."""
        credentials = self.credentials(partner)
        return PartnerLink(lambda: open_session(partner, credentials, self.connection), self.reconnect)


S3_POOL_CONNECTIONS = 64
"""HTTP connections the run's S3 client keeps: a run has up to ``max_connections x files_per_connection`` files
(32 by default) calling S3 at once, plus boto3's part threads. botocore keeps 10; beyond that every request
opens a new connection (a TLS handshake against real S3) and urllib3 warns "Connection pool is full"."""


class LandingS3Resource(S3Resource):
    """dagster-aws's ``S3Resource``, its client with a connection pool for the run's parallel files.

    ``S3Resource`` has no setting for botocore's ``max_pool_connections``, so ``get_client`` builds the
    client as dagster-aws's ``construct_s3_client`` does (same session, endpoint and retry configuration)
    with the pool merged into that configuration.
    """

    def get_client(self) -> Any:
        session = boto3.session.Session(profile_name=self.profile_name)
        config = construct_boto_client_retry_config(self.max_attempts).merge(
            Config(max_pool_connections=S3_POOL_CONNECTIONS))
        client = session.client("s3", region_name=self.region_name, use_ssl=self.use_ssl, verify=self.verify,
                                endpoint_url=self.endpoint_url, aws_access_key_id=self.aws_access_key_id,
                                aws_secret_access_key=self.aws_secret_access_key,
                                aws_session_token=self.aws_session_token, config=config)
        if self.use_unsigned_session:
            client.meta.events.register("choose-signer.s3.*", disable_signing)
        return client


def default_resources() -> dict[str, ResourceDefinition]:
    """The code location's resources: both built from the environment, neither configurable by a run."""
    # dagster-aws configures botocore's "standard" retry mode; 5 attempts ride out throttling and 5xx.
    s3 = environment_only(LandingS3Resource(max_attempts=5),
                          "S3 client from the environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, the task role), "
                          f"{S3_POOL_CONNECTIONS} pooled connections. Takes no run config.")
    return {"sftp": SftpResource(secrets=SecretsManagerResource()), "s3": s3}
