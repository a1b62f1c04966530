"""Fixtures for a real Dovecot (IMAP and POP3) on loopback.

``dovecot`` starts one Dovecot per test session from a generated config in a temporary directory:
IMAP with STARTTLS, IMAPS, POP3 with STLS and POP3S, certificates issued by a trustme CA. Users
live in passwd-files, one per user (the path holds ``%u``), so a user added while Dovecot runs
is seen at once; each test gets a fresh user (``mail_account``) whose mailbox is seeded with
:data:`SEED` over IMAP APPEND (with INTERNALDATE), so tests that delete or move never disturb
each other. ``dovecot_plain`` is a second instance with ``ssl = no``, where STARTTLS is not offered.

Passwords are generated at run time and written only to the temporary passwd-file.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, Iterator

import pytest
import trustme
from imapclient import IMAPClient

from tests.servers import dies_with_tests

__all__ = ["DovecotServer", "MailAccount", "SeedMessage", "SEED", "SEED_BY_KEY", "SEED_FOLDERS", "INSTALL_HINT"]

DOVECOT = Path("/usr/sbin/dovecot")
INSTALL_HINT = "Dovecot is not installed: apt-get install -y dovecot-imapd dovecot-pop3d"


@dataclass(frozen=True)
class SeedMessage:
    """One message put into a fresh mailbox: where, its raw bytes, and its INTERNALDATE."""

    key: str
    folder: str
    raw: bytes
    received: datetime

    @property
    def size(self) -> int:
        """The size the server reports (RFC822.SIZE): the raw bytes, CRLF line ends."""
        return len(self.raw)


def _message(key: str, *, subject: str, sender: str, date: str, received: datetime, message_id: str | None,
             folder: str = "INBOX", build: Any = None) -> SeedMessage:
    msg = EmailMessage()
    msg["Received"] = f"from mx.example.org by mail.example.test; {received.strftime('%a, %d %b %Y %H:%M:%S +0000')}"
    msg["From"] = sender
    msg["To"] = "test@example.test"
    msg["Subject"] = subject
    msg["Date"] = date
    if message_id:
        msg["Message-ID"] = message_id
    build(msg)
    return SeedMessage(key, folder, msg.as_bytes(policy=SMTP), received)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def _plain(msg: EmailMessage) -> None:
    msg.set_content("Hello,\nthe quarterly report is attached to the next mail.\n")


def _html(msg: EmailMessage) -> None:
    msg.set_content("<html><body><p>La réunion est <b>à 10h</b>.</p>" + "<!-- pad -->" * 20 + "</body></html>",
                    subtype="html")


def _alternative(msg: EmailMessage) -> None:
    msg.set_content("Newsletter in plain text. Unsubscribe anytime.\n" + "More news.\n" * 30)
    msg.add_alternative("<html><body><h1>Newsletter</h1><p>in HTML</p></body></html>", subtype="html")


def _mixed(msg: EmailMessage) -> None:
    msg.set_content("See the attachments.\n")
    msg.add_attachment(b"id,amount\n1,10\n2,20\n", maintype="text", subtype="csv", filename="report.csv")
    msg.add_attachment(b"%PDF-1.4 fake " * 8, maintype="application", subtype="pdf", filename="résumé.pdf")
    msg.add_attachment(bytes(range(256)) * 16, maintype="application", subtype="octet-stream",
                       filename="big.bin")


def _no_id(msg: EmailMessage) -> None:
    msg.set_content("This message has no Message-ID header.\n")


def _archived(msg: EmailMessage) -> None:
    msg.set_content("Old news.\n")


# Dates differ per key so that each sort-by gives a different order:
#   sent-date asc:      mixed, html, alternative, plain, noid
#   received-date asc:  noid, alternative, mixed, plain, html
#   size asc:           noid, plain, html, alternative, mixed
SEED: list[SeedMessage] = [
    _message("plain", subject="Quarterly report", sender="Alice <alice@example.org>",
             date="Mon, 19 Aug 2024 08:54:28 +0200", received=_utc(2024, 8, 21, 10, 0, 0),
             message_id="<plain-1@example.org>", build=_plain),
    _message("html", subject="Réunion à 10h", sender="Bob Müller <bob@example.org>",
             date="Sat, 17 Aug 2024 09:00:00 +0000", received=_utc(2024, 8, 22, 9, 0, 0),
             message_id="<html-2@example.org>", build=_html),
    _message("alternative", subject="Newsletter: ünïcode ☃ edition", sender="news@example.com",
             date="Sun, 18 Aug 2024 12:00:00 +0000", received=_utc(2024, 8, 19, 7, 30, 0),
             message_id="<alt-3@example.com>", build=_alternative),
    _message("mixed", subject="Attachments (report)", sender="Carol <carol@example.net>",
             date="Fri, 16 Aug 2024 15:45:00 -0400", received=_utc(2024, 8, 20, 12, 0, 0),
             message_id="<mixed-4@example.net>", build=_mixed),
    _message("noid", subject="No id here", sender="dave@example.org",
             date="Tue, 20 Aug 2024 06:00:00 +0000", received=_utc(2024, 8, 18, 6, 0, 0),
             message_id=None, build=_no_id),
    _message("archived", subject="Archived note", sender="alice@example.org",
             date="Mon, 01 Jan 2024 00:00:00 +0000", received=_utc(2024, 1, 1, 0, 0, 1),
             message_id="<archived-5@example.org>", folder="Archive/2024", build=_archived),
    _message("draft", subject="Entwurf", sender="test@example.test",
             date="Tue, 02 Jan 2024 00:00:00 +0000", received=_utc(2024, 1, 2, 0, 0, 1),
             message_id="<draft-6@example.test>", folder="Entwürfe", build=_archived),
]
SEED_BY_KEY = {m.key: m for m in SEED}
SEED_FOLDERS = ["Archive", "Archive/2024", "Entwürfe"]


@dataclass
class DovecotServer:
    """A running Dovecot: its ports (``imap``, ``imaps``, ``pop3``, ``pop3s``), CA file and users."""

    root: Path
    ports: dict[str, int]
    ca_file: str | None
    tls: bool
    uid: int
    gid: int
    host: str = "127.0.0.1"
    _serial: int = field(default=0, repr=False)

    def add_user(self) -> "MailAccount":
        """Add a user with a fresh random password, in a passwd-file of its own (``users/<name>``)."""
        self._serial += 1
        username = f"user{self._serial}@example.test"
        password = secrets.token_urlsafe(18)
        home = self.root / "mail" / username
        entry = self.root / "users" / username
        entry.write_text(f"{username}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::\n", encoding="utf-8")
        entry.chmod(0o644)
        return MailAccount(self, username, password)


@dataclass
class MailAccount:
    """A user of a :class:`DovecotServer`; ``config()`` gives connector settings for it."""

    server: DovecotServer
    username: str
    password: str

    def config(self, protocol: str = "imap", security: str = "starttls", **extra: Any) -> dict[str, Any]:
        """Connector config for ``protocol`` (imap/pop3) over ``security`` (none/starttls/tls)."""
        port_name = protocol + ("s" if security == "tls" else "")
        config: dict[str, Any] = {
            "target": self.server.host,
            "port": self.server.ports[port_name],
            "security": security,
            "username": self.username,
            "password": self.password,
            "timeout": 10000,
        }
        if self.server.ca_file:
            config["ca-file"] = self.server.ca_file
        config.update(extra)
        return config

    def imap(self) -> IMAPClient:
        """A logged-in IMAPClient (plain text on loopback) for seeding and for checking results."""
        client = IMAPClient(self.server.host, self.server.ports["imap"], ssl=False, timeout=10)
        client.login(self.username, self.password)
        client.normalise_times = False
        return client

    def append(self, folder: str, raw: bytes, received: datetime) -> None:
        """Append one message to ``folder`` (created when missing) with INTERNALDATE ``received``."""
        with self.imap() as client:
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw, msg_time=received)

    def seed(self) -> None:
        """Create :data:`SEED_FOLDERS` and append :data:`SEED`."""
        with self.imap() as client:
            for folder in SEED_FOLDERS:
                client.create_folder(folder)
            for message in SEED:
                client.append(message.folder, message.raw, msg_time=message.received)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mail_owner() -> tuple[int, int, str]:
    """The uid/gid mail is stored as: ``nobody`` when run as root (CI), else the current user."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid, "dovenull"
    entry = pwd.getpwuid(os.geteuid())
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _config(root: Path, ports: dict[str, int], *, tls: bool, uid: int, gid: int, login_user: str) -> str:
    unprivileged = os.geteuid() != 0
    listeners = {
        "imap": ["imap"] + (["imaps"] if tls else []),
        "pop3": ["pop3"] + (["pop3s"] if tls else []),
    }
    services = []
    for protocol, names in listeners.items():
        blocks = "".join(
            f"  inet_listener {name} {{\n    address = 127.0.0.1\n    port = {ports[name]}\n"
            f"    ssl = {'yes' if name.endswith('s') else 'no'}\n  }}\n"
            for name in names
        )
        chroot = "  chroot =\n" if unprivileged else ""
        services.append(f"service {protocol}-login {{\n{blocks}{chroot}}}\n")
    ssl = (f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem\n" if tls else "ssl = no\n")
    # Unprivileged (a laptop): every process runs as the current user and nothing can chroot.
    internal = (f"default_internal_user = {login_user}\ndefault_internal_group = {grp.getgrgid(gid).gr_name}\n"
                if unprivileged else "")
    # mode 0 on anvil-auth-penalty turns off the growing delay after a failed login, which would
    # slow down every test after a wrong-password test.
    anvil = "service anvil {\n" + ("  chroot =\n" if unprivileged else "") + \
        "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
    return f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
{internal}first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users/%u
}}
{anvil}{''.join(services)}"""


def _logs(root: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in (root / "stderr.log", root / "dovecot.log")
                   if path.exists())


def _wait_for_ports(process: subprocess.Popen, ports: dict[str, int], root: Path) -> None:
    deadline = time.monotonic() + 15
    for port in ports.values():
        while True:
            if process.poll() is not None:
                pytest.fail(f"dovecot exited with {process.returncode}:\n{_logs(root)}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"dovecot did not listen on 127.0.0.1:{port}:\n{_logs(root)}", pytrace=False)
                time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _run_dovecot(*, tls: bool) -> Iterator[DovecotServer]:
    if not DOVECOT.exists():
        pytest.fail(INSTALL_HINT, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="flint-dovecot-"))
    try:
        # Login processes (dovenull) and mail processes (nobody) must reach into the directory.
        root.chmod(0o755)
        uid, gid, login_user = _mail_owner()
        (root / "mail").mkdir()
        os.chown(root / "mail", uid, gid)
        (root / "users").mkdir()
        ca_file = None
        if tls:
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(root / "ca.pem"))
            leaf = ca.issue_cert("127.0.0.1", "localhost")
            leaf.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
            leaf.private_key_pem.write_to_path(str(root / "key.pem"))
            ca_file = str(root / "ca.pem")
        names = ["imap", "pop3"] + (["imaps", "pop3s"] if tls else [])
        ports = {name: _free_port() for name in names}
        conf = root / "dovecot.conf"
        conf.write_text(_config(root, ports, tls=tls, uid=uid, gid=gid, login_user=login_user), encoding="utf-8")
        with open(root / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(dies_with_tests([str(DOVECOT), "-F", "-c", str(conf)]),
                                       stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            _wait_for_ports(process, ports, root)
            yield DovecotServer(root, ports, ca_file, tls, uid, gid)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot with TLS: ports ``imap`` (STARTTLS), ``imaps``, ``pop3`` (STLS), ``pop3s``."""
    yield from _run_dovecot(tls=True)


@pytest.fixture(scope="session")
def dovecot_plain() -> Iterator[DovecotServer]:
    """A Dovecot with ``ssl = no``: ports ``imap`` and ``pop3``, where STARTTLS is not offered."""
    yield from _run_dovecot(tls=False)


@pytest.fixture
def mail_account(dovecot: DovecotServer) -> MailAccount:
    """A fresh user on ``dovecot`` whose mailbox holds :data:`SEED`."""
    account = dovecot.add_user()
    account.seed()
    return account
