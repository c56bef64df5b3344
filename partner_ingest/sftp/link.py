"""The current SFTP session to one partner, and how to replace it when the link drops.

A run moves many files over one session, several at a time from several threads (the session's
client is a ``SharedSFTPClient``); when the network drops it mid-file, the transfer asks for a new
session (bounded retries with exponential backoff) and carries on. Every thread on the dropped session
sees the drop; the first to ask replaces it and the others, naming the session that failed them, get
that replacement instead of dropping it again. Refusals that another attempt cannot fix (host key,
credentials, secret) are raised at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
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
        self._lock = threading.RLock()  # one thread connects or replaces the session; the others wait for it
        self.reconnects = 0
        self._gave_up: tuple[SftpSession | None, ConnectionFailedError] | None = None  # (session, why) last given up

    @property
    def session(self) -> SftpSession:
        session = self._session
        if session is not None:
            return session
        with self._lock:
            if self._session is None:
                if self._gave_up is not None:
                    # Reconnecting already failed for this link: the run's other files fail at once with that
                    # error instead of each waiting through a connect timeout of its own.
                    raise self._gave_up[1]
                self._session = self._connect()
            return self._session

    @property
    def retries(self) -> int:
        return self._retries

    def reconnect(self, reason: str, failed: SftpSession | None = None) -> SftpSession:
        """Drop the current session and open a new one, waiting longer after each failed attempt.

        ``failed`` is the session the caller saw fail: if another thread has replaced it already, that
        replacement is returned as it is.
        """
        with self._lock:
            if failed is not None and self._session is not None and self._session is not failed:
                return self._session
            if failed is not None and self._gave_up is not None and self._gave_up[0] is failed:
                raise self._gave_up[1]  # the others on that session do not wait through the same attempts again
            return self._replace(reason)

    def _replace(self, reason: str) -> SftpSession:
        replaced = self._session
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
        error = ConnectionFailedError(
            f"{last.problem} (gave up after {self._retries} reconnects; first cause: {reason})",
            partner=last.partner, action=last.action)
        self._gave_up = (replaced, error)
        raise error

    def _discard(self) -> None:
        if self._session is not None:
            # The link is already broken; closing what is left of it is best effort.
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None

    def close(self) -> None:
        with self._lock:
            self._discard()

    def __enter__(self) -> PartnerLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
