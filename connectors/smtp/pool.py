"""Idle SMTP connections kept for reuse, per server and credentials.

A bulk send from one flintbit, or many queued sends through one worker, would otherwise pay a TCP
connect, EHLO, STARTTLS and AUTH per message. After a completed transaction an SMTP session is
back in its initial state (RFC 5321 4.1.4), so the next MAIL FROM may follow on the same
connection. A connection is given back only after a transaction that ended cleanly; a failed one
is closed.

Before reuse a connection is checked: a socket that has become readable while idle holds a
``421`` or an EOF from a server that gave up on it (found without a round trip); one idle longer
than ``check_after_s`` is also asked ``NOOP``. Connections idle past ``max_idle_s`` or used
``max_uses`` times are closed.

>>> pool = SmtpPool()
>>> pool.take(("127.0.0.1", 25)) is None
True
"""

from __future__ import annotations

import logging
import select
import smtplib
import threading
import time
from typing import Hashable

__all__ = ["SmtpPool"]

logger = logging.getLogger(__name__)


class _Idle:
    __slots__ = ("smtp", "since", "uses")

    def __init__(self, smtp: smtplib.SMTP, since: float, uses: int) -> None:
        self.smtp, self.since, self.uses = smtp, since, uses


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except OSError:
        pass


class SmtpPool:
    """Per-process store of idle connections, keyed by server settings (thread-safe)."""

    def __init__(self, *, max_idle_s: float = 30.0, check_after_s: float = 5.0, max_per_key: int = 4,
                 max_uses: int = 1000) -> None:
        self.max_idle_s = max_idle_s
        self.check_after_s = check_after_s
        self.max_per_key = max_per_key
        self.max_uses = max_uses
        self._idle: dict[Hashable, list[_Idle]] = {}
        self._uses: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> smtplib.SMTP | None:
        """A healthy idle connection for ``key``, or None (the caller then opens one)."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                entry = idle.pop()
            age = time.monotonic() - entry.since
            if age > self.max_idle_s or not self._alive(entry.smtp, check=age > self.check_after_s):
                _close(entry.smtp)
                continue
            self._uses[id(entry.smtp)] = entry.uses
            return entry.smtp

    def give(self, key: Hashable, smtp: smtplib.SMTP) -> bool:
        """Keep ``smtp`` for reuse after a clean transaction; False when the caller must close it."""
        uses = self._uses.pop(id(smtp), 0) + 1
        if uses >= self.max_uses or smtp.sock is None:
            return False
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) >= self.max_per_key:
                return False
            idle.append(_Idle(smtp, time.monotonic(), uses))
        return True

    def discard(self, key: Hashable) -> None:
        """Close the idle connections for ``key`` (after a server said 421 or dropped one: suspect)."""
        with self._lock:
            entries = self._idle.pop(key, [])
        for entry in entries:
            self._uses.pop(id(entry.smtp), None)
            _close(entry.smtp)

    def forget(self, smtp: smtplib.SMTP) -> None:
        """Drop the bookkeeping of a connection the caller is closing."""
        self._uses.pop(id(smtp), None)

    def close(self) -> None:
        """QUIT and close every idle connection."""
        with self._lock:
            entries = [entry for idle in self._idle.values() for entry in idle]
            self._idle.clear()
        for entry in entries:
            try:
                entry.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            _close(entry.smtp)

    @staticmethod
    def _alive(smtp: smtplib.SMTP, *, check: bool) -> bool:
        sock = smtp.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and not hasattr(sock, "pending"):
                return False  # nothing is owed to us between transactions: a 421 or an EOF
            # On TLS a readable socket may only hold a session ticket; ask the server instead.
            if check or readable:
                code, _ = smtp.noop()
                return code == 250
            return True
        except (smtplib.SMTPException, OSError, ValueError):
            return False
