"""The ``pop3`` connector: list, read, search and delete mail in a POP3 maildrop.

Built on the standard library's :mod:`poplib`. The connection is made in one overridable method,
:meth:`Pop3Connector.connect`. ``security: starttls`` sends STLS and refuses to go on when the server
does not offer it; ``tls`` is implicit TLS (995).

POP3 has one folder, INBOX, and no server-side search or sort, so the connector reads what each
action needs and no more: sizes come from LIST; dates, senders and subjects from TOP n 0 (headers
only); a whole message (RETR) only for ``read`` and for ``search`` criteria that look at BODY.
POP3 has no arrival time either: ``receivedDateTime`` and ``sort-by: received-date`` use the newest
``Received`` header, else ``Date``. Deletions are committed by QUIT at the end of a successful
action; a failed action closes the connection without QUIT, so the server discards them.

Messages are addressed by Message-ID; messages without one and duplicates follow the rules in
:mod:`connectors.mailbox`. ``move`` does not exist on POP3.
"""

from __future__ import annotations

import logging
import poplib
import ssl
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, Mapping

from connectors import mailbox
from connectors.base import Connector, ConnectorCall, make_request_schema
from connectors.transport import require_safe_auth, ssl_context, translate_connect_error
from runtime.errors import AuthFailed, ConnectFailed, FlintError, NotFound, RemoteRefused

__all__ = ["Pop3Connector"]

logger = logging.getLogger(__name__)

_SERVER = ["target", "username", "password"]
_FOLDER = {"enum": ["INBOX"], "description": "POP3 has only INBOX"}


def _schema(*keys: str, required: list[str] | None = None) -> dict[str, Any]:
    properties = {key: _FOLDER if key == "folder" else mailbox.REQUEST_PROPERTIES[key] for key in keys}
    return make_request_schema(mailbox.CONFIG_SCHEMA, properties, required=_SERVER + (required or []),
                               **{"$defs": mailbox.CRITERIA_DEFS})


class _Maildrop:
    """One POP3 session's view of the maildrop: sizes from LIST, headers and messages on demand."""

    def __init__(self, client: poplib.POP3) -> None:
        self.client = client
        self.sizes: dict[int, int] = {}
        for line in client.list()[1]:
            number, size = line.split()[:2]
            self.sizes[int(number)] = int(size)
        self._headers: dict[int, bytes] = {}

    @property
    def numbers(self) -> list[int]:
        """Message numbers in mailbox order."""
        return sorted(self.sizes)

    def header(self, number: int) -> bytes:
        """The header block of message ``number`` (TOP n 0), fetched once."""
        if number not in self._headers:
            self._headers[number] = b"\r\n".join(self.client.top(number, 0)[1])
        return self._headers[number]

    def message(self, number: int) -> bytes:
        """The whole message ``number`` (RETR)."""
        return b"\r\n".join(self.client.retr(number)[1])

    def sort_key(self, sort_by: str) -> Any:
        """A key function on message numbers for ``sort-by``."""
        if sort_by == "size":
            return self.sizes.__getitem__
        when = mailbox.sent_date if sort_by == "sent-date" else mailbox.received_date
        return lambda number: when(mailbox.parse_message(self.header(number) + b"\r\n\r\n"))

    def find(self, message_id: str) -> list[tuple[int, str]]:
        """``(number, Message-ID)`` of every copy of ``message_id``, in mailbox order."""
        found = []
        for number in self.numbers:
            actual = mailbox.message_id_of(self.header(number))
            if mailbox.same_message_id(actual, message_id):
                found.append((number, actual))
        if not found:
            raise NotFound(f"message {message_id} not found in INBOX")
        return found


class Pop3Connector(Connector):
    """Reads and deletes mail over POP3 (SPEC section 4, "imap and pop3")."""

    type: ClassVar[str] = "pop3"
    description: ClassVar[str] = "Read mail over POP3"
    config_schema: ClassVar[dict[str, Any]] = mailbox.CONFIG_SCHEMA
    default_action: ClassVar[str] = "list"
    request_overridable: ClassVar[frozenset[str]] = mailbox.REQUEST_OVERRIDABLE
    request_schemas: ClassVar[dict[str, dict[str, Any]]] = {
        "list": _schema("folder", "max", "sort-by", "sort-order"),
        "read": _schema("folder", "message-id", required=["message-id"]),
        "delete": _schema("folder", "message-id", required=["message-id"]),
        "search": _schema("folder", "criteria", "max", "sort-by", "sort-order", required=["criteria"]),
    }

    def connect(self, host: str, port: int, *, tls: bool, context: ssl.SSLContext | None,
                timeout_s: float) -> poplib.POP3:
        """Open the connection (implicit TLS when ``tls``); the one place a fake may stand in."""
        if tls:
            return poplib.POP3_SSL(host, port, context=context, timeout=timeout_s)
        return poplib.POP3(host, port, timeout=timeout_s)

    # -- actions -------------------------------------------------------------------------------

    def action_list(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """The newest (by default) ``max`` messages: messageId, fromAddress, subject, size."""
        with self._session(request, call) as drop:
            chosen = self._order(drop, drop.numbers, request)
            return {"result": [mailbox.summary(drop.header(n), drop.sizes[n]) for n in chosen]}

    def action_search(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Messages matching ``criteria``, evaluated here (POP3 cannot search): messageId, subject."""
        criteria = request["criteria"]
        with_body = mailbox.criteria_use_body(criteria)
        with self._session(request, call) as drop:
            hits = []
            for number in drop.numbers:
                raw = drop.message(number) if with_body else drop.header(number) + b"\r\n\r\n"
                if mailbox.criteria_match(criteria, mailbox.criteria_fields(raw, with_body=with_body)):
                    hits.append(number)
            chosen = self._order(drop, hits, request)
            return {"result": [mailbox.search_hit(drop.header(n)) for n in chosen]}

    def action_read(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """The whole message with ``message-id`` (the first copy)."""
        with self._session(request, call) as drop:
            number = drop.find(request["message-id"])[0][0]
            limit = request.get("attachment-content-limit", mailbox.ATTACHMENT_CONTENT_LIMIT)
            details = mailbox.message_details(drop.message(number), size=drop.sizes[number], received=None,
                                              content_limit=limit)
            return {"result": details}

    def action_delete(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Delete every copy of ``message-id``; QUIT commits the deletion."""
        with self._session(request, call) as drop:
            found = drop.find(request["message-id"])
            for number, _ in found:
                drop.client.dele(number)
            logger.info("pop3 %s: deleted %d message(s) %s", self.name, len(found), found[0][1])
            return {"result": {"deleted": True, "messageId": found[0][1]}}

    @staticmethod
    def _order(drop: _Maildrop, numbers: list[int], request: Mapping[str, Any]) -> list[int]:
        sort_by = request.get("sort-by", "received-date")
        ordered = mailbox.sort_in_order(numbers, drop.sort_key(sort_by), request.get("sort-order", "desc"))
        return ordered[:request.get("max", 100)]

    # -- session and errors --------------------------------------------------------------------

    @contextmanager
    def _session(self, settings: Mapping[str, Any], call: ConnectorCall) -> Iterator[_Maildrop]:
        """A logged-in maildrop; every library error inside is translated here, most specific first."""
        host, security = settings["target"], settings.get("security", "starttls")
        port = settings.get("port") or (995 if security == "tls" else 110)
        timeout_ms = min(settings.get("timeout", call.timeout_ms), call.timeout_ms)
        username = settings["username"]
        require_safe_auth(settings, encrypted=security != "none")
        context = ssl_context(settings) if security != "none" else None
        client: poplib.POP3 | None = None
        committed = False
        try:
            client = self.connect(host, port, tls=security == "tls", context=context, timeout_s=timeout_ms / 1000)
            if security == "starttls":
                self._starttls(client, context, host, port)
            try:
                client.user(username)
                client.pass_(settings["password"].reveal())
            except poplib.error_proto as exc:
                reason = _reply(exc)
                raise AuthFailed(f"POP3 authentication failed for user {username} on {host}:{port}: {reason}") \
                    from exc
            yield _Maildrop(client)
            client.quit()
            committed = True
        except FlintError:
            raise
        except poplib.error_proto as exc:
            raise RemoteRefused(f"POP3 server {host}:{port} refused: {_reply(exc)}") from exc
        except (OSError, ssl.SSLError, EOFError) as exc:
            raise translate_connect_error(exc, host, port, timeout_ms=timeout_ms) from exc
        finally:
            if client is not None and not committed:
                _close(client)

    @staticmethod
    def _starttls(client: poplib.POP3, context: ssl.SSLContext | None, host: str, port: int) -> None:
        try:
            offered = "STLS" in client.capa()
        except poplib.error_proto:  # no CAPA at all: certainly no STLS
            offered = False
        if not offered:
            raise ConnectFailed(f"STARTTLS not offered by {host}:{port}")
        client.stls(context)


def _close(client: poplib.POP3) -> None:
    """Drop the connection without QUIT, so the server forgets any DELE of this session."""
    try:
        client.close()
    except OSError:  # the socket is gone already (a failed TLS handshake closes it)
        pass


def _reply(exc: poplib.error_proto) -> str:
    """The server's reply text carried by a poplib error."""
    reply = exc.args[0] if exc.args else ""
    return (reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else str(reply)).strip()
