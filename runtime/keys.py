"""Every Redis key the runtime uses, as templates in one place under one prefix.

>>> k = Keys("flint")
>>> k.job("job-1"), k.queue("connector:smtp")
('flint:job:job-1', 'flint:queue:connector:smtp')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys", "BITS_QUEUE", "connector_queue", "GROUP"]

BITS_QUEUE = "bits"
GROUP = "workers"


def connector_queue(name: str) -> str:
    """The queue of direct and async requests to connector ``name``."""
    return f"connector:{name}"


@dataclass(frozen=True)
class Keys:
    """Key templates under ``prefix``."""

    prefix: str = "flint"

    def queue(self, name: str) -> str:
        """Stream of job entries for queue ``name`` (consumer group ``workers``)."""
        return f"{self.prefix}:queue:{name}"

    def job(self, jobid: str) -> str:
        """Hash: ``status``, ``meta`` and ``output`` (JSON), ``spec`` (JSON), ``worker``, ``entry``."""
        return f"{self.prefix}:job:{jobid}"

    def log(self, jobid: str) -> str:
        """List of the job's log lines (JSON)."""
        return f"{self.prefix}:log:{jobid}"

    def done(self, jobid: str) -> str:
        """Stream with one entry once the job has ended; waiters block on it with XREAD."""
        return f"{self.prefix}:done:{jobid}"

    def worker(self, worker_id: str) -> str:
        """Heartbeat key of a live worker (expires when the worker stops answering)."""
        return f"{self.prefix}:worker:{worker_id}"

    def wake(self, worker_id: str) -> str:
        """Stream a worker also blocks on, so that stopping it need not wait for its block to end."""
        return f"{self.prefix}:wake:{worker_id}"

    @property
    def workers(self) -> str:
        """Set of the ids of workers that have registered."""
        return f"{self.prefix}:workers"

    @property
    def queues(self) -> str:
        """Set of the names of the queues that exist."""
        return f"{self.prefix}:queues"

    @property
    def bits(self) -> str:
        """Hash of uploaded flintbits: ref -> JSON {source, version, username, timestamp}."""
        return f"{self.prefix}:bits"

    @property
    def bits_version(self) -> str:
        """Counter that gives every upload its version."""
        return f"{self.prefix}:bits:version"
