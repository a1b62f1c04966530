"""URL attachments: fetched over http(s) with the guards a fetch made on a worker needs.

The flintbit names the URL but the worker fetches it, from inside the operator's network. Without
guards ``http://169.254.169.254/`` (cloud metadata), ``http://127.0.0.1:6379/`` or an intranet
host would be read and mailed out. So every fetch:

- speaks http or https only, at every hop, and follows at most :data:`MAX_REDIRECTS` redirects
  (a redirect to ``file:``, ``ftp:`` or anything else is -9; one more redirect is -7);
- resolves the host of every hop once, checks *every* address it resolves to, and connects to a
  checked address, so a DNS answer that changes between the check and the connection (DNS
  rebinding) cannot slip through. Loopback, link-local, private (10/8, 172.16/12, 192.168/16,
  fc00::/7), unspecified, multicast, reserved and other non-global addresses are refused (-9,
  naming the host) unless the connector config says ``attachment-allow-private: true`` (any
  address) or lists the networks to allow (``attachment-allow-private: [10.1.2.0/24]``);
- ignores proxies from the environment (a proxy would make the checked address meaningless);
- sends credentials from the URL (``user:pw@``) as Basic auth to that URL's own origin only, never
  across a redirect to another origin, and never shows them (nor the query) in a message;
- reads the body up to ``attachment_size`` (-7) and ends, redirects and all, by the request's
  deadline (-6), however slowly the server sends.

>>> forbidden_kind("127.0.0.1"), forbidden_kind("::ffff:10.0.0.1"), forbidden_kind("93.184.216.34")
('loopback', 'private', None)
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import ipaddress
import logging
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.addresses import refuse_line_breaks
from connectors.transport import translate_connect_error
from runtime.errors import ConnectFailed, Forbidden, InvalidRequest, LimitExceeded, NotFound, RemoteRefused, TimedOut

if TYPE_CHECKING:
    from connectors.smtp.attachments import AttachmentRules

__all__ = ["Fetched", "fetch", "forbidden_kind", "display_url", "parse_allowed_networks", "MAX_REDIRECTS"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_USER_AGENT = "flint-runtime smtp connector"


@dataclass(frozen=True)
class Fetched:
    """A fetched body: the name the server or the URL gives it, its declared type, its bytes."""

    name: str
    declared_type: str
    data: bytes


def forbidden_kind(address: str) -> str | None:
    """The kind of address a fetch may not reach by default (``"loopback"``, ...), else None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


def parse_allowed_networks(value: Any) -> "bool | tuple[Network, ...]":
    """``attachment-allow-private``: True (any address), False, or networks (``10.1.2.0/24``, an address).

    >>> parse_allowed_networks(["10.1.2.0/24", "::1"])
    (IPv4Network('10.1.2.0/24'), IPv6Network('::1/128'))
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    try:
        return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
    except ValueError as exc:
        raise InvalidRequest(f"attachment-allow-private: {exc}") from exc


def display_url(url: str) -> str:
    """The URL without user info, query or fragment, which may carry credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        pass
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _DeadlineReader(io.RawIOBase):
    """Reads a socket, each read given only the time left before ``deadline``.

    It reads through the socket's own ``makefile`` object, which keeps the socket open while
    the response is read even after http.client has let go of the connection.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self.raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line, headers and body all arrive by ``deadline``."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _connect(addresses: list[tuple[Any, ...]], deadline: float) -> socket.socket:
    """A TCP connection to the first of the checked ``addresses`` that answers."""
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(left)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                break
    assert error is not None
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to addresses checked beforehand, never resolving the host again."""

    def __init__(self, host: str, port: int, *, addresses: list[tuple[Any, ...]], deadline: float) -> None:
        super().__init__(host, port)
        self.addresses, self.deadline = addresses, deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.deadline)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTP`, then TLS verified against the host name (SNI included)."""

    def __init__(self, host: str, port: int, *, addresses: list[tuple[Any, ...]], deadline: float) -> None:
        super().__init__(host, port, context=ssl.create_default_context())
        self.addresses, self.deadline = addresses, deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        sock = _connect(self.addresses, self.deadline)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise


def _allowed(ip: str, allow_private: "bool | tuple[Network, ...]") -> bool:
    if allow_private is True:
        return True
    if allow_private is False or not allow_private:
        return False
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allow_private)


def _checked_addresses(host: str, port: int, allow_private: "bool | tuple[Network, ...]",
                       via: str) -> list[tuple[Any, ...]]:
    """Resolve ``host`` once; refuse (-9) when any address is one a fetch may not reach."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if allow_private is not True:
        for address in addresses:
            ip = str(address[4][0])
            kind = forbidden_kind(ip)
            if kind is not None and not _allowed(ip, allow_private):
                shown = host if host == ip else f"{host} ({ip})"
                raise Forbidden(f"attachment host {shown} is a {kind} address{via}; the connector config "
                                "must allow it (attachment-allow-private)")
    return addresses


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _basic_auth(parts: urllib.parse.SplitResult) -> str | None:
    if parts.username is None:
        return None
    credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _read_body(response: http.client.HTTPResponse, name: str, rules: "AttachmentRules", shown: str) -> bytes:
    length = response.getheader("Content-Length", "")
    if length.isdigit():
        rules.check_size(name, int(length))
    body = io.BytesIO()  # getvalue() hands over its buffer: the body is held once, not as chunks + a join
    received = 0
    while received <= rules.limit_bytes:
        chunk = response.read(min(_CHUNK, rules.limit_bytes + 1 - received))
        if not chunk:
            break
        body.write(chunk)
        received += len(chunk)
    if received > rules.limit_bytes:
        raise LimitExceeded(f"attachment {name} is over the limit of {rules.limit_mb:g} MB ({shown})")
    return body.getvalue()


def fetch(url: str, rules: "AttachmentRules", field: str) -> Fetched:
    """GET ``url`` under the guards above; raise Forbidden (-9), LimitExceeded (-7), TimedOut (-6),
    NotFound (-3, HTTP 404/410), ConnectFailed (-4) or RemoteRefused (-1, other HTTP errors)."""
    deadline = rules.deadline if rules.deadline is not None else time.monotonic() + rules.timeout_s
    timeout_ms = round(rules.timeout_s * 1000)
    first = urllib.parse.urlsplit(url)
    auth, auth_origin = _basic_auth(first), _origin(first)
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(current)
        shown = display_url(current)
        host = parts.hostname or ""
        via = f" (redirected from {display_url(url)})" if hop else ""
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as exc:
            raise InvalidRequest(f"{field}: invalid port in {shown}") from exc
        if not host:
            raise InvalidRequest(f"{field}: no host in {shown}")
        try:
            addresses = _checked_addresses(host, port, rules.allow_private, via)
            kind = _PinnedHTTPS if parts.scheme.lower() == "https" else _PinnedHTTP
            connection = kind(host, port, addresses=addresses, deadline=deadline)
            try:
                headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
                if auth is not None and _origin(parts) == auth_origin:
                    headers["Authorization"] = auth
                target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                if response.status in _REDIRECTS:
                    location = (response.getheader("Location") or "").strip()
                    if not location:
                        raise RemoteRefused(f"attachment {shown}: HTTP {response.status} without a Location")
                    current = urllib.parse.urljoin(current, location)
                    scheme = urllib.parse.urlsplit(current).scheme.lower()
                    if scheme not in ("http", "https"):
                        raise Forbidden(f"attachment {shown} redirects to a {scheme or 'non-http'} URL; "
                                        "only http and https are followed")
                    continue
                if response.status in (404, 410):
                    raise NotFound(f"attachment not found: {shown} (HTTP {response.status})")
                if not 200 <= response.status < 300:
                    raise RemoteRefused(f"attachment {shown}: HTTP {response.status} {response.reason}")
                name = response.headers.get_filename() or urllib.parse.unquote(
                    parts.path.rsplit("/", 1)[-1]) or "attachment"
                refuse_line_breaks(name, f"{field} file name")
                data = _read_body(response, name, rules, shown)
                declared = response.headers.get_content_type() if "Content-Type" in response.headers else ""
            finally:
                connection.close()
        except TimeoutError as exc:
            raise TimedOut(f"timed out after {timeout_ms} ms fetching attachment {shown}") from exc
        except socket.gaierror as exc:
            raise ConnectFailed(f"cannot resolve host {host} of attachment {shown}: {exc.strerror}") from exc
        except http.client.HTTPException as exc:
            raise ConnectFailed(f"bad HTTP response for attachment {shown}: {type(exc).__name__}") from exc
        except OSError as exc:
            raise translate_connect_error(exc, host, port, timeout_ms=timeout_ms) from exc
        logger.debug("fetched attachment %s (%d bytes) from %s", name, len(data), shown)
        return Fetched(name, declared, data)
    raise LimitExceeded(f"attachment {display_url(url)}: more than {MAX_REDIRECTS} redirects")
