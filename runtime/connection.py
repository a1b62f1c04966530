"""Reaching Redis: the client for the settings, and one translation of its connection errors.

>>> from runtime.settings import Settings
>>> redis_location(Settings.load("config", redis_url="redis://:pw@db.example:6380/0", env={}))
'db.example:6380'
"""

from __future__ import annotations

import functools
import socket
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import redis

from runtime.errors import QueueUnavailable
from runtime.settings import Settings

__all__ = ["connect", "redis_location", "queue_errors"]

T = TypeVar("T")


def redis_location(settings: Settings) -> str:
    """``host:port`` of the Redis in ``settings`` (never the password of the URL), or ``embedded``."""
    if settings.embedded:
        return "embedded"
    parts = urlsplit(settings.redis_url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def connect(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings``: the real server, or the process's embedded one."""
    if settings.embedded:
        from runtime.embedded import embedded_redis

        return embedded_redis()
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=5,
        # No read timeout: waits block in Redis (XREAD BLOCK) for as long as a job may run;
        # redis-py 8 would otherwise give up on any reply after 5 s. Dead peers are found by
        # TCP keepalive and the health check before a connection is reused.
        socket_timeout=None,
        socket_keepalive=True,
        health_check_interval=15,
        retry_on_timeout=False,
    )


def queue_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Translate redis-py connection failures into QueueUnavailable (HTTP 503, a CLI message).

    The decorated method's object has a ``location`` attribute (see :func:`redis_location`).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, socket.timeout, ConnectionError) as exc:
            raise QueueUnavailable(f"queue unavailable: cannot reach Redis at {self.location}") from exc

    return wrapper
