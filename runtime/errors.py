"""The one error hierarchy of the runtime and its connectors.

Every failure the runtime reports is a :class:`FlintError`; each class carries the exit-code of
SPEC section 3, so turning an exception into an envelope happens in exactly one place
(:func:`runtime.envelope.failure_meta`). Lower-level errors (socket, ssl, smtplib, imaplib, redis)
are translated at the connector or queue boundary, most specific first, chained with ``from exc``.

    FlintError                      -8  internal error (the default)
    ├── RemoteRefused               -1  the remote side refused the request
    ├── InvalidRequest              -2  invalid request or input
    │   └── ConfigError             -2  a configuration file is wrong (names file and key)
    ├── NotFound                    -3  flintbit, connector, job, message, file not found
    ├── ConnectFailed               -4  refused, DNS, TLS handshake, STARTTLS not offered
    ├── AuthFailed                  -5  authentication failed
    ├── TimedOut                    -6  timed out; the job was aborted
    ├── LimitExceeded               -7  a size, count or memory limit was exceeded
    ├── InternalError               -8  an internal error
    │   └── WorkerLost              -8  the worker running the job was lost
    ├── Forbidden                   -9  forbidden (path outside roots, role not allowed)
    └── QueueUnavailable            -8  Redis could not be reached (HTTP 503)

Messages name the field, file or host at fault and never contain a secret.
"""

from __future__ import annotations

__all__ = [
    "FlintError",
    "RemoteRefused",
    "InvalidRequest",
    "ConfigError",
    "NotFound",
    "ConnectFailed",
    "AuthFailed",
    "TimedOut",
    "LimitExceeded",
    "InternalError",
    "WorkerLost",
    "Forbidden",
    "QueueUnavailable",
    "TransientFailure",
]


class FlintError(Exception):
    """Root of every error the runtime reports; ``exit_code`` is the SPEC exit-code."""

    exit_code: int = -8

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RemoteRefused(FlintError):
    """The remote side refused the request (an SMTP 5xx, an IMAP NO)."""

    exit_code = -1


class TransientFailure(RemoteRefused):
    """The remote side refused for now (SMTP 4xx); callers may retry with backoff."""


class InvalidRequest(FlintError):
    """The request or its input is invalid: a missing or unknown key, a bad address, CR/LF."""

    exit_code = -2


class ConfigError(InvalidRequest):
    """A configuration file is wrong; the message names the file, the key and the reason."""


class NotFound(FlintError):
    """A flintbit, connector, job, message or file does not exist."""

    exit_code = -3


class ConnectFailed(FlintError):
    """Could not connect: refused, DNS, TLS handshake, STARTTLS not offered."""

    exit_code = -4


class AuthFailed(FlintError):
    """The server rejected the credentials."""

    exit_code = -5


class TimedOut(FlintError):
    """The job or request ran past its timeout and was aborted."""

    exit_code = -6


class LimitExceeded(FlintError):
    """A size, count or memory limit was exceeded."""

    exit_code = -7


class InternalError(FlintError):
    """A failure inside the runtime itself."""

    exit_code = -8


class WorkerLost(InternalError):
    """The worker running the job died or stopped answering."""


class Forbidden(FlintError):
    """The request is not allowed: a path outside the allowed roots, a role without the right."""

    exit_code = -9


class QueueUnavailable(InternalError):
    """Redis could not be reached; the API answers 503."""
