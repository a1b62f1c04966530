"""Connection reuse in the smtp connector, against a real aiosmtpd server."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from connectors.base import ConnectorCall
from connectors.smtp import SmtpConnector
from runtime.errors import RemoteRefused
from tests.servers.smtp import RecordingHandler


class CountingHandler(RecordingHandler):
    """Also counts EHLO greetings: one per connection."""

    def __init__(self) -> None:
        super().__init__()
        self.greetings = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list) -> list:
        self.greetings += 1
        session.host_name = hostname
        return responses


def send(connector: SmtpConnector, n: int, **extra: Any) -> dict[str, Any]:
    return connector.run({"to": f"u{n}@example.com", "subject": f"n{n}", "body": "x", **extra},
                         ConnectorCall(timeout_ms=5000))


def test_consecutive_sends_share_one_connection(smtp_servers):
    handler = CountingHandler()
    server = smtp_servers.start(handler=handler)
    connector = SmtpConnector("smtp", server.config(**{"from": "f@example.com"}))
    for n in range(20):
        assert send(connector, n)["accepted"] == [f"u{n}@example.com"]
    assert handler.greetings == 1 and len(server.received) == 20
    assert [r.message["Subject"] for r in server.received] == [f"n{n}" for n in range(20)]
    connector.close()


def test_a_connection_the_server_dropped_is_replaced(smtp_servers):
    handler = CountingHandler()
    server = smtp_servers.start(handler=handler)
    connector = SmtpConnector("smtp", server.config(**{"from": "f@example.com"}))
    send(connector, 1)
    [[idle]] = connector.pool._idle.values()
    idle.smtp.sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
    assert send(connector, 2)["accepted"] == ["u2@example.com"]
    assert handler.greetings == 2 and len(server.received) == 2


def test_other_credentials_get_their_own_connection(smtp_servers):
    handler = CountingHandler()
    server = smtp_servers.start(handler=handler, users={"a": "pw-a", "b": "pw-b"})
    connector = SmtpConnector("smtp", server.config(**{"from": "f@example.com"}))
    send(connector, 1, username="a", password="pw-a")
    send(connector, 2, username="b", password="pw-b")
    send(connector, 3, username="a", password="pw-a")
    assert handler.greetings == 2 and len(server.received) == 3
    assert all("pw-" not in repr(key) for key in connector.pool._idle)


def test_a_failed_transaction_closes_its_connection(smtp_servers):
    handler = CountingHandler()
    handler.refuse_rcpt = {"u1@example.com": "550 5.1.1 <u1@example.com>: no such user"}
    server = smtp_servers.start(handler=handler)
    connector = SmtpConnector("smtp", server.config(**{"from": "f@example.com"}))
    with pytest.raises(RemoteRefused):
        send(connector, 1)
    assert send(connector, 2)["accepted"] == ["u2@example.com"]
    assert handler.greetings == 2
