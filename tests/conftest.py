"""Shared fixtures. Real servers (redis-server, aiosmtpd, Dovecot) live in tests/servers/."""

from __future__ import annotations

import pytest

from tests.project import Project

pytest_plugins = ["tests.servers.smtp", "tests.servers.dovecot", "tests.servers.redis", "tests.servers.workers"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A fresh Flint project in a temporary working directory, on the embedded queue."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLINT_REDIS_URL", raising=False)
    monkeypatch.delenv("FLINT_CONFIG", raising=False)
    monkeypatch.delenv("FLINT_FLINTBITS", raising=False)
    proj = Project(tmp_path)
    yield proj
    proj.close()
