"""Hand-written SMTP servers on loopback that misbehave on purpose, for the smtp fault tests.

aiosmtpd answers every command properly; faults on the wire (a reset in the middle of DATA, a
close after the final ``.`` with no reply, a greeting dripped a byte at a time) need a server
written by hand. :class:`RawSmtpServer` is one, a thread per connection; the ``raw_smtp``
fixture (registered through :mod:`tests.servers.smtp`) starts them and stops them all.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.servers.smtp import Received

__all__ = ["RawBehaviour", "RawSmtpServer", "RawSmtpServers", "raw_smtp"]


@dataclass
class RawBehaviour:
    """How one connection to a :class:`RawSmtpServer` behaves (by default: a plain, correct server).

    ``close_at_once``: close the connection before the greeting. ``greeting``: a reply other than
    220 (``421 ...``), after which the connection is closed. ``reply_delay``: seconds before
    every reply. ``drip_greeting``: send the greeting one byte
    per that many seconds (a tarpit). ``mail_reply``: the reply to MAIL FROM instead of 250 (a
    ``421`` also closes the connection). ``drop_after``: during DATA read that many bytes of the
    message, then reset the connection. ``close_after_dot``: read the whole message and its
    ``.``, then close without replying. ``hang_after_dot``: read it all, then never reply.
    ``stop_listening``: once this connection is accepted, accept no more (connections refused).
    """

    close_at_once: bool = False
    greeting: str | None = None
    reply_delay: float = 0.0
    drip_greeting: float | None = None
    mail_reply: str | None = None
    drop_after: int | None = None
    close_after_dot: bool = False
    hang_after_dot: bool = False
    data_reply: str = "250 2.0.0 Ok: queued"
    stop_listening: bool = False


class RawSmtpServer:
    """A hand-written SMTP server on loopback (a thread per connection) that misbehaves on cue.

    Connection *n* follows ``behaviours[n]`` (the last one for every later connection).
    ``connections`` counts accepted connections, ``transactions`` MAIL FROM commands, ``dots``
    messages read up to their final ``.`` (answered or not); ``received`` holds those answered 250.
    Its sockets have a small receive buffer, so a large message cannot sit whole in kernel
    buffers: a connection reset mid-DATA reaches the sender while it is still sending.
    """

    host = "127.0.0.1"

    def __init__(self, behaviours: list[RawBehaviour]) -> None:
        self.behaviours = behaviours or [RawBehaviour()]
        self.received: list[Received] = []
        self.connections = self.transactions = self.dots = 0
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # inherited by accepted sockets
        self.listener.bind((self.host, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def config(self, **extra: Any) -> dict[str, Any]:
        """A connector config pointing at this server (plain SMTP)."""
        return {"target": self.host, "port": self.port, "security": "none", **extra}

    def _accept(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            behaviour = self.behaviours[min(self.connections, len(self.behaviours) - 1)]
            self.connections += 1
            self._sockets.append(conn)
            thread = threading.Thread(target=self._serve_quietly, args=(conn, behaviour), daemon=True)
            self._threads.append(thread)
            thread.start()
            if behaviour.stop_listening:
                self.listener.close()
                return

    def _serve_quietly(self, conn: socket.socket, behaviour: RawBehaviour) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._serve(conn, behaviour)
        with contextlib.suppress(OSError):
            conn.close()

    def _serve(self, conn: socket.socket, b: RawBehaviour) -> None:
        reader = conn.makefile("rb")

        def reply(text: str) -> None:
            if b.reply_delay:
                self._stop.wait(b.reply_delay)
            conn.sendall(text.replace("\n", "\r\n").encode() + b"\r\n")

        if b.close_at_once:
            return
        if b.greeting is not None:
            reply(b.greeting)
            return
        greeting = b"220 raw.localhost ESMTP a very slow greeting indeed\r\n"
        if b.drip_greeting is not None:
            for index in range(len(greeting) - 1):  # never the final byte: the reply never ends
                conn.sendall(greeting[index:index + 1])
                if self._stop.wait(b.drip_greeting):
                    return
            self._stop.wait()
            return
        reply(greeting.decode().rstrip())
        mail_from, rcpt_tos = "", []
        while not self._stop.is_set():
            line = reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                reply("250-raw.localhost\n250 8BITMIME")
            elif verb == b"MAIL":
                self.transactions += 1
                if b.mail_reply:
                    reply(b.mail_reply)
                    if b.mail_reply.startswith("421"):
                        return
                    continue
                mail_from, rcpt_tos = line.decode().split(":", 1)[1].strip().strip("<>"), []
                reply("250 OK")
            elif verb == b"RCPT":
                rcpt_tos.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                reply("250 OK")
            elif verb == b"DATA":
                reply("354 go ahead")
                if b.drop_after is not None:
                    reader.read(b.drop_after)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    reader.close()
                    conn.close()
                    return
                lines: list[bytes] = []
                while (data := reader.readline()) != b".\r\n":
                    if not data:
                        return
                    lines.append(data[1:] if data.startswith(b".") else data)
                self.dots += 1
                if b.close_after_dot:
                    reader.close()
                    conn.close()
                    return
                if b.hang_after_dot:
                    self._stop.wait()
                    return
                reply(b.data_reply)
                if b.data_reply.startswith("250"):
                    self.received.append(Received(mail_from, rcpt_tos, b"".join(lines)))
            elif verb in (b"RSET", b"NOOP", b"HELO"):
                reply("250 OK")
            elif verb == b"QUIT":
                reply("221 bye")
                return
            else:
                reply("500 unknown command")

    def stop(self) -> None:
        """Stop accepting, end every connection (waking the ones left hanging)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for conn in self._sockets:
            with contextlib.suppress(OSError):
                conn.close()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


class RawSmtpServers:
    """Starts :class:`RawSmtpServer` instances; stops them all at teardown."""

    def __init__(self) -> None:
        self._running: list[RawSmtpServer] = []

    def start(self, *behaviours: RawBehaviour) -> RawSmtpServer:
        """A server whose connection *n* follows ``behaviours[n]`` (the last repeats)."""
        server = RawSmtpServer(list(behaviours))
        self._running.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server started here."""
        for server in self._running:
            server.stop()
        self._running.clear()


@pytest.fixture
def raw_smtp() -> Iterator[RawSmtpServers]:
    """A factory of misbehaving SMTP servers (:class:`RawSmtpServer`), stopped when the test ends."""
    servers = RawSmtpServers()
    try:
        yield servers
    finally:
        servers.stop_all()
