"""The :class:`SmtpConnector`: checks a send request, builds the message and delivers it.

Order of work, so that nothing is delivered when any input is bad: header fields and addresses
(-2), the plaintext-auth guard (-9), then body file and attachments (-9, -3, -7, and for URLs
-9/-4/-6/-1), then the message is built and only then a connection is opened. One deadline,
the request's timeout from the start of the action, bounds all of it: fetches and every attempt.

The SMTP connection is made in one overridable place, :meth:`SmtpConnector.open_connection`,
and given back through :meth:`SmtpConnector.release_connection`; a pooling subclass or a test
double replaces those two methods without patching :mod:`smtplib`.

Faults: :meth:`SmtpConnector.deliver` retries a transaction that failed before the server could
have accepted the message (a 4xx, a connection dropped before the final ``.`` was sent), on a
fresh connection with exponential backoff, within the request's timeout; it never retries once
the final ``.`` has been sent -- a 250 is success, a lost reply means "the server may have
accepted the message" and the request fails saying so. The full rule is in
:mod:`connectors.smtp.retry`.
"""

from __future__ import annotations

import logging
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from connectors.base import Connector, ConnectorCall
from connectors.capture import STORED_AS, capture_server
from connectors.smtp.attachments import AttachmentRules, load_attachments, read_body_file
from connectors.smtp.message import POLICY, build_message, read_addressing, read_headers
from connectors.smtp.pool import SmtpPool
from connectors.smtp.retry import MIN_ATTEMPT_S, RetryPolicy, is_retryable
from connectors.smtp.schema import CONFIG_SCHEMA, REQUEST_OVERRIDABLE, SEND_SCHEMA
from connectors.smtp.session import (Delivery, Progress, ServerSettings, bind_deadline, open_session, transfer,
                                    unbind_deadline)
from connectors.smtp.wire import DeferredPayloads, WireMessage
from runtime.errors import ConnectFailed, FlintError, InternalError, InvalidRequest, TimedOut

__all__ = ["SmtpConnector"]

logger = logging.getLogger(__name__)


class SmtpConnector(Connector):
    """Connector type ``smtp``: one action, ``send``.

    >>> connector = SmtpConnector("mail", {"target": "127.0.0.1", "security": "none"})
    >>> connector.prepare({"to": "a@example.org", "from": "b@example.org"})[0]
    'send'
    """

    type: ClassVar[str] = "smtp"
    description: ClassVar[str] = "Send mail through an SMTP server"
    config_schema: ClassVar[dict[str, Any]] = CONFIG_SCHEMA
    request_schemas: ClassVar[dict[str, dict[str, Any]]] = {"send": SEND_SCHEMA}
    default_action: ClassVar[str] = "send"
    request_overridable: ClassVar[frozenset[str]] = REQUEST_OVERRIDABLE

    # -- the connection seam ---------------------------------------------------------------

    def __init__(self, name: str, config: Mapping[str, Any], description: str = "") -> None:
        super().__init__(name, config, description)
        self.pool = SmtpPool()

    def open_connection(self, server: ServerSettings) -> smtplib.SMTP:
        """Return an SMTP connection to ``server``: connected, secured and authenticated.

        The one place connections are made: a healthy idle one from the pool when there is one
        for the same server and credentials, else a new one. Override it to stand in a fake.
        """
        key = server.pool_key()
        smtp = self.pool.take(key)
        if smtp is None:
            smtp = open_session(server)
        else:
            bind_deadline(smtp, server)  # this request's deadline, not the last one's
        smtp._flint_pool_key = key  # type: ignore[attr-defined]
        return smtp

    def release_connection(self, smtp: smtplib.SMTP, *, reusable: bool) -> None:
        """Give back a connection from :meth:`open_connection`; ``reusable`` is False after a failure.

        A reusable connection is kept in the pool; otherwise (or when the pool is full) it is closed.
        """
        key = getattr(smtp, "_flint_pool_key", None)
        unbind_deadline(smtp)  # this request's deadline must not follow the connection into the pool
        if reusable and key is not None and self.pool.give(key, smtp):
            return
        self.pool.forget(smtp)
        try:
            if reusable:
                smtp.quit()
        except (smtplib.SMTPException, OSError) as exc:
            logger.debug("QUIT failed after delivery: %s", type(exc).__name__)
        finally:
            smtp.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.close()

    def check(self, call: ConnectorCall) -> str:
        """Greet the configured server (STARTTLS and AUTH included) for ``flint check --connect``.

        In capture mode, start the capture server. Returns what was checked; raises like ``send``.
        """
        settings = dict(self.config)
        if settings.get("capture-dir"):
            capture = capture_server(str(settings["capture-dir"]))
            return f"capture server on {capture.host}:{capture.port} stores mail in {capture.directory}"
        timeout_ms = min(int(settings.get("timeout") or call.timeout_ms), call.timeout_ms)
        server = ServerSettings.from_settings(settings, timeout_ms=timeout_ms)
        smtp = self.open_connection(server)
        self.release_connection(smtp, reusable=True)
        steps = ["greeted", {"starttls": "STARTTLS", "tls": "TLS"}.get(server.security, "")]
        steps.append("authenticated" if server.username else "")
        return f"{', '.join(step for step in steps if step)}: {server.where}"

    # -- the action -----------------------------------------------------------------------

    def action_send(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Send one message; see the package docstring for keys and output."""
        timeout_ms = min(int(request.get("timeout") or call.timeout_ms), call.timeout_ms)
        deadline = time.monotonic() + timeout_ms / 1000.0  # for everything: fetches, every attempt
        addressing = read_addressing(request)
        extra_headers = read_headers(request)
        capture_dir = request.get("capture-dir")
        server = None if capture_dir else ServerSettings.from_settings(request, timeout_ms=timeout_ms,
                                                                       deadline=deadline)
        if server is not None:
            if not server.host:
                raise InvalidRequest("'target' is required")
            server.check_auth_allowed()

        rules = AttachmentRules.from_settings(request, timeout_s=timeout_ms / 1000.0, deadline=deadline)
        body = self._body(request, rules)
        deferred = DeferredPayloads(POLICY)  # attachments are encoded only as they go on the wire
        message = build_message(request, addressing, extra_headers, body,
                                load_attachments(request.get("attachments"), rules), deferred=deferred)
        wire = _encode(message, deferred)
        message_id = str(message["Message-ID"])

        capture = None
        if server is None:
            capture = capture_server(str(capture_dir))
            server = ServerSettings(capture.host, capture.port, security="none", timeout_ms=timeout_ms,
                                    deadline=deadline)
        delivery = self.deliver(server, addressing.sender.addr_spec, addressing.recipients, wire,
                                retry=RetryPolicy.from_settings(request), log=call.log)

        output: dict[str, Any] = {
            "result": "success",
            "message-id": message_id,
            "accepted": delivery.accepted,
            "refused": delivery.refused,
        }
        if capture is not None:
            output["eml"] = str(_stored_path(capture.directory, delivery.data_reply))
        summary = f"sent {message_id} via {server.where}: {len(delivery.accepted)} accepted"
        if delivery.refused:
            summary += f", {len(delivery.refused)} refused"
        logger.info("%s", summary)
        call.log("info", summary)
        return output

    def deliver(self, server: ServerSettings, sender: str, recipients: list[str], message: WireMessage | bytes, *,
                retry: RetryPolicy | None = None,
                log: Callable[[str, str], None] | None = None) -> Delivery:
        """Deliver ``message`` (or raw bytes, CRLF line ends) in one SMTP transaction, tried again
        while that cannot duplicate it.

        Each attempt takes a connection from :meth:`open_connection` (a fresh one after a
        failure). An attempt that failed before the server could have accepted the message
        (:func:`~connectors.smtp.retry.is_retryable`) is repeated after a backoff, while attempts
        remain and the wait plus another attempt as long as this one fit before the deadline; each
        retry is written to ``log``. Once
        the final ``.`` has been sent nothing is repeated: a lost reply fails the request with
        "the server may have accepted the message".
        """
        retry = retry or RetryPolicy()
        wire = message if isinstance(message, WireMessage) else WireMessage(message)
        server = server.with_deadline()
        assert server.deadline is not None
        attempt = 0
        while True:
            attempt += 1
            wait = retry.delay_s(attempt)
            # Predicted before the attempt; decides only whether a deferred recipient holds it back.
            last = attempt >= retry.attempts or time.monotonic() + wait + MIN_ATTEMPT_S > server.deadline
            progress = Progress()
            started = time.monotonic()
            try:
                delivery = self._attempt(server, sender, recipients, wire, progress, last=last)
            except FlintError as exc:
                error = exc
            else:
                if attempt > 1:
                    self._note(log, "info", f"delivered to {server.where} on attempt {attempt}")
                return delivery
            if progress.data_sent and isinstance(error, (ConnectFailed, TimedOut)):
                raise type(error)(f"{error.message} after the message was sent: the server may have accepted "
                                  "the message, so it was not sent again") from error
            if not is_retryable(error, progress, attempt):
                if attempt > 1:
                    raise type(error)(f"{error.message} (attempt {attempt})") from error
                raise error
            if attempt >= retry.attempts:
                if attempt == 1:
                    raise error
                raise type(error)(f"{error.message}; gave up after {attempt} attempts") from error
            # The next attempt is expected to take as long as this one did.
            if time.monotonic() + wait + max(MIN_ATTEMPT_S, time.monotonic() - started) > server.deadline:
                raise type(error)(f"{error.message}; gave up after {attempt} attempt{'s' if attempt > 1 else ''}: "
                                  f"no time for another within the {server.timeout_ms} ms timeout") from error
            self._note(log, "warn", f"attempt {attempt} of {retry.attempts} to {server.where} failed: "
                                    f"{error.message}; retrying in {round(wait * 1000)} ms")
            self.pool.discard(server.pool_key())  # its other idle connections are suspect too
            time.sleep(wait)

    def _attempt(self, server: ServerSettings, sender: str, recipients: list[str], wire: WireMessage,
                 progress: Progress, *, last: bool) -> Delivery:
        """One transaction over one connection; ``progress`` says how far it got."""
        smtp = self.open_connection(server)
        delivered = False
        try:
            delivery = transfer(smtp, server, sender, recipients, wire, progress=progress, hold_deferred=not last)
            delivered = True
            return delivery
        finally:
            self.release_connection(smtp, reusable=delivered)

    @staticmethod
    def _note(log: Callable[[str, str], None] | None, level: str, line: str) -> None:
        getattr(logger, "warning" if level == "warn" else level)("%s", line)
        if log is not None:
            log(level, line)

    @staticmethod
    def _body(request: Mapping[str, Any], rules: AttachmentRules) -> str:
        if request.get("body-file") is not None:
            if request.get("body") is not None:
                raise InvalidRequest("give 'body' or 'body-file', not both")
            return read_body_file(str(request["body-file"]), rules)
        return str(request.get("body") or "")


def _encode(message: EmailMessage, deferred: DeferredPayloads) -> WireMessage:
    """The message as sent on the wire (CRLF line ends), its attachments still as bytes."""
    try:
        return WireMessage.render(message, deferred)
    except Exception as exc:  # email's folding and encoders raise several types on odd input
        raise InvalidRequest(f"the message cannot be encoded: {type(exc).__name__}") from exc


def _stored_path(directory: Path, reply: str) -> Path:
    """The file the capture server named in its DATA reply."""
    _, found, name = reply.partition(STORED_AS)
    name = name.split()[0] if name.split() else ""
    if not found or not name or "/" in name:
        raise InternalError(f"capture server gave no file name: {reply!r}")
    return directory / name
