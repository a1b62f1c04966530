"""What every mail connector shares about reaching a server: keys, TLS, and socket errors.

``security`` is ``none``, ``starttls`` or ``tls`` (implicit TLS, as on 465/993/995). ``starttls``
never falls back to plain text. Certificates are verified unless the config says
``tls-verify: false``; ``ca-file`` names a CA bundle to trust instead of the system's. Credentials
are not sent over plain text to a host off loopback unless ``allow-plaintext-auth: true``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import Any, Mapping

from runtime.errors import ConnectFailed, FlintError, Forbidden, TimedOut

__all__ = [
    "SERVER_PROPERTIES",
    "ssl_context",
    "is_loopback",
    "require_safe_auth",
    "translate_connect_error",
]

# JSON Schema properties shared by the config of every mail connector (and overridable per request).
SERVER_PROPERTIES: dict[str, Any] = {
    "target": {"type": "string", "minLength": 1, "description": "server host name or address"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "security": {"enum": ["none", "starttls", "tls"]},
    "username": {"type": "string"},
    "password": {"type": "string"},
    "timeout": {"type": "integer", "minimum": 1, "description": "ms"},
    "tls-verify": {"type": "boolean"},
    "ca-file": {"type": "string"},
    "allow-plaintext-auth": {"type": "boolean"},
}


def ssl_context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    """An SSL context for ``settings``: verified by default, ``ca-file`` trusted when given."""
    ca_file = settings.get("ca-file")
    try:
        context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise ConnectFailed(f"cannot load ca-file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from exc
    if settings.get("tls-verify", True) is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback name or address (credentials may go there in plain text)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_safe_auth(settings: Mapping[str, Any], *, encrypted: bool) -> None:
    """Refuse (-9) to send credentials in plain text to a host off loopback, unless allowed."""
    host = str(settings.get("target", ""))
    if encrypted or is_loopback(host) or settings.get("allow-plaintext-auth") is True:
        return
    raise Forbidden(
        f"refusing to send credentials in plain text to {host}: use security starttls or tls, "
        "or set allow-plaintext-auth: true"
    )


def translate_connect_error(exc: BaseException, host: str, port: int, *, timeout_ms: int) -> FlintError:
    """Map a socket or TLS error raised while connecting to the runtime's error (most specific first)."""
    where = f"{host}:{port}"
    if isinstance(exc, FlintError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailed(f"TLS certificate of {where} not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailed(f"TLS handshake with {where} failed: {exc.reason or exc}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TimedOut(f"timed out after {timeout_ms} ms talking to {where}")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"cannot resolve host {host}: {exc.strerror}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"connection refused: {where}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return ConnectFailed(f"connection to {where} closed by the server")
    if isinstance(exc, OSError):
        return ConnectFailed(f"cannot connect to {where}: {exc.strerror or exc}")
    return ConnectFailed(f"cannot connect to {where}: {exc}")
