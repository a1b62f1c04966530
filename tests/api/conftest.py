"""Fixtures for the REST API: users, an in-process app (TestClient) and a real uvicorn server."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Iterator

import httpx
import pytest
import uvicorn

from runtime.api import create_app
from runtime.auth import UserStore
from runtime.settings import Settings
from tests.servers.redis import free_port

with warnings.catch_warnings():  # starlette's TestClient warns about httpx; it still works with it
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

GREETING = """\
name = input.get("name", "world")
log.info(f"greeting {name}")
output.set("greeting", f"Hello, {name}!").set("type", input.type).set("raw", input.raw())
"""


@dataclass
class Credentials:
    """An admin and a plain user, each with a password and a flint-key."""

    admin_key: str
    user_key: str
    admin_password: str = "admin-pass-1"
    user_password: str = "ops-pass-1"

    def admin(self) -> dict[str, str]:
        """Headers of the admin (by flint-key)."""
        return {"flint-key": self.admin_key}

    def user(self) -> dict[str, str]:
        """Headers of the plain user (by flint-key)."""
        return {"flint-key": self.user_key}


@pytest.fixture
def creds(project) -> Credentials:
    """``admin`` (role admin) and ``ops`` (role user) in the project's users file; box:bit.py exists."""
    project.bit("box:bit.py", GREETING)
    store = UserStore(project.config_dir / "users.yaml")
    admin_key = store.add("admin", "admin", Credentials.admin_password)
    user_key = store.add("ops", "user", Credentials.user_password)
    return Credentials(admin_key, user_key)


def test_client(settings: Settings) -> TestClient:
    """An in-process client of a new app on ``settings`` (use it as a context manager)."""
    return TestClient(create_app(settings), raise_server_exceptions=False)


test_client.__test__ = False  # a helper, not a test


@pytest.fixture
def api(project, creds) -> Iterator[TestClient]:
    """The app on the project (embedded queue), in process, with its workers running."""
    with test_client(project.settings()) as client:
        yield client


class LiveServer:
    """A real uvicorn server with the app, on a free loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                   log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    def start(self) -> "LiveServer":
        """Start serving; returns once the server accepts connections."""
        self.thread.start()
        started = threading.Event()
        for _ in range(500):
            if self.server.started or not self.thread.is_alive():
                break
            started.wait(0.01)
        if not self.server.started:
            raise RuntimeError(f"uvicorn did not start on port {self.port}")
        return self

    def stop(self) -> None:
        """Shut down (the app's lifespan stops its workers)."""
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def live(project, creds) -> Iterator[LiveServer]:
    """A real uvicorn server with the app on the project."""
    server = LiveServer(project.settings()).start()
    yield server
    server.stop()


@pytest.fixture
def http(live) -> Iterator[httpx.Client]:
    """An httpx client of the live server (no credentials by default)."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client
