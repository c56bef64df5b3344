"""Dagster resources: the SFTP connector (credentials via dagster-aws Secrets Manager) and S3.

Endpoints and regions come from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``), so the same code talks to AWS, to moto in tests and to the demo.
"""


from botocore.exceptions import BotoCoreError, ClientError
from dagster import ConfigurableResource, ResourceDependency
from dagster_aws.s3 import S3Resource
from dagster_aws.secretsmanager import SecretsManagerResource

from partner_ingest.config import PartnerConfig
from partner_ingest.errors import SecretError
from partner_ingest.sftp.connection import ConnectionSettings, SftpSession, open_session
from partner_ingest.sftp.credentials import SftpCredentials, credentials_from_secret
from partner_ingest.sftp.link import PartnerLink


class SftpResource(ConfigurableResource):
    """Opens SFTP sessions to partners with pinned host keys and credentials from Secrets Manager."""

    secrets: ResourceDependency[SecretsManagerResource]
    connect_timeout_seconds: float = 15.0
    banner_timeout_seconds: float = 15.0
    auth_timeout_seconds: float = 30.0
    channel_timeout_seconds: float = 30.0
    keepalive_seconds: int = 15
    window_size_bytes: int = 16 * 1024 * 1024
    reconnect_attempts: int = 5
    reconnect_backoff_seconds: float = 1.0

    def settings(self) -> ConnectionSettings:
        return ConnectionSettings(
            connect_timeout=self.connect_timeout_seconds,
            banner_timeout=self.banner_timeout_seconds,
            auth_timeout=self.auth_timeout_seconds,
            channel_timeout=self.channel_timeout_seconds,
            keepalive_seconds=self.keepalive_seconds,
            window_size=self.window_size_bytes,
        )

    def credentials(self, partner: PartnerConfig) -> SftpCredentials:
        try:
            response = self.secrets.get_client().get_secret_value(SecretId=partner.secret_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
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
        return open_session(partner, self.credentials(partner), self.settings())

    def link(self, partner: PartnerConfig) -> PartnerLink:
        """A session that reconnects (bounded, with backoff) when the network drops it mid-run."""
        credentials = self.credentials(partner)
        settings = self.settings()
        return PartnerLink(lambda: open_session(partner, credentials, settings), retries=self.reconnect_attempts,
                           backoff_seconds=self.reconnect_backoff_seconds)


def default_resources() -> dict[str, object]:
    secrets = SecretsManagerResource()
    # dagster-aws configures botocore's "standard" retry mode; 5 attempts ride out throttling and 5xx.
    return {"sftp": SftpResource(secrets=secrets), "s3": S3Resource(max_attempts=5)}
