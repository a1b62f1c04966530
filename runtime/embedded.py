"""The embedded default: with no Redis URL, an in-process Redis (fakeredis) and in-process workers.

Jobs still go through :class:`runtime.queue.JobQueue` and :class:`runtime.worker.Worker` exactly as
they do on a real Redis; only the server is in memory and the workers are threads of this process
(each with its own child process for the jobs).
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

import fakeredis
import redis

from runtime.queue import JobQueue
from runtime.settings import Settings

__all__ = ["embedded_redis", "EmbeddedWorkers"]

logger = logging.getLogger(__name__)

_server: fakeredis.FakeServer | None = None
_lock = threading.Lock()


def embedded_redis() -> redis.Redis:
    """A client of this process's in-memory Redis (one server per process)."""
    global _server
    with _lock:
        if _server is None:
            _server = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=_server, decode_responses=True)


class EmbeddedWorkers:
    """Worker threads of this process, started on demand and stopped with :meth:`stop`."""

    def __init__(self, settings: Settings, count: int = 2, queues: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.count = count
        self.queues = queues
        self._workers: list = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers (once)."""
        from runtime.worker import Worker, default_queues  # the worker imports the queue, not this

        if self._threads:
            return
        queues = list(self.queues or default_queues(self.settings, None))
        for index in range(self.count):
            worker = Worker(self.settings, JobQueue(embedded_redis(), self.settings), queues,
                            name=f"embedded-{index}")
            thread = threading.Thread(target=worker.work, name=f"flint-embedded-worker-{index}", daemon=True)
            self._workers.append(worker)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers after their current jobs."""
        for worker in self._workers:
            worker.stop()
        for thread in self._threads:
            thread.join(timeout)
        self._workers.clear()
        self._threads.clear()
