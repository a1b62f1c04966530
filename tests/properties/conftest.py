"""Fixtures of the property tests: one real aiosmtpd server per module, reset between examples."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.servers.smtp import SmtpServer, SmtpServers


@pytest.fixture(scope="module")
def mail_server() -> Iterator[SmtpServer]:
    """A plain aiosmtpd server on loopback for a whole module (hypothesis runs many examples)."""
    servers = SmtpServers()
    server = servers.start()
    try:
        yield server
    finally:
        servers.stop_all()
