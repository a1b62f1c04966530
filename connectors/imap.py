"""The ``imap`` connector: list, read, search, delete and move mail on an IMAP server.

Built on IMAPClient, which speaks modified UTF-7 folder names, parses typed responses and knows the
server's capabilities. The connection is made in one overridable method, :meth:`ImapConnector.connect`.

* ``folder``, ``from-folder`` and ``to-folder`` are dot-separated paths (``Archive.2024``), joined
  with the server's hierarchy delimiter; ``move`` creates a missing ``to-folder`` level by level.
* ``list`` and ``search`` let the server choose the messages: SORT when offered, else SEARCH plus a
  FETCH of only the sort key; then headers and sizes are fetched for the chosen ones, never bodies.
* ``search`` criteria become one server-side SEARCH key without parentheses: ``OR a b`` for OR and
  ``NOT OR NOT a NOT b`` for AND, so groups nest to any depth; values go as literals (any
  character, CHARSET UTF-8 when not ASCII).
* ``read`` fetches with BODY.PEEK, so it leaves the \\Seen flag alone.
* ``delete`` flags and expunges only the messages it deleted (UID EXPUNGE when UIDPLUS is
  offered, else EXPUNGE); ``move`` uses MOVE when offered, else COPY, delete and expunge.

Messages are addressed by Message-ID; messages without one and duplicates follow the rules in
:mod:`connectors.mailbox`.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar, Iterator, Mapping, Sequence

from imapclient import IMAPClient
from imapclient import exceptions as imap_errors

from connectors import mailbox
from connectors.base import Connector, ConnectorCall, make_request_schema
from connectors.transport import require_safe_auth, ssl_context, translate_connect_error
from runtime.errors import AuthFailed, ConnectFailed, FlintError, InvalidRequest, NotFound, RemoteRefused, TimedOut

try:  # imapclient sends a _literal as an IMAP literal: the one form valid for any search value.
    from imapclient.imapclient import _literal as _Literal
except ImportError:  # pragma: no cover - an imapclient without it still sends 8-bit values as literals
    _Literal = bytes

__all__ = ["ImapConnector", "search_key"]

logger = logging.getLogger(__name__)

_SORT_KEYS = {"sent-date": "DATE", "received-date": "ARRIVAL", "size": "SIZE"}
_CHUNK = 500  # UIDs per FETCH, to keep command lines short on big mailboxes
_SERVER = ["target", "username", "password"]


def _schema(*keys: str, required: Sequence[str] = ()) -> dict[str, Any]:
    properties = {key: mailbox.REQUEST_PROPERTIES[key] for key in keys}
    return make_request_schema(mailbox.CONFIG_SCHEMA, properties, required=_SERVER + list(required),
                               **{"$defs": mailbox.CRITERIA_DEFS})


def search_key(criterion: Mapping[str, Any]) -> list[Any]:
    """One IMAP search key (a flat token list, no parentheses) for validated criteria.

    >>> search_key({"operator": "OR", "criteria": [{"field": "FROM", "value": "a"},
    ...                                            {"field": "SUBJECT", "value": "b"}]})
    ['OR', 'FROM', b'a', 'SUBJECT', b'b']
    """
    if "operator" not in criterion:
        return [criterion["field"], _Literal(criterion["value"].encode("utf-8"))]
    parts = [search_key(c) for c in criterion["criteria"]]
    combined = parts[-1]
    for part in reversed(parts[:-1]):
        if criterion["operator"] == "OR":
            combined = ["OR", *part, *combined]
        else:  # a AND b == NOT (NOT a OR NOT b), a single key that nests without parentheses
            combined = ["NOT", "OR", "NOT", *part, "NOT", *combined]
    return combined


def _charset(keys: Sequence[Any]) -> str | None:
    return "UTF-8" if any(isinstance(k, bytes) and not k.isascii() for k in keys) else None


def _body(data: Mapping[bytes, Any]) -> bytes:
    """The BODY[...] item of a FETCH answer, whatever section spelling the server echoed."""
    for key, value in data.items():
        if key.startswith(b"BODY["):
            return value or b""
    return b""


class ImapConnector(Connector):
    """Reads and manages mail over IMAP (SPEC section 4, "imap and pop3")."""

    type: ClassVar[str] = "imap"
    description: ClassVar[str] = "Read mail over IMAP"
    config_schema: ClassVar[dict[str, Any]] = mailbox.CONFIG_SCHEMA
    default_action: ClassVar[str] = "list"
    request_overridable: ClassVar[frozenset[str]] = mailbox.REQUEST_OVERRIDABLE
    request_schemas: ClassVar[dict[str, dict[str, Any]]] = {
        "list": _schema("folder", "max", "sort-by", "sort-order", "unseen"),
        "read": _schema("folder", "message-id", required=["message-id"]),
        "delete": _schema("folder", "message-id", required=["message-id"]),
        "search": _schema("folder", "criteria", "max", "sort-by", "sort-order", "unseen", required=["criteria"]),
        "move": _schema("message-id", "from-folder", "to-folder", required=["message-id", "to-folder"]),
    }

    def connect(self, host: str, port: int, *, tls: bool, context: ssl.SSLContext | None,
                timeout_s: float) -> IMAPClient:
        """Open the connection (implicit TLS when ``tls``); the one place a fake may stand in."""
        return IMAPClient(host, port, ssl=tls, ssl_context=context, timeout=timeout_s)

    # -- actions -------------------------------------------------------------------------------

    def action_list(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """The newest (by default) ``max`` messages of ``folder``: messageId, fromAddress, subject, size."""
        with self._session(request, call) as client:
            self._select(client, request.get("folder", "INBOX"), readonly=True)
            uids = self._choose(client, ["UNSEEN"] if request.get("unseen") else ["ALL"], request)
            fetched = self._fetch(client, uids, [b"RFC822.SIZE", b"BODY.PEEK[HEADER]"])
            return {"result": [mailbox.summary(_body(fetched[u]), fetched[u][b"RFC822.SIZE"])
                               for u in uids if u in fetched]}

    def action_search(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Messages of ``folder`` matching ``criteria`` (a server-side SEARCH): messageId, subject."""
        with self._session(request, call) as client:
            self._select(client, request.get("folder", "INBOX"), readonly=True)
            keys = (["UNSEEN"] if request.get("unseen") else []) + search_key(request["criteria"])
            uids = self._choose(client, keys, request)
            fetched = self._fetch(client, uids, [b"BODY.PEEK[HEADER]"])
            return {"result": [mailbox.search_hit(_body(fetched[u])) for u in uids if u in fetched]}

    def action_read(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """The whole message with ``message-id`` (the first copy), without setting \\Seen."""
        with self._session(request, call) as client:
            folder = request.get("folder", "INBOX")
            self._select(client, folder, readonly=True)
            uid = self._find(client, request["message-id"], folder)[0][0]
            data = client.fetch([uid], [b"BODY.PEEK[]", b"INTERNALDATE", b"RFC822.SIZE"]).get(uid)
            if data is None:
                raise NotFound(f"message {request['message-id']} not found in folder {folder}")
            received: datetime | None = data.get(b"INTERNALDATE")
            limit = request.get("attachment-content-limit", mailbox.ATTACHMENT_CONTENT_LIMIT)
            details = mailbox.message_details(_body(data), size=data[b"RFC822.SIZE"], received=received,
                                              content_limit=limit)
            return {"result": details}

    def action_delete(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Delete (flag and expunge) every copy of ``message-id`` in ``folder``."""
        with self._session(request, call) as client:
            folder = request.get("folder", "INBOX")
            self._select(client, folder, readonly=False)
            found = self._find(client, request["message-id"], folder)
            uids = [uid for uid, _ in found]
            client.delete_messages(uids)
            self._expunge(client, uids)
            logger.info("imap %s: deleted %d message(s) %s from %s", self.name, len(uids), found[0][1], folder)
            return {"result": {"deleted": True, "messageId": found[0][1]}}

    def action_move(self, request: Mapping[str, Any], call: ConnectorCall) -> dict[str, Any]:
        """Move every copy of ``message-id`` from ``from-folder`` (default INBOX) to ``to-folder``."""
        source, target = request.get("from-folder", "INBOX"), request["to-folder"]
        with self._session(request, call) as client:
            source_name, target_name = self._folder_name(client, source), self._folder_name(client, target)
            if source_name == target_name:
                raise InvalidRequest(f"'from-folder' and 'to-folder' are the same folder: {source}")
            self._select(client, source, readonly=False)
            found = self._find(client, request["message-id"], source)
            uids = [uid for uid, _ in found]
            self._create_missing(client, target)
            if client.has_capability("MOVE"):
                client.move(uids, target_name)
            else:
                client.copy(uids, target_name)
                client.delete_messages(uids)
                self._expunge(client, uids)
            logger.info("imap %s: moved %s from %s to %s", self.name, found[0][1], source, target)
            return {"result": {"messageId": found[0][1], "from": source, "to": target}}

    # -- session and errors --------------------------------------------------------------------

    @contextmanager
    def _session(self, settings: Mapping[str, Any], call: ConnectorCall) -> Iterator[IMAPClient]:
        """A logged-in client; every library error inside is translated here, most specific first."""
        host, security = settings["target"], settings.get("security", "starttls")
        port = settings.get("port") or (993 if security == "tls" else 143)
        timeout_ms = min(settings.get("timeout", call.timeout_ms), call.timeout_ms)
        username = settings["username"]
        require_safe_auth(settings, encrypted=security != "none")
        context = ssl_context(settings) if security != "none" else None
        client: IMAPClient | None = None
        try:
            client = self.connect(host, port, tls=security == "tls", context=context, timeout_s=timeout_ms / 1000)
            client.normalise_times = False  # keep INTERNALDATE's zone, so UTC is exact
            if security == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise ConnectFailed(f"STARTTLS not offered by {host}:{port}")
                client.starttls(context)
            try:
                client.login(username, settings["password"].reveal())
            except imap_errors.LoginError as exc:
                reason = str(exc).strip()
                raise AuthFailed(f"IMAP authentication failed for user {username} on {host}:{port}: {reason}") \
                    from exc
            yield client
        except FlintError:
            raise
        except imap_errors.CapabilityError as exc:
            raise RemoteRefused(f"IMAP server {host}:{port}: {exc}") from exc
        except imap_errors.IMAPClientAbortError as exc:
            if isinstance(exc.__context__, TimeoutError):
                raise TimedOut(f"timed out after {timeout_ms} ms talking to {host}:{port}") from exc
            raise ConnectFailed(f"connection to {host}:{port} lost: {exc}") from exc
        except imap_errors.IMAPClientError as exc:
            raise RemoteRefused(f"IMAP server {host}:{port} refused: {exc}") from exc
        except (OSError, ssl.SSLError, EOFError) as exc:
            raise translate_connect_error(exc, host, port, timeout_ms=timeout_ms) from exc
        finally:
            if client is not None:
                self._logout(client)

    @staticmethod
    def _logout(client: IMAPClient) -> None:
        try:
            client.logout()
        except (imap_errors.IMAPClientError, OSError, EOFError):
            try:
                client.shutdown()
            except (imap_errors.IMAPClientError, OSError):
                pass

    # -- folders and messages ------------------------------------------------------------------

    def _folder_name(self, client: IMAPClient, path: str) -> str:
        """The server's name for a dot-separated ``path``, joined with the hierarchy delimiter."""
        segments = path.split(".")
        if segments[0].upper() == "INBOX":
            segments[0] = "INBOX"
        if len(segments) == 1:
            return segments[0]
        listed = client.list_folders("", "")
        delimiter = listed[0][1] if listed and listed[0][1] else None
        if delimiter is None:
            raise InvalidRequest(f"folder {path}: the IMAP server has no folder hierarchy")
        delimiter = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
        return delimiter.join(segments)

    def _select(self, client: IMAPClient, path: str, *, readonly: bool) -> None:
        name = self._folder_name(client, path)
        try:
            client.select_folder(name, readonly=readonly)
        except imap_errors.IMAPClientError as exc:
            if not client.folder_exists(name):
                raise NotFound(f"folder {path} not found") from exc
            raise

    def _create_missing(self, client: IMAPClient, path: str) -> None:
        segments = path.split(".")
        for depth in range(1, len(segments) + 1):
            level = ".".join(segments[:depth])
            name = self._folder_name(client, level)
            if not client.folder_exists(name):
                client.create_folder(name)
                client.subscribe_folder(name)
                logger.info("imap %s: created folder %s", self.name, level)

    def _find(self, client: IMAPClient, message_id: str, folder: str) -> list[tuple[int, str]]:
        """``(uid, Message-ID)`` of every copy of ``message_id`` in the selected folder, in mailbox order."""
        if mailbox.is_synthetic(message_id):
            keys: list[Any] = ["NOT", "HEADER", "Message-ID", ""]
        else:
            bare = message_id.strip().strip("<>").strip()
            keys = ["HEADER", "Message-ID", _Literal(bare.encode("utf-8"))]
        candidates = sorted(client.search(keys, _charset(keys)))
        fetched = self._fetch(client, candidates, [b"BODY.PEEK[HEADER]"])
        found = []
        for uid in candidates:
            actual = mailbox.message_id_of(_body(fetched.get(uid, {})))
            if mailbox.same_message_id(actual, message_id):
                found.append((uid, actual))
        if not found:
            raise NotFound(f"message {message_id} not found in folder {folder}")
        return found

    def _choose(self, client: IMAPClient, keys: list[Any], request: Mapping[str, Any]) -> list[int]:
        """UIDs matching ``keys``, in the requested order, at most ``max`` of them."""
        sort_by = request.get("sort-by", "received-date")
        order = request.get("sort-order", "desc")
        limit = request.get("max", 100)
        charset = _charset(keys)
        if client.has_capability("SORT"):
            program = (["REVERSE"] if order == "desc" else []) + [_SORT_KEYS[sort_by]]
            return client.sort(program, keys, charset or "US-ASCII")[:limit]
        uids = sorted(client.search(keys, charset))
        item = {"sent-date": b"BODY.PEEK[HEADER.FIELDS (DATE)]", "received-date": b"INTERNALDATE",
                "size": b"RFC822.SIZE"}[sort_by]
        fetched = self._fetch(client, uids, [item, b"INTERNALDATE"] if sort_by == "sent-date" else [item])

        def key(uid: int) -> Any:
            data = fetched.get(uid, {})
            if sort_by == "sent-date":  # RFC 5256: the Date header, else INTERNALDATE
                return mailbox.sent_date(mailbox.parse_message(_body(data))) or data.get(b"INTERNALDATE")
            return data.get(b"RFC822.SIZE" if sort_by == "size" else b"INTERNALDATE")

        return mailbox.sort_in_order(uids, key, order)[:limit]

    @staticmethod
    def _fetch(client: IMAPClient, uids: Sequence[int], items: list[bytes]) -> dict[int, dict[bytes, Any]]:
        fetched: dict[int, dict[bytes, Any]] = {}
        for start in range(0, len(uids), _CHUNK):
            fetched.update(client.fetch(list(uids[start:start + _CHUNK]), items))
        return fetched

    @staticmethod
    def _expunge(client: IMAPClient, uids: list[int]) -> None:
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:  # plain EXPUNGE also removes messages others flagged \Deleted in this folder
            client.expunge()
