"""A real redis-server on a free loopback port, started and stopped by the tests.

``redis_server`` is one server for the whole session (tests keep apart by key prefix);
``RedisServer`` can also be started, stopped and restarted by a test that needs to (fault tests).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from tests.servers import dies_with_tests

INSTALL = "redis-server is not installed: apt-get install -y redis-server (or run: bash tests/run)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process with no persistence, on 127.0.0.1."""

    def __init__(self, port: int | None = None, *, persistent: bool = False) -> None:
        self.binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if self.binary is None:
            pytest.fail(INSTALL, pytrace=False)
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="flint-redis-")
        self.process: subprocess.Popen | None = None
        # persistent: an append-only file synced on every write, so a restart loses nothing.
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(
            dies_with_tests([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                             *self.persistence, "--dir", self.dir, "--protected-mode", "yes",
                             "--loglevel", "warning"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (its data is gone)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None

    def client(self) -> redis.Redis:
        """A client of this server (text replies)."""
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the session."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_project(tmp_path, monkeypatch, redis_server):
    """A Flint project (see tests.project) whose queue is the real Redis."""
    from tests.project import Project

    monkeypatch.chdir(tmp_path)
    for name in ("FLINT_REDIS_URL", "FLINT_CONFIG", "FLINT_FLINTBITS"):
        monkeypatch.delenv(name, raising=False)
    project = Project(tmp_path, redis_url=redis_server.url)
    yield project
    project.close()
