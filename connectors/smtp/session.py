"""One SMTP transaction with :mod:`smtplib`, and the translation of its errors at this boundary.

:func:`open_session` connects, secures (``tls``: implicit TLS; ``starttls``: required, never a
fallback to plain text) and authenticates. :func:`transfer` runs MAIL FROM, one RCPT TO per
recipient (so each refusal is known by address) and DATA, and records in a :class:`Progress`
how far it got: whether the final ``.`` of the message was sent in full. That is the line
the connector's retries never cross (see :mod:`connectors.smtp.retry`): before it the server
cannot have accepted the message; after it, without a reply, it may have.

Every read and write is bounded by the request's deadline (``ServerSettings.deadline``), not
only per socket operation: a server that drips its replies a byte at a time still ends in -6
within the timeout. :func:`translating` turns socket, TLS and smtplib errors into
:mod:`runtime.errors`, most specific first, chained with ``from``:

    SMTPAuthenticationError          -> AuthFailed        -5
    SMTPServerDisconnected (timeout) -> TimedOut          -6
    SMTPServerDisconnected (other)   -> ConnectFailed     -4
    greeting 4xx / other             -> TransientFailure -1 / ConnectFailed -4
    SMTPResponseException 4xx / 5xx  -> TransientFailure / RemoteRefused   -1
    OSError, ssl.SSLError            -> transport.translate_connect_error  -4 / -6

The password is handed to ``smtplib`` only; no message built here contains it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import math
import smtplib
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

from connectors.smtp.wire import WireMessage
from connectors.transport import require_safe_auth, ssl_context, translate_connect_error
from runtime.configuration import reveal
from runtime.errors import (
    AuthFailed,
    ConnectFailed,
    FlintError,
    LimitExceeded,
    RemoteRefused,
    TimedOut,
    TransientFailure,
)

__all__ = ["ServerSettings", "Delivery", "Progress", "open_session", "transfer", "translating", "refusal",
           "bind_deadline", "unbind_deadline", "DEFAULT_PORTS"]

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True)
class ServerSettings:
    """Where and how to reach the SMTP server, read once from the merged request.

    >>> ServerSettings.from_settings({"target": "mx.example.org"}, timeout_ms=5000).where
    'mx.example.org:587'
    """

    host: str
    port: int
    security: str = "starttls"
    username: str = ""
    password: Any = field(default=None, repr=False)
    timeout_ms: int = 60000
    tls: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # time.monotonic() by which the whole request must be done; None: timeout_ms from when a
    # connection is opened. Not part of the server's identity (pool_key).
    deadline: float | None = field(default=None, repr=False, compare=False)

    def pool_key(self) -> tuple[Any, ...]:
        """Identity of a connection to reuse: server, security, TLS rules and credentials.

        The password enters only as a digest, so the key never holds the secret itself.
        """
        secret = reveal(self.password) if self.password is not None else ""
        digest = hashlib.sha256(str(secret).encode()).hexdigest()
        return (self.host, self.port, self.security, self.username, digest, tuple(sorted(self.tls.items())))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, timeout_ms: int,
                      deadline: float | None = None) -> "ServerSettings":
        """Read target, port, security (default ``starttls``, ``tls`` on 465), credentials, TLS keys."""
        port = settings.get("port")
        security = settings.get("security") or ("tls" if port == 465 else "starttls")
        tls = {key: settings[key] for key in ("tls-verify", "ca-file", "allow-plaintext-auth") if key in settings}
        return cls(
            host=str(settings.get("target") or ""),
            port=int(port or DEFAULT_PORTS[security]),
            security=security,
            username=str(settings.get("username") or ""),
            password=settings.get("password"),
            timeout_ms=timeout_ms,
            tls=tls,
            deadline=deadline,
        )

    @property
    def where(self) -> str:
        """``host:port``, as error messages name the server."""
        return f"{self.host}:{self.port}"

    @property
    def timeout_s(self) -> float:
        """The request's timeout in seconds."""
        return max(self.timeout_ms, 1) / 1000.0

    def with_deadline(self) -> "ServerSettings":
        """These settings with a deadline ``timeout_ms`` from now, unless one is set already."""
        if self.deadline is not None:
            return self
        return replace(self, deadline=time.monotonic() + self.timeout_s)

    def check_auth_allowed(self) -> None:
        """Refuse (-9) credentials in plain text off loopback; before any connection is made."""
        if self.username:
            require_safe_auth({"target": self.host, **self.tls}, encrypted=self.security != "none")


@dataclass
class Delivery:
    """What the server said: accepted and refused recipients, and its reply to DATA."""

    accepted: list[str]
    refused: dict[str, str]
    data_reply: str = ""


@dataclass
class Progress:
    """How far one transaction got. ``data_sent``: the message and its final ``.`` were sent in
    full, so from then on the server may have accepted it even if no reply comes."""

    data_sent: bool = False


class _DeadlineReader(io.RawIOBase):
    """Reads the connection's current socket, each read bounded by the time left."""

    def __init__(self, smtp: "_DeadlineBound") -> None:
        self.smtp = smtp

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        sock = self.smtp.sock
        if sock is None:
            raise OSError("not connected")
        self.smtp.arm(sock)
        return sock.recv_into(buffer)


class _DeadlineBound:
    """Mixin for :class:`smtplib.SMTP`: every connect, read and write ends by ``deadline``.

    A socket timeout alone bounds each operation, so a server sending one byte a second would
    hold a reply open for ever; here each operation gets only the time left, and none is
    started once the deadline has passed (``TimeoutError``, translated to -6).
    """

    # No deadline (math.inf) while idle in the pool: then each operation has the plain socket
    # timeout of the last request, as the pool's NOOP check needs.
    deadline: float = math.inf
    sock: Any
    file: Any
    timeout: float

    def arm(self, sock: Any) -> None:
        """Give the next operation on ``sock`` only the time left (TimeoutError when none is)."""
        if self.deadline == math.inf:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(left)

    def _get_socket(self, host: str, port: int, timeout: float) -> Any:
        if self.deadline != math.inf:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("timed out")
        return super()._get_socket(host, port, timeout)  # type: ignore[misc]

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            self.file = io.BufferedReader(_DeadlineReader(self))
        return super().getreply()  # type: ignore[misc]

    def send(self, s: bytes | str) -> None:
        if self.sock is not None:
            self.arm(self.sock)  # sendall: the timeout bounds the whole call
        super().send(s)  # type: ignore[misc]

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        if self.sock is not None:
            self.arm(self.sock)
        return super().starttls(*args, **kwargs)  # type: ignore[misc]


class _SMTP(_DeadlineBound, smtplib.SMTP):
    pass


class _SMTP_SSL(_DeadlineBound, smtplib.SMTP_SSL):
    pass


@functools.lru_cache(maxsize=1)
def _local_hostname() -> str:
    """The name used in EHLO; looked up once per process (getfqdn may query DNS)."""
    return socket.getfqdn() or "localhost"


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def refusal(code: int, reply: bytes | str, what: str = "") -> RemoteRefused:
    """The error for an SMTP refusal: TransientFailure for 4xx, else RemoteRefused (both -1).

    >>> str(refusal(550, b"5.1.1 <x@y>: mailbox unavailable", "recipient <x@y>"))
    'SMTP 550 5.1.1 <x@y>: mailbox unavailable'
    """
    text = _text(reply)
    message = f"SMTP {code} {text}"
    if what and what.split("<")[-1].rstrip(">") not in text:
        message += f" ({what})"
    return (TransientFailure if 400 <= code < 500 else RemoteRefused)(message)


@contextlib.contextmanager
def translating(server: ServerSettings) -> Iterator[None]:
    """Translate socket, TLS and smtplib errors raised inside into :mod:`runtime.errors`."""
    try:
        yield
    except FlintError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise AuthFailed(f"SMTP authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPServerDisconnected as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, TimeoutError):
            raise TimedOut(f"timed out after {server.timeout_ms} ms talking to {server.where}") from exc
        if isinstance(cause, OSError):
            raise translate_connect_error(cause, server.host, server.port, timeout_ms=server.timeout_ms) from exc
        raise ConnectFailed(f"connection to {server.where} closed by the server") from exc
    except smtplib.SMTPConnectError as exc:
        raise ConnectFailed(
            f"SMTP server {server.where} refused the session: {exc.smtp_code} {_text(exc.smtp_error)}"
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise refusal(exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPException as exc:
        raise RemoteRefused(f"SMTP {server.where}: {exc}") from exc
    except OSError as exc:  # socket errors, ssl.SSLError, TimeoutError
        raise translate_connect_error(exc, server.host, server.port, timeout_ms=server.timeout_ms) from exc


def _login(smtp: smtplib.SMTP, server: ServerSettings) -> None:
    if not smtp.has_extn("auth"):
        hint = " (try security starttls or tls)" if server.security == "none" else ""
        raise AuthFailed(f"cannot authenticate to {server.where}: the server does not offer AUTH{hint}")
    try:
        smtp.login(server.username, str(reveal(server.password) or ""))
    except smtplib.SMTPResponseException as exc:  # SMTPAuthenticationError (535) among them
        if 400 <= exc.smtp_code < 500:
            raise refusal(exc.smtp_code, exc.smtp_error, "AUTH") from exc
        raise AuthFailed(f"SMTP authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPException as exc:
        offered = smtp.esmtp_features.get("auth", "").strip() or "none"
        raise AuthFailed(
            f"cannot authenticate to {server.where}: no AUTH mechanism in common (server offers: {offered})"
        ) from exc


def bind_deadline(smtp: smtplib.SMTP, server: ServerSettings) -> None:
    """Make ``server``'s deadline the one every later read and write of ``smtp`` ends by."""
    if isinstance(smtp, _DeadlineBound):
        smtp.deadline = server.with_deadline().deadline or math.inf
        smtp.timeout = server.timeout_s
    elif smtp.sock is not None:  # a connection made elsewhere (a test double): per-operation only
        smtp.sock.settimeout(server.timeout_s)


def unbind_deadline(smtp: smtplib.SMTP) -> None:
    """Before ``smtp`` goes idle: no deadline, the plain socket timeout of its last request."""
    if isinstance(smtp, _DeadlineBound):
        smtp.deadline = math.inf
        if smtp.sock is not None:
            smtp.sock.settimeout(smtp.timeout)


def open_session(server: ServerSettings) -> smtplib.SMTP:
    """Connect, secure and authenticate; the caller owns the returned connection."""
    server.check_auth_allowed()
    smtp: _SMTP | _SMTP_SSL | None = None
    try:
        with translating(server):
            if server.security == "tls":
                smtp = _SMTP_SSL(local_hostname=_local_hostname(), timeout=server.timeout_s,
                                 context=ssl_context(server.tls))
            else:
                smtp = _SMTP(local_hostname=_local_hostname(), timeout=server.timeout_s)
            bind_deadline(smtp, server)
            smtp._host = server.host  # smtplib sets it only when __init__ connects; TLS needs it (SNI)
            code, greeting = smtp.connect(server.host, server.port)
            if code != 220:
                what = f"SMTP server {server.where} refused the session: {code} {_text(greeting)}"
                # 421 (busy, shutting down) is for now; anything else means this server will not talk.
                raise TransientFailure(what) if 400 <= code < 500 else ConnectFailed(what)
            smtp.ehlo_or_helo_if_needed()
            if server.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConnectFailed(f"STARTTLS not offered by {server.where}")
                try:
                    smtp.starttls(context=ssl_context(server.tls))
                except smtplib.SMTPResponseException as exc:
                    raise ConnectFailed(
                        f"STARTTLS refused by {server.where}: {exc.smtp_code} {_text(exc.smtp_error)}"
                    ) from exc
                smtp.ehlo()
            if server.username:
                _login(smtp, server)
    except BaseException:
        if smtp is not None:
            smtp.close()
        raise
    logger.debug("SMTP session open with %s (%s)", server.where, server.security)
    return smtp


def _reset(smtp: smtplib.SMTP) -> None:
    """RSET after a refusal; a failure here must not hide the refusal being reported."""
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.rset()


def _check_size_limit(smtp: smtplib.SMTP, server: ServerSettings, size: int) -> None:
    """Refuse (-7) a message larger than the server's advertised SIZE, before sending it."""
    limit = smtp.esmtp_features.get("size", "").strip()
    if limit.isdigit() and 0 < int(limit) < size:
        raise LimitExceeded(
            f"message is {size / 1048576:.1f} MB; {server.where} accepts at most {int(limit) / 1048576:.1f} MB"
        )


def _send_data(smtp: smtplib.SMTP, message: WireMessage, progress: Progress) -> tuple[int, bytes]:
    """DATA, as :meth:`smtplib.SMTP.data` does it but a slice of the message at a time, noting
    the moment the final ``.`` is sent.

    Each slice is one ``send`` (bounded by the time left before the deadline). The final ``.``
    goes in the same ``send`` as the last slice (one segment, as smtplib sends a message; no wait
    on the peer's delayed ACK), and ``data_sent`` is set only once that call has returned: if any
    ``send`` fails, the ``.`` line never left this host in full.
    """
    smtp.putcmd("data")
    code, reply = smtp.getreply()
    if code != 354:
        return code, reply
    last = b""
    for chunk in message.data_chunks():
        if last:
            smtp.send(last)
        last = chunk
    smtp.send(last + b".\r\n")
    progress.data_sent = True
    return smtp.getreply()


def transfer(smtp: smtplib.SMTP, server: ServerSettings, sender: str, recipients: Sequence[str],
             message: WireMessage | bytes, *, progress: Progress | None = None,
             hold_deferred: bool = False) -> Delivery:
    """MAIL FROM, RCPT TO for each recipient, DATA. Refusing every recipient is -1 and sends nothing.

    ``message`` is a :class:`~connectors.smtp.wire.WireMessage`, or the raw bytes (CRLF line ends).

    With ``hold_deferred`` a recipient refused for now (4xx) abandons the transaction before DATA
    (RSET; nothing sent), so that a retry can reach every recipient; without it the message goes
    to the accepted recipients and the others are reported in ``refused``.
    """
    progress = progress if progress is not None else Progress()
    wire = message if isinstance(message, WireMessage) else WireMessage(message)
    with translating(server):
        options: list[str] = []
        if smtp.has_extn("size"):
            _check_size_limit(smtp, server, wire.size)
            options.append(f"SIZE={wire.size}")
        code, reply = smtp.mail(sender, options)
        if code != 250:
            _reset(smtp)
            raise refusal(code, reply, f"sender <{sender}>")
        accepted: list[str] = []
        refused: dict[str, str] = {}
        first: RemoteRefused | None = None
        for address in recipients:
            code, reply = smtp.rcpt(address)
            if code in (250, 251):
                accepted.append(address)
            else:
                refused[address] = f"{code} {_text(reply)}"
                first = first or refusal(code, reply, f"recipient <{address}>")
        deferred = [address for address, reply in refused.items() if reply.startswith("4")]
        if not accepted or (hold_deferred and deferred):
            _reset(smtp)
            if accepted:
                first = refusal(int(refused[deferred[0]][:3]), refused[deferred[0]][4:],
                                f"recipient <{deferred[0]}>")
            assert first is not None
            if len(refused) > 1:
                first = type(first)(f"{first.message} (and {len(refused) - 1} more recipients refused)")
            raise first
        code, reply = _send_data(smtp, wire, progress)
        if code != 250:
            if progress.data_sent and not 400 <= code < 600:
                raise RemoteRefused(f"SMTP {server.where} gave an unreadable reply to the message "
                                    f"({code} {_text(reply)}); the server may have accepted the message")
            raise refusal(code, reply, "message data")
    return Delivery(accepted, refused, _text(reply))
