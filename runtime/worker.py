"""A worker: takes jobs from its queues and runs them, one at a time, in its child process.

``flint worker`` serves the flintbit queue and every connector queue; ``--connectors smtp`` serves
only those connectors. While it waits and while its child runs a job, the worker refreshes its
heartbeat and settles the jobs of workers whose heartbeat has expired (see
:meth:`runtime.queue.JobQueue.recover`), so a job is never left ``running`` by a dead worker for
longer than ``worker.lost-after`` plus one heartbeat.
"""

from __future__ import annotations

import logging
import os
from collections import deque
import socket
import threading
import time
import uuid
from typing import Any, Sequence

from runtime.child import ChildProcess
from runtime.envelope import envelope, failure, new_job_id, now_ms
from runtime.errors import FlintError, InternalError, QueueUnavailable
from runtime.execution import JobSpec
from runtime.keys import BITS_QUEUE, connector_queue
from runtime.queue import Delivery, Finished, JobQueue
from runtime.registry import ConnectorRegistry
from runtime.settings import Settings
from runtime.store import FlintbitStore, Script, parse_ref

__all__ = ["Worker", "RETRYABLE_MARKER", "new_spec"]

logger = logging.getLogger(__name__)

RETRYABLE_MARKER = "# flint: retryable"
LOG_HOLD = 200  # log lines of the running job held back to go out with its result


def new_spec(settings: Settings, kind: str, target: str, request: Any, timeout_ms: int | None,
             username: str = "", *, raw: str = "", content_type: str = "application/json") -> JobSpec:
    """A job spec for a flintbit (``kind="bit"``) or a connector request, checked and timed."""
    if kind == "bit":
        parse_ref(target)
    return JobSpec(
        jobid=new_job_id(), kind=kind, target=target, input=request, raw=raw, content_type=content_type,
        timeout=int(timeout_ms or settings.default_timeout), username=username,
        retryable=kind == "bit" and target in settings.retryable,
    )


def default_queues(settings: Settings, connectors: Sequence[str] | None) -> list[str]:
    """The queues a worker serves: bits and every configured connector, or just ``connectors``."""
    if connectors:
        return [connector_queue(name) for name in connectors]
    registry = ConnectorRegistry.load(settings.config_dir / "connectors.yaml", settings.secret_resolver())
    return [BITS_QUEUE] + [connector_queue(name) for name in registry.specs]


class Worker:
    """One worker: a supervisor loop here, the jobs in a child process."""

    def __init__(self, settings: Settings, queue: JobQueue, queues: Sequence[str], *,
                 burst: bool = False, name: str | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.queues = list(queues)
        self.burst = burst
        self.id = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.child = ChildProcess(settings)
        self.store = FlintbitStore(settings.flintbit_dirs, queue.redis, queue.keys, queue.location)
        self.jobs_done = 0
        self._stop = threading.Event()
        self._current: JobSpec | None = None
        self._next_beat = 0.0
        self._next_recover = 0.0
        self._retryable: dict[tuple[str, str], bool] = {}
        self._log_backlog: deque[tuple[str, dict[str, Any]]] = deque()
        self._own_pending = True  # look for entries delivered to this worker's name before

    # -- the loop ----------------------------------------------------------------------------
    def stop(self, *, wake: bool = True) -> None:
        """Stop after the job now running (if any); ``wake`` ends a blocking read at once."""
        self._stop.set()
        if wake:
            try:
                self.queue.wake(self.id)
            except QueueUnavailable:
                pass

    def work(self) -> int:
        """Serve jobs until stopped (or, in burst mode, until the queues are empty)."""
        logger.info("worker %s serving %s", self.id, ", ".join(self.queues))
        backoff = 0.1
        finished: Finished | None = None  # stored by the next read, in the same round trip
        delivery: Delivery | None = None  # taken but not yet claimed (kept across a Redis outage)
        try:
            # The wake stream must exist before the first blocking read (see JobQueue.read).
            self.queue.wake(self.id)
        except QueueUnavailable as exc:
            logger.error("%s; will keep trying", exc.message)
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                    if delivery is None and self._own_pending:
                        if finished is not None:  # its entry is pending too, until the result is in
                            self.queue.store(finished)
                            finished = None
                        delivery = self.queue.own_pending(self.id, self.queues)
                        self._own_pending = delivery is not None
                    if delivery is None:
                        block = 0 if self.burst else int(self.settings.heartbeat_interval * 1000)
                        delivery = self.queue.read(self.id, self.queues, block, finished)
                        finished = None
                        if delivery is None:
                            if self.burst:
                                break
                            continue
                    claimed = self.queue.claim(delivery, self.id)
                    backoff = 0.1
                except QueueUnavailable as exc:
                    # After an outage every heartbeat may have expired: give the other workers
                    # lost-after to say they are alive before settling anybody's jobs.
                    self._next_recover = time.monotonic() + self.settings.lost_after
                    self._own_pending = True  # a delivery may have happened with its reply lost
                    logger.error("%s; retrying in %.1f s", exc.message, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                taken, delivery = delivery, None
                if claimed is None:
                    continue
                spec, uploaded = claimed
                result = self._run(spec, uploaded)
                # The job's last log lines go with its result, in the same round trip and first.
                finished = Finished(spec.jobid, result, self.id, taken.queue, taken.entry, self._take_logs(spec.jobid))
                self.jobs_done += 1
        finally:
            if finished is not None:
                self._store_result(finished)
            self.child.stop()
            try:
                self.queue.retire(self.id)
            except QueueUnavailable:
                pass
        return self.jobs_done

    def _run(self, spec: JobSpec, uploaded: dict[str, Any] | None) -> dict[str, Any]:
        """Run a claimed job in the child, with its flintbit's source sent along."""
        script = None
        if spec.kind == "bit":
            try:
                script = self.store.resolve(spec.target, uploaded)
            except FlintError as exc:
                return envelope(failure(spec.submitted_meta(), exc), {})
            if not spec.retryable and self._declares_retryable(script):
                self.queue.mark_retryable(spec.jobid)
        self._current = spec
        try:
            return self.child.run(spec, self, script)
        except FlintError:
            raise
        except Exception as exc:  # a bug here must end this job, not the worker
            logger.exception("job %s failed in the worker", spec.jobid)
            error = InternalError(f"internal error running the job: {type(exc).__name__}")
            return envelope(failure(spec.submitted_meta(), error), {})
        finally:
            self._current = None

    def _declares_retryable(self, script: Script) -> bool:
        key = (script.ref, script.version)
        found = self._retryable.get(key)
        if found is None:
            head = script.source.lstrip().splitlines()[:5]
            found = self._retryable[key] = any(line.strip() == RETRYABLE_MARKER for line in head)
        return found

    def _store_result(self, finished: Finished) -> None:
        """Store the result, retrying while Redis is away (the job ran; its result must not be lost)."""
        delay = 0.1
        give_up = time.monotonic() + max(self.settings.lost_after, 5.0)
        while True:
            try:
                self.queue.store(finished)
                return
            except QueueUnavailable as exc:
                if time.monotonic() > give_up:
                    logger.error("result of %s lost: %s", finished.jobid, exc.message)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- Services for the child ----------------------------------------------------------------
    def tick(self) -> None:
        """Heartbeat and recovery of lost workers' jobs, each when due (a Redis outage is waited out)."""
        try:
            self._tick()
        except QueueUnavailable as exc:
            self._next_recover = time.monotonic() + self.settings.lost_after
            logger.warning("heartbeat skipped: %s", exc.message)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._log_backlog and self._current is None:
            self._flush_logs()  # lines left behind by an outage
        if now >= self._next_beat:
            self.queue.heartbeat(self.id, {"queues": self.queues, "pid": os.getpid(),
                                           "job": self._current.jobid if self._current else ""})
            self._next_beat = now + self.settings.heartbeat_interval
        if now >= self._next_recover:
            for jobid, outcome in self.queue.recover():
                logger.warning("recovered %s: %s", jobid, outcome)
            self._next_recover = now + self.settings.heartbeat_interval

    def submit(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None,
               username: str) -> dict[str, Any]:
        """Queue an async call made by the running job."""
        return self.queue.submit(new_spec(self.settings, kind, target, request, timeout_ms, username))

    def wait(self, jobid: str, timeout_ms: int | None) -> dict[str, Any]:
        """Wait for a job the running job queued."""
        return self.queue.wait(jobid, timeout_ms)

    def script(self, ref: str) -> Script:
        """A flintbit's source, for a nested ``flintbit(ref).sync()`` of the running job."""
        return self.store.find(ref)

    def log(self, jobid: str, lines: list[dict[str, Any]]) -> None:
        """Keep the running job's log lines; while Redis is away they wait here, in order.

        Lines of the running job are held (at most ``LOG_HOLD`` lines or one second) so that
        most jobs' lines are written with their result, in the same round trip.
        """
        self._log_backlog.extend((jobid, line) for line in lines)
        oldest = self._log_backlog[0][1].get("ts", 0) if self._log_backlog else 0
        held_only_current = self._current is not None and all(j == self._current.jobid for j, _ in self._log_backlog)
        if not held_only_current or len(self._log_backlog) >= LOG_HOLD or now_ms() - oldest > 1000:
            self._flush_logs()

    def _take_logs(self, jobid: str) -> list[dict[str, Any]]:
        """The held lines of ``jobid`` if nothing older is waiting; else try to flush everything."""
        if any(j != jobid for j, _ in self._log_backlog):
            self._flush_logs()  # older lines first; if Redis is away they keep waiting, in order
        if all(j == jobid for j, _ in self._log_backlog):
            lines = [line for _, line in self._log_backlog]
            self._log_backlog.clear()
            return lines
        return []

    def _flush_logs(self) -> None:
        while self._log_backlog:
            jobid = self._log_backlog[0][0]
            batch = []
            while self._log_backlog and self._log_backlog[0][0] == jobid:
                batch.append(self._log_backlog.popleft()[1])
            try:
                self.queue.append_log(jobid, batch)
            except QueueUnavailable:
                self._log_backlog.extendleft((jobid, line) for line in reversed(batch))
                return
