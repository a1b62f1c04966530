"""The front door the CLI and the REST API share: submit, wait, fetch results and logs, manage bits.

With a Redis URL it only talks to Redis (workers run elsewhere). Without one (the embedded
default) it also starts in-process workers on the first submission, so the same queue and worker
code path runs the job.
"""

from __future__ import annotations

import threading
from typing import Any

from runtime.embedded import EmbeddedWorkers
from runtime.queue import JobQueue, connect
from runtime.registry import ConnectorRegistry
from runtime.settings import Settings
from runtime.store import FlintbitStore
from runtime.worker import new_spec

__all__ = ["FlintClient", "SYNC_GRACE_MS"]

# A sync call waits this long past the job's timeout, so that an aborted job's envelope is final.
SYNC_GRACE_MS = 1500


class FlintClient:
    """Submits jobs and reads them back, for one process."""

    def __init__(self, settings: Settings, *, embedded_workers: int = 2) -> None:
        self.settings = settings
        self.queue = JobQueue(connect(settings), settings)
        self.store = FlintbitStore(settings.flintbit_dirs, self.queue.redis, self.queue.keys, self.queue.location)
        self._workers = EmbeddedWorkers(settings, embedded_workers) if settings.embedded else None
        self._registry: ConnectorRegistry | None = None
        self._lock = threading.Lock()

    def registry(self) -> ConnectorRegistry:
        """The connectors of ``connectors.yaml`` (loaded once)."""
        with self._lock:
            if self._registry is None:
                self._registry = ConnectorRegistry.load(self.settings.config_dir / "connectors.yaml",
                                                        self.settings.secret_resolver())
            return self._registry

    def start_workers(self) -> None:
        """In embedded mode, start the in-process workers (once)."""
        if self._workers is not None:
            self._workers.start()

    def reserve_connections(self, count: int) -> None:
        """Let ``count`` threads use the queue at once (redis-py's pool stops at 100 by default).

        A sync call holds a connection while it blocks, so a server with many waiting callers
        needs a pool at least as large as its thread pool.
        """
        pool = self.queue.redis.connection_pool
        pool.max_connections = max(pool.max_connections or 0, count)

    def close(self) -> None:
        """Stop in-process workers."""
        if self._workers is not None:
            self._workers.stop()

    def _submit(self, kind: str, target: str, body: Any, *, timeout_ms: int | None, username: str,
                wait: bool, raw: str = "", content_type: str = "application/json") -> dict[str, Any]:
        spec = new_spec(self.settings, kind, target, body, timeout_ms, username, raw=raw, content_type=content_type)
        meta = self.queue.submit(spec)
        self.start_workers()
        if not wait:
            return {"meta": meta}
        return self.queue.wait(spec.jobid, spec.timeout + SYNC_GRACE_MS)

    def run_bit(self, ref: str, body: Any = None, *, timeout_ms: int | None = None, username: str = "",
                wait: bool = True, raw: str = "", content_type: str = "application/json") -> dict[str, Any]:
        """Queue flintbit ``ref``; with ``wait`` return the envelope when it ends or times out."""
        self.store.find(ref)  # unknown flintbit: NotFound (-3) now, not a failed job later
        return self._submit("bit", ref, body if body is not None else {}, timeout_ms=timeout_ms,
                            username=username, wait=wait, raw=raw, content_type=content_type)

    def call_connector(self, name: str, request: dict[str, Any], *, timeout_ms: int | None = None,
                       username: str = "", wait: bool = True) -> dict[str, Any]:
        """Queue a direct request to connector ``name``."""
        self.registry().spec(name)
        return self._submit("connector", name, request, timeout_ms=timeout_ms, username=username, wait=wait)

    def result(self, jobid: str, wait_ms: int | None = None) -> dict[str, Any]:
        """A job's envelope now, or after waiting up to ``wait_ms`` for it to end."""
        if wait_ms:
            self.start_workers()
            return self.queue.wait(jobid, wait_ms)
        return self.queue.envelope(jobid)

    def logs(self, jobid: str) -> list[dict[str, Any]]:
        """A job's log lines."""
        return self.queue.logs(jobid)

    def connectors(self) -> list[dict[str, str]]:
        """``[{"name", "type", "description"}]`` with no config values."""
        return [spec.public() for spec in self.registry().specs.values()]

    def read_bit(self, ref: str) -> str:
        """A flintbit's source."""
        return self.store.find(ref).source
