"""The oracle of the smtp properties: a send either delivers exactly what was asked, or fails
with a SPEC exit-code and delivers nothing.

:func:`send_or_refuse` runs one request through :class:`connectors.smtp.SmtpConnector` against a
real aiosmtpd server and checks, whatever the input:

- a failure is a :class:`~runtime.errors.FlintError` with an allowed exit-code (never another
  exception type) and the server saw no transaction at all (not even MAIL FROM);
- a success is exactly one message whose SMTP envelope names exactly the requested recipients,
  which parses, and whose headers are exactly the ones the connector writes plus the caller's
  ``headers`` (no header injected through a value: no ``Bcc:``, no ``X-Injected:``).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any, Iterable

from runtime.errors import FlintError
from tests.servers.smtp import Received, SmtpServer, send

SENDER = "ops@example.org"

# What the connector writes on the top-level message for a plain send (no flags).
CONNECTOR_HEADERS = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
                     "content-type", "content-transfer-encoding"}
PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition"}


def reset(server: SmtpServer) -> None:
    """Forget what the server saw (one module-scoped server serves every example)."""
    server.handler.received.clear()
    server.handler.transactions = 0


def parse(raw: bytes) -> EmailMessage:
    """The raw message as a reader sees it (modern policy: decoded headers)."""
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def send_or_refuse(server: SmtpServer, request: dict[str, Any], *, recipients: Iterable[str] | None,
                   allowed_codes: Iterable[int] = (-2,), extra_headers: Iterable[str] = ()) -> Received | None:
    """Send ``request``; return what was received, or None when it was refused as the oracle allows.

    ``recipients`` is the envelope the send must have (None: check it against the request's own
    fields later). ``extra_headers`` are header names the caller set besides the connector's.
    """
    reset(server)
    request = {"from": SENDER, **request}
    try:
        send(server.config(), **request)
    except FlintError as exc:
        assert exc.exit_code in set(allowed_codes), f"exit-code {exc.exit_code}: {exc.message}"
        assert server.handler.transactions == 0, f"refused ({exc.message}) after a transaction began"
        assert server.received == []
        return None
    assert server.handler.transactions == 1 and len(server.received) == 1, server.received
    got = server.received[0]
    if recipients is not None:
        assert got.rcpt_tos == list(recipients)
    message = parse(got.raw)
    assert not message.defects, message.defects
    allowed = CONNECTOR_HEADERS | {name.lower() for name in extra_headers}
    names = [name.lower() for name in message.keys()]
    assert set(names) <= allowed, f"unexpected headers {set(names) - allowed} in {got.raw[:2000]!r}"
    assert len(names) == len(set(names)), f"a header appears twice: {names}"
    for part in message.walk():
        if part is not message:
            assert {name.lower() for name in part.keys()} <= PART_HEADERS, part.keys()
    for line in got.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):  # the raw bytes, not the parser's view
        if not line[:1].isspace():
            name = line.partition(b":")[0].decode("ascii", "replace").lower()
            assert name in allowed, f"header line {line[:200]!r} (a header injected?)"
    return got


def body_as_sent(text: str) -> str:
    """``text`` as a reader decodes it: any CR, LF or CRLF is a line end, and the last line ends."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    return normalized if normalized.endswith("\n") else normalized + "\n"


def received_text(part: EmailMessage) -> str:
    """A text part's decoded content with Python line ends."""
    return part.get_content().replace("\r\n", "\n")
