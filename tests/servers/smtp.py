"""Fixtures for real SMTP servers on loopback (aiosmtpd), for the smtp connector's tests.

Every server listens on a free 127.0.0.1 port and is stopped when its test ends. Tests talk to
it over the real protocol and assert on :class:`Received` records: the SMTP envelope
(``mail_from``, ``rcpt_tos``) and the raw bytes of each message.

- ``smtp_server``: plain SMTP, no TLS, no AUTH.
- ``smtp_servers``: a factory, ``smtp_servers.start(tls=..., implicit_tls=..., users=...)``.
- ``smtp_ca``: a trustme CA and its PEM file (``smtp_ca.ca_file``), with a certificate for
  127.0.0.1 and localhost (``smtp_ca.server_context()``).
- ``raw_smtp`` (from :mod:`tests.servers.raw_smtp`): a factory of hand-written SMTP servers
  that misbehave on purpose (drop the connection mid-DATA, close after the final ``.`` without
  replying, answer slowly, drip the greeting a byte at a time):
  ``raw_smtp.start(RawBehaviour(...), ...)``, one behaviour per connection in order.
- ``silent_server``: (host, port) of a socket that accepts and never answers.
- ``closed_port``: (host, port) where nothing listens.
- ``http_files``: a local ``http.server`` serving a directory; ``http_files.url(name)``.
- ``attachments_dir``: the working directory is ``tmp_path`` and this is its ``var/attachments``
  (the connector's default attachment root).
- :func:`send`: run one ``send`` request through :class:`connectors.smtp.SmtpConnector`.

Nothing here skips: a missing package fails the test with the command that installs it.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import http.server
import importlib
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator

import pytest

INSTALL = "pip install -e '.[test]'  (aiosmtpd, trustme)"

# Config that lets URL attachments come from the test HTTP servers on 127.0.0.1 (off by default).
LOOPBACK_FETCHES = {"attachment-allow-private": True}


def require(module: str) -> Any:
    """Import ``module`` or fail the test saying how to install it (tests never skip)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - only on a machine missing test packages
        pytest.fail(f"{module} is not installed ({exc}); install it with: {INSTALL}", pytrace=False)


@dataclass
class Received:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        """The raw bytes parsed with the modern policy (decoded headers, ``get_content``)."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class RecordingHandler:
    """aiosmtpd handler that records each message; refusals are set per test.

    ``transactions`` counts MAIL FROM commands (0 means the connector sent nothing at all).
    ``refuse_rcpt`` maps an address to the reply for its RCPT TO (e.g. ``"550 5.1.1 <x@y>: no"``);
    ``refuse_mail`` / ``refuse_data`` are replies for MAIL FROM / DATA, every time.
    ``mail_replies`` / ``rcpt_replies`` / ``data_replies`` are replies used once each, in order,
    for the next MAIL FROM / RCPT TO / end of DATA (then the handler answers as usual): a server
    that is busy twice and then accepts is ``data_replies=["451 ...", "451 ..."]``.
    """

    received: list[Received] = field(default_factory=list)
    transactions: int = 0
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    refuse_mail: str | None = None
    refuse_data: str | None = None
    mail_replies: list[str] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    data_commands: int = 0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        self.transactions += 1
        if self.mail_replies:
            return self.mail_replies.pop(0)
        if self.refuse_mail:
            return self.refuse_mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        if self.refuse_data:
            return self.refuse_data
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued"


@dataclass
class SmtpServer:
    """A running test server: where it is, and what it received."""

    host: str
    port: int
    handler: RecordingHandler
    controller: Any

    @property
    def received(self) -> list[Received]:
        """Messages accepted so far, in order."""
        return self.handler.received

    def config(self, **extra: Any) -> dict[str, Any]:
        """A connector config pointing at this server (plain SMTP unless ``extra`` says otherwise)."""
        return {"target": self.host, "port": self.port, "security": "none", **extra}


class CertAuthority:
    """A trustme CA with a certificate for 127.0.0.1 and localhost."""

    def __init__(self, directory: Path) -> None:
        trustme = require("trustme")
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(directory / "test-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving the test certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context


class SmtpServers:
    """Starts aiosmtpd servers on free loopback ports; stops them all at teardown."""

    def __init__(self, ca: CertAuthority | None = None) -> None:
        self._ca = ca
        self._running: list[SmtpServer] = []

    def start(self, *, tls: bool = False, implicit_tls: bool = False,
              users: dict[str, str] | None = None, handler: RecordingHandler | None = None,
              size_limit: int | None = None) -> SmtpServer:
        """Start a server. ``tls`` offers STARTTLS, ``implicit_tls`` is TLS from the first byte,
        ``users`` ({login: password}) turns on AUTH (allowed over plain text, as on loopback),
        ``size_limit`` is the SIZE it advertises (bytes)."""
        require("aiosmtpd")
        from connectors.capture import FreePortController

        handler = handler or RecordingHandler()
        kwargs: dict[str, Any] = {"server_hostname": "test-smtp.localhost", "ready_timeout": 10.0}
        if tls or implicit_tls:
            assert self._ca is not None, "TLS servers need the smtp_ca fixture"
            context = self._ca.server_context()
            kwargs["ssl_context" if implicit_tls else "tls_context"] = context
        if size_limit is not None:
            kwargs["data_size_limit"] = size_limit
        if users is not None:
            kwargs.update(authenticator=functools.partial(_authenticate, users), auth_require_tls=False)
        controller = FreePortController(handler, hostname="127.0.0.1", port=0, **kwargs)
        controller.start()
        server = SmtpServer("127.0.0.1", controller.port, handler, controller)
        self._running.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server started here."""
        for server in self._running:
            server.controller.stop()
        self._running.clear()


def _authenticate(users: dict[str, str], server: Any, session: Any, envelope: Any,
                  mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    login = auth_data.login.decode()
    return AuthResult(success=users.get(login) == auth_data.password.decode(), handled=False)


def send(config: dict[str, Any], timeout_ms: int = 10000, log: list[tuple[str, str]] | None = None,
         **request: Any) -> dict[str, Any]:
    """Run a ``send`` request (keys with ``_`` for ``-``, e.g. ``reply_to``) through the connector.

    ``log``, when given, collects the ``(level, line)`` pairs the connector writes to the job's log.
    """
    from connectors.base import ConnectorCall
    from connectors.smtp import SmtpConnector

    keys = {k if k == "attachment_size" else k.replace("_", "-"): v for k, v in request.items()}
    call = ConnectorCall(jobid="job-test", timeout_ms=timeout_ms)
    if log is not None:
        call.log = lambda level, line: log.append((level, line))
    connector = SmtpConnector("smtp", config)
    try:
        return connector.run(keys, call)
    finally:
        connector.close()


@pytest.fixture
def attachments_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in ``tmp_path``; return its ``var/attachments`` (the default attachment root)."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "var" / "attachments"
    directory.mkdir(parents=True)
    return directory


@pytest.fixture(scope="session")
def smtp_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """A test CA (trustme) whose PEM file a connector can name as ``ca-file``."""
    return CertAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def smtp_servers(smtp_ca: CertAuthority) -> Iterator[SmtpServers]:
    """A factory of test SMTP servers, all stopped when the test ends."""
    servers = SmtpServers(smtp_ca)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def smtp_server(smtp_servers: SmtpServers) -> SmtpServer:
    """A plain SMTP server (no TLS, no AUTH) on a free loopback port."""
    return smtp_servers.start()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """(host, port) of a socket that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.fixture
def closed_port() -> tuple[str, int]:
    """(host, port) on loopback where nothing listens (connecting is refused)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return "127.0.0.1", port


class HttpFiles:
    """A local HTTP server (``http.server`` in a thread) serving ``directory`` on ``host``.

    Besides files it answers ``/redirect?to=URL`` (302 to URL), ``/hops/<n>/<name>`` (n redirects,
    then ``<name>``), ``/stream/<n>`` (n bytes, no Content-Length) and ``/drip/<n>`` (n bytes,
    one every 0.1 s). ``requests`` records (path, headers) of every request.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.requests: list[tuple[str, dict[str, str]]] = []
        handler = functools.partial(_QuietHandler, self.requests, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stream_url(self, size: int) -> str:
        """A URL answering ``size`` bytes without a Content-Length header."""
        return self.url(f"stream/{size}")

    def redirect_url(self, to: str) -> str:
        """A URL answering 302 with ``Location: to``."""
        return self.url("redirect?to=" + urllib.parse.quote(to, safe=""))

    def url(self, name: str) -> str:
        """The http:// URL of ``name`` under the served directory."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and the test paths of :class:`HttpFiles`."""

    def __init__(self, requests: list, *args: Any, **kwargs: Any) -> None:
        self.recorded = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.recorded.append((self.path, dict(self.headers.items())))
        path, _, query = self.path.partition("?")
        if path == "/redirect":
            self._redirect(urllib.parse.parse_qs(query)["to"][0])
        elif path.startswith("/hops/"):
            _, _, count, name = path.split("/", 3)
            self._redirect(f"/hops/{int(count) - 1}/{name}" if int(count) > 1 else f"/{name}")
        elif path.startswith(("/stream/", "/drip/")):
            size = int(path.rsplit("/", 1)[1])
            drip = path.startswith("/drip/")
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if drip:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            with contextlib.suppress(OSError):
                step = 1 if drip else 65536
                for start in range(0, size, step):
                    self.wfile.write(b"z" * min(step, size - start))
                    if drip:
                        self.wfile.flush()
                        time.sleep(0.1)
            self.close_connection = True
        else:
            super().do_GET()

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[HttpFiles]:
    """An HTTP server on loopback serving a fresh directory (``http_files.directory``)."""
    directory = tmp_path / "http"
    directory.mkdir()
    server = HttpFiles(directory)
    try:
        yield server
    finally:
        server.stop()


# The misbehaving servers' fixture, registered with this plugin (it needs Received, above).
from tests.servers.raw_smtp import raw_smtp  # noqa: E402,F401
