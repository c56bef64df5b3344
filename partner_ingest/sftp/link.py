"""The current SFTP session to one partner, and how to replace it when the link drops.

A run moves many files over one session; when the network drops it mid-file, the transfer asks
for a new session (bounded retries with exponential backoff) and carries on. Refusals that another
attempt cannot fix (host key, credentials, secret) are raised at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from partner_ingest.errors import ConnectionFailedError
from partner_ingest.sftp.connection import SftpSession, setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How often, and how patiently, a dropped session is replaced (``SftpResource`` takes these as
    ``reconnect_attempts`` etc.)."""

    attempts: int = setting(5, "", "new sessions tried after a drop before the file fails")
    backoff_seconds: float = setting(1.0, "seconds", "wait before the first attempt, doubled after each failure")
    max_backoff_seconds: float = setting(30.0, "seconds", "longest wait between attempts")


class PartnerLink:
    def __init__(self, connect: Callable[[], SftpSession], policy: ReconnectPolicy = ReconnectPolicy(), *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._connect = connect
        self._retries = policy.attempts
        self._backoff = policy.backoff_seconds
        self._max_backoff = policy.max_backoff_seconds
        self._sleep = sleep
        self._session: SftpSession | None = None
        self.reconnects = 0

    @property
    def session(self) -> SftpSession:
        if self._session is None:
            self._session = self._connect()
        return self._session

    @property
    def retries(self) -> int:
        return self._retries

    def reconnect(self, reason: str) -> SftpSession:
        """Drop the current session and open a new one, waiting longer after each failed attempt."""
        self._discard()
        delay = self._backoff
        last: ConnectionFailedError | None = None
        for attempt in range(1, self._retries + 1):
            self._sleep(delay)
            try:
                self._session = self._connect()
            except ConnectionFailedError as exc:
                last = exc
                log.warning("reconnect attempt %d/%d failed: %s", attempt, self._retries, exc)
                delay = min(delay * 2, self._max_backoff)
                continue
            self.reconnects += 1
            log.info("reconnected after: %s", reason)
            return self._session
        assert last is not None
        raise ConnectionFailedError(f"{last.problem} (gave up after {self._retries} reconnects; first cause: {reason})",
                                    partner=last.partner, action=last.action)

    def _discard(self) -> None:
        if self._session is not None:
            # The link is already broken; closing what is left of it is best effort.
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None

    def close(self) -> None:
        self._discard()

    def __enter__(self) -> PartnerLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
