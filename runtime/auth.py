"""API users and their credentials: the users file holds hashes only.

``config/users.yaml`` (``users-file`` in ``flint.yaml``), written by ``flint user add``::

    users:
      admin:
        role: admin                                  # admin | user
        password-hash: scrypt$16384$8$1$<salt>$<hash>  # absent for a key-only user
        key-hash: sha256$<hex>                       # sha256 of the flint-key

Passwords are hashed with scrypt and a random salt; a flint-key is a random 32-byte token
(``secrets.token_urlsafe``) of which only the sha256 is kept (the token itself has 256 bits of
entropy, so a slow hash adds nothing). Hashes are compared in constant time. The file is re-read
when it changes, so ``flint user add`` takes effect without a restart.

>>> verify_password("s3cret", hash_password("s3cret")), verify_password("guess", hash_password("s3cret"))
(True, False)
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runtime.configuration import parse_yaml
from runtime.errors import AuthFailed, ConfigError, Forbidden, InvalidRequest

__all__ = ["ROLES", "User", "Unauthorized", "UserStore", "hash_password", "verify_password", "new_key",
           "hash_key"]

ROLES = ("admin", "user")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")

# scrypt cost: 16 MiB and ~50 ms per hash; successful checks are remembered (see UserStore).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class Unauthorized(AuthFailed):
    """No credentials, or wrong ones, for the REST API (HTTP 401)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` for ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` scrypt hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_key() -> str:
    """A new flint-key: 32 random bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """``sha256$<hex>`` of a flint-key."""
    return "sha256$" + hashlib.sha256(key.encode()).hexdigest()


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user is unknown, so that a wrong name costs as much as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    """An API user: a name and a role; ``password_hash`` and ``key_hash`` as stored."""

    name: str
    role: str
    password_hash: str = ""
    key_hash: str = ""

    def require_admin(self, action: str) -> None:
        """Forbidden (-9) unless this user is an admin."""
        if self.role != "admin":
            raise Forbidden(f"only admin users may {action}; {self.name} has role {self.role}")


class UserStore:
    """The users file, read on first use and again whenever it changes (inode, size or mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._users: dict[str, User] = {}
        self._signature: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        # HMAC (process-random key) of name+password -> the hash it was verified against, so that
        # clients sending the password on every call do not pay scrypt each time.
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()

    # -- reading -----------------------------------------------------------------------------
    def users(self) -> dict[str, User]:
        """The users as the file now says (re-read if it changed; none if there is no file)."""
        try:
            stat = self.path.stat()
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature:
                self._users = self._read() if signature is not None else {}
                self._signature = signature
                self._verified.clear()
            return self._users

    def _read(self) -> dict[str, User]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the users file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{self.path}: not UTF-8 text (byte {exc.start})") from None
        data = parse_yaml(text, self.path) or {}  # its errors name the line, never quote it (hashes)
        entries = data.get("users") if isinstance(data, dict) else None
        if not isinstance(entries or {}, dict):
            raise ConfigError(f"{self.path}: must be a mapping with a 'users' mapping")
        users = {}
        for name, entry in (entries or {}).items():
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise ConfigError(f"{self.path}: users.{name}.role must be one of {', '.join(ROLES)}")
            users[str(name)] = User(str(name), entry["role"], str(entry.get("password-hash") or ""),
                                    str(entry.get("key-hash") or ""))
        return users

    # -- checking ----------------------------------------------------------------------------
    def authenticate(self, *, username: str | None = None, password: str | None = None,
                     key: str | None = None) -> User:
        """The user these credentials belong to; Unauthorized (401) otherwise.

        A flint-key wins over a name and password when both are given; a wrong one is refused
        (no fallback to the other form).
        """
        users = self.users()
        if not users:
            raise Unauthorized(f"no API users are configured ({self.path.name} is missing or empty): "
                               "add one with `flint user add NAME`")
        if key:
            digest = hash_key(key)
            found = None
            for user in users.values():  # every entry is compared, in constant time each
                if user.key_hash and hmac.compare_digest(user.key_hash, digest):
                    found = user
            if found is None:
                raise Unauthorized("invalid flint-key")
            return found
        if username is None and password is None:
            raise Unauthorized("authentication required: send the flint-key header, ?flint-key=, "
                               "or x-flint-username and x-flint-password")
        user = users.get(username or "")
        if user is None or not user.password_hash or not password:
            verify_password(password or "", _dummy_hash())
            raise Unauthorized("invalid username or password")
        if not self._password_ok(user, password):
            raise Unauthorized("invalid username or password")
        return user

    def _password_ok(self, user: User, password: str) -> bool:
        token = hmac.new(self._cache_key, f"{user.name}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if self._verified.get(token) == user.password_hash:
                self._verified.move_to_end(token)
                return True
        if not verify_password(password, user.password_hash):
            return False
        with self._lock:
            self._verified[token] = user.password_hash
            while len(self._verified) > 256:
                self._verified.popitem(last=False)
        return True

    # -- writing (flint user add) --------------------------------------------------------------
    def add(self, name: str, role: str = "user", password: str | None = None) -> str:
        """Create or replace user ``name``; return the new flint-key (shown once, kept as a hash)."""
        if not _NAME.match(name or ""):
            raise InvalidRequest(f"invalid user name {name!r}: use [A-Za-z0-9._@-], at most 64")
        if role not in ROLES:
            raise InvalidRequest(f"invalid role {role!r}: one of {', '.join(ROLES)}")
        key = new_key()
        entry: dict[str, Any] = {"role": role, "key-hash": hash_key(key)}
        if password:
            entry["password-hash"] = hash_password(password)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two `flint user add` at once must not lose a user
            data = {"users": {u.name: _entry(u) for u in self._read().values()}} if self.path.exists() else {}
            data.setdefault("users", {})[name] = entry
            self._write(data)
        return key

    def _write(self, data: dict[str, Any]) -> None:
        """Replace the file atomically, readable by its owner only."""
        fd, temp = tempfile.mkstemp(prefix=".users-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("# API users of the Flint runtime: hashes only (flint user add NAME)\n")
                yaml.safe_dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _entry(user: User) -> dict[str, str]:
    entry = {"role": user.role}
    if user.password_hash:
        entry["password-hash"] = user.password_hash
    if user.key_hash:
        entry["key-hash"] = user.key_hash
    return entry
