"""When a failed SMTP transaction is tried again, and when it must never be.

The rule (it is also in the README's smtp section):

- **Retried**, on a fresh connection, when the server cannot have accepted the message: it
  answered 4xx (``421`` greeting or any command, ``451``, ``452``, a ``4xx`` to AUTH, RCPT, DATA
  or to the message itself), or the connection was closed or reset after it was opened and
  before the message's final ``.`` was sent in full (a reset mid-DATA included), or -- on a
  retry only -- the server refused the connection.
- **Never retried**: a 5xx (permanent, -1), authentication (-5), TLS and certificate errors,
  a server that cannot be reached at all on the first attempt (-4: configuration or outage,
  not a fault mid-transaction), limits (-7), timeouts (-6), and everything after the final
  ``.`` was sent. A ``250`` there is success; a connection lost or a timeout while waiting
  for that reply means the server *may have accepted the message*: the request fails (-4 or
  -6) saying so, and the message is not sent again (a duplicate is worse than a question).
- Waits grow from ``retry-backoff`` ms, doubling, capped at :data:`MAX_BACKOFF_MS`; at most
  ``retries`` retries; and never past the request's timeout: a retry is made only when its wait
  plus another attempt as long as the last one (and at least :data:`MIN_ATTEMPT_S`) still fit
  before the deadline. The final failure keeps the last error's exit-code (-1 refused, -4
  unreachable) and says how many attempts were made.

>>> policy = RetryPolicy.from_settings({"retries": 3, "retry-backoff": 500})
>>> policy.attempts, [policy.delay_s(n) for n in (1, 2, 3)]
(4, [0.5, 1.0, 2.0])
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from typing import Any, Mapping

from connectors.smtp.session import Progress
from runtime.errors import ConnectFailed, FlintError, TransientFailure

__all__ = ["RetryPolicy", "is_retryable", "MAX_BACKOFF_MS", "MIN_ATTEMPT_S", "DEFAULT_RETRIES",
           "DEFAULT_RETRY_BACKOFF_MS"]

DEFAULT_RETRIES = 3
DEFAULT_RETRY_BACKOFF_MS = 500
MAX_BACKOFF_MS = 30000
# A retry with less than this (or than the last attempt took) left before the deadline is not
# started: it could only end in a timeout and hide the server's own answer.
MIN_ATTEMPT_S = 0.25

# Causes that mean "the connection went away", as opposed to "could not be made" or TLS trouble.
_DROPPED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError, smtplib.SMTPServerDisconnected)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``retries`` more attempts, waits from ``backoff_ms``."""

    retries: int = DEFAULT_RETRIES
    backoff_ms: int = DEFAULT_RETRY_BACKOFF_MS

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "RetryPolicy":
        """Read ``retries`` and ``retry-backoff`` (ms) from the connector config."""
        return cls(int(settings.get("retries", DEFAULT_RETRIES)),
                   int(settings.get("retry-backoff", DEFAULT_RETRY_BACKOFF_MS)))

    @property
    def attempts(self) -> int:
        """The most attempts a transaction gets: the first and its retries."""
        return 1 + max(self.retries, 0)

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.backoff_ms * 2 ** (attempt - 1), MAX_BACKOFF_MS) / 1000.0


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_retryable(error: FlintError, progress: Progress, attempt: int) -> bool:
    """True when ``error`` ended attempt ``attempt`` at a point where retrying cannot duplicate.

    >>> is_retryable(TransientFailure("SMTP 451 4.3.0 later"), Progress(), 1)
    True
    >>> is_retryable(TransientFailure("SMTP 451 4.3.0 later"), Progress(data_sent=True), 1)
    True
    >>> is_retryable(ConnectFailed("connection to h:25 closed by the server"), Progress(data_sent=True), 1)
    False
    """
    if isinstance(error, TransientFailure):
        return True  # a 4xx reply: the server said "not now", whatever the step, and kept nothing
    if progress.data_sent or not isinstance(error, ConnectFailed):
        return False
    causes = _causes(error)
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes):
        return False
    if any(isinstance(cause, _DROPPED) for cause in causes):
        return True
    return attempt > 1 and any(isinstance(cause, ConnectionRefusedError) for cause in causes)
