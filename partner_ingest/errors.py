"""Typed errors a user can hit, each naming the partner, the file and what to do.

Every message is built here so that the wording stays consistent and so that no caller is tempted to
interpolate a secret: errors take names, paths and fingerprints, never credentials.
"""

from __future__ import annotations


class PartnerIngestError(Exception):
    """Base class: ``partner`` and ``path`` locate the problem, ``action`` says what to do."""

    def __init__(self, problem: str, *, partner: str | None = None, path: str | None = None,
                 action: str | None = None) -> None:
        self.problem = problem
        self.partner = partner
        self.path = path
        self.action = action
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.partner:
            where.append(f"partner '{self.partner}'")
        if self.path:
            where.append(f"file '{self.path}'")
        head = f"[{', '.join(where)}] " if where else ""
        tail = f" What to do: {self.action}" if self.action else ""
        return f"{head}{self.problem}.{tail}"

    def __reduce__(self):  # keep the keyword arguments across pickling (Dagster serializes errors)
        return (_rebuild, (type(self), self.problem, self.partner, self.path, self.action))


def _rebuild(cls, problem, partner, path, action):
    return cls(problem, partner=partner, path=path, action=action)


class ConfigError(PartnerIngestError):
    """partners.yaml is missing or invalid."""


class SecretError(PartnerIngestError):
    """The partner's Secrets Manager secret is missing, unreadable or lacks credentials."""


class HostKeyError(PartnerIngestError):
    """The SFTP server offered a host key that is not pinned for the partner."""


class AuthenticationError(PartnerIngestError):
    """The SFTP server refused the partner's credentials."""


class ConnectionFailedError(PartnerIngestError):
    """The SFTP server could not be reached or dropped the connection."""


class RemotePathError(PartnerIngestError):
    """A remote directory or file is missing or cannot be read."""


class RemoteFileChangedError(PartnerIngestError):
    """The remote file changed or vanished while it was being read; it is retried once stable."""


class LandingError(PartnerIngestError):
    """Writing to or verifying in the landing bucket failed."""


class PartitionKeyError(PartnerIngestError):
    """A partition key is not one this code location produced."""


class AfterLandingError(PartnerIngestError):
    """The file landed, but deleting or moving it on the partner's server failed."""


class ArchiveRejectedError(PartnerIngestError):
    """A landed archive was not expanded because it breaks a safety rule or limit."""


class ServerMisbehavedError(PartnerIngestError):
    """The partner's SFTP server answered outside the protocol, or without what verification needs."""


class SourceChecksumError(PartnerIngestError):
    """The digest the partner published for a file is missing, unreadable, or differs from its bytes."""
