"""The capture SMTP server: a real SMTP endpoint on loopback that stores each message as a file.

A connector whose config names a ``capture-dir`` delivers to this server instead of a relay, so a
fresh clone runs the shipped smtp flintbit end to end with no external service. Delivery is a
real SMTP transaction (EHLO, MAIL FROM, RCPT TO, DATA) to an :mod:`aiosmtpd` server on a free
127.0.0.1 port, started on first use, once per process and directory (thread-safe).

Each message received becomes two files in the directory:

- ``<stamp>-<id>.eml``: the message exactly as received (raw bytes after SMTP dot-unstuffing);
- ``<stamp>-<id>.envelope.json``: the SMTP envelope, ``{"mail-from": ..., "rcpt-to": [...],
  "received": <ISO 8601 UTC>, "peer": "host:port"}`` (Bcc recipients appear only here).

The DATA reply names the stored file (``250 2.0.0 Ok: stored as <name>.eml``), so the sender
knows where its message went without sharing memory with the server.

>>> server = CaptureServer("/tmp/flint-capture-doctest")
>>> port = server.start()
>>> 0 < port < 65536
True
>>> server.stop()
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["CaptureServer", "FreePortController", "capture_server", "stop_capture_servers", "STORED_AS"]

logger = logging.getLogger(__name__)

# The text of the DATA reply before the stored file's name.
STORED_AS = "stored as "


class _StoreHandler:
    """aiosmtpd handler writing each message and its envelope under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = datetime.now(timezone.utc)
        name = f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}"
        raw = envelope.original_content or b""
        record: dict[str, Any] = {
            "mail-from": envelope.mail_from,
            "rcpt-to": list(envelope.rcpt_tos),
            "received": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "peer": "%s:%s" % tuple(session.peer[:2]) if session.peer else "",
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{name}.envelope.json").write_text(json.dumps(record, indent=2) + "\n")
            # The .eml last: a reader that sees it also finds its envelope.
            (self.directory / f"{name}.eml").write_bytes(raw)
        except OSError as exc:
            logger.error("capture server cannot store a message in %s: %s", self.directory, exc.strerror)
            return "451 4.3.0 cannot store the message"
        logger.info("captured message %s.eml for %d recipients", name, len(envelope.rcpt_tos))
        return f"250 2.0.0 Ok: {STORED_AS}{name}.eml"


class FreePortController(Controller):
    """An aiosmtpd Controller that accepts ``port=0`` and learns the port the system chose.

    (aiosmtpd's own Controller connects to the requested port to check the server is up.)
    """

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class CaptureServer:
    """An aiosmtpd server on ``127.0.0.1`` that stores each message it receives under ``directory``.

    ``start()`` returns the port (a free one unless ``port`` is given); ``stop()`` ends it.
    """

    host = "127.0.0.1"

    def __init__(self, directory: str | os.PathLike[str], port: int = 0) -> None:
        self.directory = Path(directory).resolve()
        self._requested_port = port
        self._controller: Controller | None = None

    @property
    def port(self) -> int:
        """The port the server listens on; 0 when it is not running."""
        return self._controller.port if self._controller is not None else 0

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._controller is not None

    def start(self) -> int:
        """Start listening (idempotent) and return the port."""
        if self._controller is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            controller = FreePortController(
                _StoreHandler(self.directory),
                hostname=self.host,
                port=self._requested_port,
                server_hostname="flint-capture.localhost",
                data_size_limit=None,
                ready_timeout=10.0,
            )
            controller.start()
            self._controller = controller
            logger.info("capture SMTP server on %s:%d stores mail in %s", self.host, self.port, self.directory)
        return self.port

    def stop(self) -> None:
        """Stop listening (idempotent)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()


_servers: dict[Path, CaptureServer] = {}
_lock = threading.Lock()


def capture_server(directory: str | os.PathLike[str]) -> CaptureServer:
    """The running capture server of this process for ``directory``, started on first use.

    Relative directories resolve against the current working directory.
    """
    path = Path(directory).resolve()
    with _lock:
        server = _servers.get(path)
        if server is None or not server.running:
            server = CaptureServer(path)
            server.start()
            _servers[path] = server
        return server


@atexit.register
def stop_capture_servers() -> None:
    """Stop every capture server this process started (also run at exit)."""
    with _lock:
        for server in _servers.values():
            server.stop()
        _servers.clear()


def _forget_parent_servers() -> None:
    # A forked child has none of the parent's server threads (and maybe a lock held by one of
    # them): start afresh, without touching the parent's servers.
    global _lock
    _lock = threading.Lock()
    _servers.clear()


os.register_at_fork(after_in_child=_forget_parent_servers)
