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
knows where its message went without sharing memory with the server. The 250 comes only once
both files are written in full and synced: each is written under a temporary name
(``.<name>.eml.tmp``) and renamed into place, the ``.eml`` last. When storing fails (a full disk,
or any other OSError) the server answers ``452 4.3.1 insufficient storage (<reason>)``, a
transient refusal the sender retries and then reports (-1); no partial file is left behind.

>>> server = CaptureServer("/tmp/flint-capture-doctest")
>>> port = server.start()
>>> 0 < port < 65536
True
>>> server.stop()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
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

__all__ = ["CaptureServer", "StoreHandler", "FreePortController", "capture_server", "stop_capture_servers",
           "STORED_AS"]

logger = logging.getLogger(__name__)

# The text of the DATA reply before the stored file's name.
STORED_AS = "stored as "


class StoreHandler:
    """aiosmtpd handler writing each message and its envelope under ``directory``.

    :meth:`write` is the one place bytes reach the disk: a test stands in a failing one there.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to the new file ``path`` and sync it to the disk."""
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def store(self, name: str, raw: bytes, record: dict[str, Any]) -> None:
        """Store ``<name>.envelope.json`` then ``<name>.eml``, each complete or not at all."""
        envelope, eml = self.directory / f"{name}.envelope.json", self.directory / f"{name}.eml"
        temporary = [self.directory / f".{envelope.name}.tmp", self.directory / f".{eml.name}.tmp"]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.write(temporary[0], (json.dumps(record, indent=2) + "\n").encode())
            self.write(temporary[1], raw)
            os.replace(temporary[0], envelope)
            # The .eml last: a reader that sees it also finds its envelope.
            os.replace(temporary[1], eml)
        except OSError:
            for path in (*temporary, envelope):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        with contextlib.suppress(OSError):  # make the renames durable too, where the system allows it
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

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
        try:  # off the event loop: other sessions go on while this one writes and syncs
            await asyncio.get_running_loop().run_in_executor(None, self.store, name, raw, record)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            logger.error("capture server cannot store a message in %s: %s", self.directory, reason)
            return f"452 4.3.1 insufficient storage ({reason})"
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
        self.handler = StoreHandler(self.directory)

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
                self.handler,
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
