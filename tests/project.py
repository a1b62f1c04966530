"""A throwaway Flint project for tests: config, flintbits, and a client on it."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import yaml

from runtime.client import FlintClient
from runtime.settings import Settings

DEFAULT_CONNECTORS: dict[str, Any] = {
    "connectors": {
        "smtp": {
            "type": "smtp",
            "description": "capture",
            "config": {"capture-dir": "var/mail", "from": "flint@localhost"},
        }
    }
}


class Project:
    """A config directory and a flintbits directory under ``root`` (the working directory)."""

    def __init__(self, root: Path, *, redis_url: str = "") -> None:
        self.root = root
        self.config_dir = root / "config"
        self.bits_dir = root / "flintbits"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.bits_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.redis_url = redis_url
        self._clients: list[FlintClient] = []
        self.flint({})
        self.connectors(DEFAULT_CONNECTORS)
        (self.config_dir / "global.yaml").write_text("team:\n  name: ops\n  members: [ada, bob]\n")

    def flint(self, extra: dict[str, Any]) -> None:
        """Write flint.yaml with a unique key prefix, short worker timings and ``extra`` merged in."""
        data: dict[str, Any] = {"redis": {"prefix": self.prefix, "url": self.redis_url},
                                "worker": {"lost-after": 3}, "flintbits": str(self.bits_dir)}
        for key, value in extra.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        (self.config_dir / "flint.yaml").write_text(yaml.safe_dump(data))

    def connectors(self, data: dict[str, Any]) -> None:
        """Write connectors.yaml."""
        (self.config_dir / "connectors.yaml").write_text(yaml.safe_dump(data))

    def bit(self, ref: str, source: str) -> str:
        """Write flintbit ``ref`` (``box:name.py``) with ``source`` (dedented); return the ref."""
        path = self.bits_dir.joinpath(*ref.split(":"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return ref

    def settings(self) -> Settings:
        """Settings read from this project's config (environment variables do not leak in)."""
        return Settings.load(self.config_dir, redis_url=self.redis_url, env={})

    def client(self, **kwargs: Any) -> FlintClient:
        """A client on this project (embedded unless a Redis URL was given); closed at teardown."""
        client = FlintClient(self.settings(), **kwargs)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Stop every client's in-process workers."""
        for client in self._clients:
            client.close()
