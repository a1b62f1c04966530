"""Jobs in Redis: submit, claim, finish, wait, logs, and recovery of jobs whose worker died.

Each queue is a Redis stream read by the consumer group ``workers``: an entry delivered to a worker
stays in the group's pending list until the worker acknowledges it, so a job whose worker dies is
never lost. The job itself is a hash whose ``status`` field is the authority: a worker may run a job
only by moving it from ``submitted`` to ``running`` (atomically, in Lua), and only the worker that
owns it may finish it. A job therefore runs at most once, unless its flintbit is declared retryable.

Waiting is blocking, not polling: when a job ends an entry is added to its ``done`` stream, and
waiters block on that stream with ``XREAD BLOCK``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable

import redis

from runtime.envelope import Status, envelope, failure, new_meta, now_ms
from runtime.connection import connect, queue_errors, redis_location
from runtime.errors import FlintError, InvalidRequest, NotFound, WorkerLost
from runtime.execution import JobSpec
from runtime.keys import BITS_QUEUE, GROUP, Keys, connector_queue
from runtime.settings import Settings

__all__ = ["JobQueue", "connect", "Delivery", "Finished", "error_envelope"]

logger = logging.getLogger(__name__)

# KEYS: job, uploaded bits hash. ARGV: worker, now. Returns {spec, uploaded record or ''} or false.
# Claiming again a job this worker already claimed succeeds: the first reply may have been lost
# (Redis went away after running the script), and the job has not run.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' and redis.call('HGET', KEYS[1], 'worker') == ARGV[1] then
  status = 'submitted'
end
if status ~= 'submitted' then return false end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started', ARGV[2])
local bit = redis.call('HGET', KEYS[1], 'bit')
local uploaded = ''
if bit and bit ~= '' then uploaded = redis.call('HGET', KEYS[2], bit) or '' end
return {redis.call('HGET', KEYS[1], 'spec'), uploaded}
"""

# KEYS: job, log, done, queue stream. ARGV: worker ('' = any owner), status, meta, output, ttl, entry id
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
local owned = status == 'running' and (ARGV[1] == '' or redis.call('HGET', KEYS[1], 'worker') == ARGV[1])
if ARGV[1] == '' and status == 'submitted' then owned = true end
if ARGV[6] ~= '' then
  redis.call('XACK', KEYS[4], 'workers', ARGV[6])
  redis.call('XDEL', KEYS[4], ARGV[6])
end
if not owned then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'meta', ARGV[3], 'output', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('XADD', KEYS[3], '*', 'status', ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
"""

# Requeue a job that never started or is retryable. KEYS: job, old queue stream. ARGV: entry, max attempts
_REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
redis.call('XACK', KEYS[2], 'workers', ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
if status ~= 'submitted' and status ~= 'running' then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if status == 'running' and attempts > tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], 'status', 'submitted', 'worker', '')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[3])
return 1
"""


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: str, other: str) -> bool:
    """True when stream id ``entry_id`` comes after ``other``."""
    return _id(entry_id) > _id(other)


def _last_delivered(groups: Any) -> str:
    """The ``workers`` group's last-delivered id, from XINFO GROUPS."""
    for group in groups or []:
        if group.get("name") == GROUP:
            return str(group.get("last-delivered-id") or "0-0")
    return "0-0"


def _entries(reply: Any) -> list[tuple[str, str, dict[str, str]]]:
    """An XREAD/XREADGROUP reply as ``[(stream, id, fields)]``, whichever shape (RESP2 list or
    RESP3 map) the client gave."""
    found = []
    for stream, entries in (reply.items() if isinstance(reply, dict) else reply or []):
        for entry in entries or []:
            if isinstance(entry, (list, tuple)) and len(entry) == 2:
                found.append((stream, entry[0], entry[1]))
    return found


class Finished:
    """A job's final envelope (and its last log lines), waiting to be stored (see :meth:`JobQueue.read`)."""

    __slots__ = ("jobid", "result", "worker_id", "queue", "entry", "logs")

    def __init__(self, jobid: str, result: dict[str, Any], worker_id: str, queue: str, entry: str,
                 logs: list[dict[str, Any]] | None = None) -> None:
        self.jobid, self.result, self.worker_id, self.queue, self.entry = jobid, result, worker_id, queue, entry
        self.logs = logs or []


class Delivery:
    """One stream entry handed to a worker."""

    __slots__ = ("queue", "entry", "jobid")

    def __init__(self, queue: str, entry: str, jobid: str) -> None:
        self.queue, self.entry, self.jobid = queue, entry, jobid


class JobQueue:
    """The runtime's view of Redis. One per process; thread-safe through redis-py's pool."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.location = redis_location(settings)
        self._groups: set[str] = set()
        self._sticky: dict[str, str] = {}  # consumer -> the stream that gave it its last job
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._requeue = client.register_script(_REQUEUE)

    # -- submitting and reading jobs -----------------------------------------------------------
    def _ensure_group(self, queue: str) -> None:
        if queue in self._groups:
            return
        try:
            self.redis.xgroup_create(self.keys.queue(queue), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.redis.sadd(self.keys.queues, queue)
        self._groups.add(queue)

    @queue_errors
    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self.redis.ping())

    @queue_errors
    def submit(self, spec: JobSpec) -> dict[str, Any]:
        """Queue ``spec``; return its meta (status ``submitted``)."""
        queue = BITS_QUEUE if spec.kind == "bit" else connector_queue(spec.target)
        try:
            encoded = spec.to_json()
        except (RecursionError, ValueError, TypeError) as exc:
            raise InvalidRequest(f"the input cannot be kept as JSON: {type(exc).__name__}") from None
        self._ensure_group(queue)
        meta = spec.submitted_meta()
        key = self.keys.job(spec.jobid)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"status": Status.SUBMITTED.value, "meta": json.dumps(meta),
                                "spec": encoded, "queue": queue, "output": "{}",
                                "retryable": "1" if spec.retryable else "",
                                "bit": spec.target if spec.kind == "bit" else ""})
        pipe.expire(key, self.settings.result_ttl + 7 * 86400)  # a job never taken still goes away
        pipe.xadd(self.keys.queue(queue), {"job": spec.jobid})
        pipe.execute()
        return meta

    @queue_errors
    def envelope(self, jobid: str) -> dict[str, Any]:
        """The envelope as it stands now; NotFound (-3) for an unknown or expired job."""
        record = self.redis.hmget(self.keys.job(jobid), "status", "meta", "output")
        if record[0] is None:
            raise NotFound(f"no such job: {jobid}")
        meta = json.loads(record[1])
        if not Status(meta["status"]).final:
            meta["status"] = record[0]
        return envelope(meta, json.loads(record[2] or "{}"))

    @queue_errors
    def logs(self, jobid: str) -> list[dict[str, Any]]:
        """The job's log lines ``[{"ts", "level", "message"}]``; NotFound for an unknown job."""
        lines = self.redis.lrange(self.keys.log(jobid), 0, -1)
        if not lines and not self.redis.exists(self.keys.job(jobid)):
            raise NotFound(f"no such job: {jobid}")
        return [json.loads(line) for line in lines]

    @queue_errors
    def append_log(self, jobid: str, lines: Iterable[dict[str, Any]]) -> None:
        """Add lines to the job's log."""
        pipe = self.redis.pipeline(transaction=False)
        if self._log_calls(pipe, jobid, list(lines)):
            pipe.execute()

    def _log_calls(self, pipe: Any, jobid: str, lines: list[dict[str, Any]]) -> bool:
        """Queue on ``pipe`` the commands that add ``lines`` to the job's log (two, or none)."""
        if not lines:
            return False
        pipe.rpush(self.keys.log(jobid), *[json.dumps(line) for line in lines])
        pipe.expire(self.keys.log(jobid), self.settings.result_ttl + 7 * 86400)
        return True

    @queue_errors
    def wait(self, jobid: str, timeout_ms: int | None) -> dict[str, Any]:
        """Block until the job ends or ``timeout_ms`` pass; return the envelope as it then stands."""
        current = self.envelope(jobid)
        deadline = time.monotonic() + (timeout_ms if timeout_ms is not None else current["meta"]["timeout"]) / 1000
        while not Status(current["meta"]["status"]).final:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0:
                break
            self.redis.xread({self.keys.done(jobid): "0-0"}, count=1, block=max(remaining, 1))
            current = self.envelope(jobid)
        return current

    # -- the worker's side -----------------------------------------------------------------------
    @queue_errors
    def read(self, consumer: str, queues: list[str], block_ms: int,
             finished: "Finished | None" = None) -> Delivery | None:
        """Take the next entry of ``queues`` for ``consumer``, blocking up to ``block_ms``.

        ``finished``, the previous job's result, is stored first in the same round trip.

        Entries are read from one stream at a time (XREADGROUP over several streams would deliver
        one entry from each, and all but one would wait in this worker's pending list). While the
        queue that gave the last job has work, one round trip per job. Otherwise the streams'
        tails and the group's last-delivered ids show which queue has undelivered entries; with
        none, the worker blocks with ``XREAD`` from those tails, so no entry added meanwhile is
        missed.
        """
        for queue in queues:
            self._ensure_group(queue)
        streams = [self.keys.queue(q) for q in queues]
        sticky = self._sticky.get(consumer)
        delivery = self._group_read(consumer, sticky if sticky in streams else streams[0], finished)
        if delivery is not None:
            return delivery
        watched = streams + [self.keys.wake(consumer)]
        for _ in range(10):  # another worker may take an entry first: look again
            pipe = self.redis.pipeline(transaction=False)
            for stream in watched:
                pipe.xrevrange(stream, count=1)
            for stream in streams:
                pipe.xinfo_groups(stream)
            replies = pipe.execute()
            tails, groups = replies[:len(watched)], replies[len(watched):]
            waiting = [stream for stream, tail, info in zip(streams, tails, groups)
                       if tail and _after(tail[0][0], _last_delivered(info))]
            if not waiting:
                break
            for stream in waiting:
                delivery = self._group_read(consumer, stream, None)
                if delivery is not None:
                    self._sticky[consumer] = stream
                    return delivery
        if block_ms > 0:
            since = {s: (tail[0][0] if tail else "0-0") for s, tail in zip(watched, tails)}
            self.redis.xread(since, count=1, block=block_ms)
        return None

    def _group_read(self, consumer: str, stream: str, finished: "Finished | None") -> Delivery | None:
        """One round trip: store ``finished`` (if any), then read at most one entry of ``stream``."""
        pipe = self.redis.pipeline(transaction=False)
        if finished is not None:
            self._log_calls(pipe, finished.jobid, finished.logs)
            keys, args = self._finish_arguments(finished)
            # evalsha rather than the Script object: in a pipeline redis-py would add SCRIPT EXISTS
            pipe.evalsha(self._finish.sha, len(keys), *keys, *args)
        pipe.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
        replies = pipe.execute(raise_on_error=False)
        if finished is not None:
            del replies[:2 if finished.logs else 0]
            stored = replies.pop(0)
            if isinstance(stored, redis.exceptions.NoScriptError):  # Redis restarted: load it again
                stored = self._finish_call(finished)
            elif isinstance(stored, Exception):
                raise stored
            self._report_finish(finished, stored)
        delivered = replies[0]
        if isinstance(delivered, Exception):
            raise delivered
        for name, entry_id, fields in _entries(delivered):
            return Delivery(name.rsplit(":queue:", 1)[1], entry_id, fields.get("job", ""))
        return None

    @queue_errors
    def own_pending(self, consumer: str, queues: list[str]) -> Delivery | None:
        """An entry already delivered to ``consumer`` and not yet acknowledged, if any.

        After an outage a delivery may have happened in Redis while its reply was lost; the
        worker asks for its own pending entries before reading new ones.
        """
        for queue in queues:
            self._ensure_group(queue)
            reply = self.redis.xreadgroup(GROUP, consumer, {self.keys.queue(queue): "0"}, count=1)
            for _, entry_id, fields in _entries(reply):
                if fields:  # an entry deleted since delivery comes back with no fields
                    return Delivery(queue, entry_id, fields.get("job", ""))
                self.redis.xack(self.keys.queue(queue), GROUP, entry_id)
        return None

    @queue_errors
    def wake(self, consumer: str) -> None:
        """End the blocking read of ``consumer`` now (used to stop a worker promptly)."""
        self.redis.xadd(self.keys.wake(consumer), {"wake": "1"}, maxlen=1)

    @queue_errors
    def claim(self, delivery: Delivery, worker_id: str) -> tuple[JobSpec, dict[str, Any] | None] | None:
        """Move the job to ``running`` for this worker; None (and the entry dropped) if it was taken.

        Returns the spec and, for an uploaded flintbit, its upload record (one round trip for both).
        """
        reply = self._claim(keys=[self.keys.job(delivery.jobid), self.keys.bits], args=[worker_id, now_ms()])
        if not reply:
            self.redis.xack(self.keys.queue(delivery.queue), GROUP, delivery.entry)
            self.redis.xdel(self.keys.queue(delivery.queue), delivery.entry)
            return None
        raw_spec, uploaded = reply
        return JobSpec.from_json(raw_spec), (json.loads(uploaded) if uploaded else None)

    @queue_errors
    def mark_retryable(self, jobid: str) -> None:
        """Record that the job's flintbit declared itself retryable."""
        self.redis.hset(self.keys.job(jobid), "retryable", "1")

    @queue_errors
    def finish(self, jobid: str, result: dict[str, Any], *, worker_id: str, queue: str = "", entry: str = "",
               logs: list[dict[str, Any]] | None = None) -> bool:
        """Store the final envelope (after ``logs``) if this worker still owns the job; ack its entry.

        True if stored.
        """
        return self.store(Finished(jobid, result, worker_id, queue, entry, logs))

    @queue_errors
    def store(self, finished: "Finished") -> bool:
        """:meth:`finish` for a result the worker already holds as a :class:`Finished`."""
        if finished.logs:
            self.append_log(finished.jobid, finished.logs)
        return self._report_finish(finished, self._finish_call(finished))

    def _finish_arguments(self, finished: "Finished") -> tuple[list[str], list[Any]]:
        meta = finished.result["meta"]
        keys = [self.keys.job(finished.jobid), self.keys.log(finished.jobid), self.keys.done(finished.jobid),
                self.keys.queue(finished.queue or BITS_QUEUE)]
        args = [finished.worker_id, meta["status"], json.dumps(meta),
                json.dumps(finished.result.get("output") or {}), self.settings.result_ttl, finished.entry]
        return keys, args

    def _finish_call(self, finished: "Finished") -> Any:
        keys, args = self._finish_arguments(finished)
        return self._finish(keys=keys, args=args)

    @staticmethod
    def _report_finish(finished: "Finished", stored: Any) -> bool:
        if not stored:
            logger.warning("result of %s dropped: the job is no longer owned by %s",
                           finished.jobid, finished.worker_id or "anyone")
        return bool(stored)

    # -- liveness and recovery -----------------------------------------------------------------
    @queue_errors
    def heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        """Say this worker is alive for the next ``lost_after`` seconds."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.worker(worker_id), json.dumps(info), px=int(self.settings.lost_after * 1000))
        pipe.sadd(self.keys.workers, worker_id)
        pipe.execute()

    @queue_errors
    def retire(self, worker_id: str) -> None:
        """Forget a worker that stops cleanly."""
        self.redis.delete(self.keys.worker(worker_id), self.keys.wake(worker_id))
        self.redis.srem(self.keys.workers, worker_id)

    @queue_errors
    def recover(self, max_attempts: int = 3) -> list[tuple[str, str]]:
        """Settle the jobs held by workers whose heartbeat has expired.

        A job that had not started is queued again; a running one is queued again when retryable
        (up to ``max_attempts``), else it ends ``error`` -8. Returns ``[(jobid, outcome)]``.
        """
        outcomes: list[tuple[str, str]] = []
        for queue in sorted(self.redis.smembers(self.keys.queues)):
            stream = self.keys.queue(queue)
            try:
                summary = self.redis.xpending(stream, GROUP)
            except redis.ResponseError:
                continue
            for consumer in summary.get("consumers") or []:
                name = consumer["name"]
                if self.redis.exists(self.keys.worker(name)):
                    continue
                pending = self.redis.xpending_range(stream, GROUP, min="-", max="+", count=1000, consumername=name)
                for item in pending:
                    outcomes.append(self._settle_lost(queue, item["message_id"], max_attempts))
                if len(pending) < 1000:
                    self.redis.xgroup_delconsumer(stream, GROUP, name)
                    self.redis.srem(self.keys.workers, name)
        return outcomes

    def _settle_lost(self, queue: str, entry: str, max_attempts: int) -> tuple[str, str]:
        stream = self.keys.queue(queue)
        found = self.redis.xrange(stream, min=entry, max=entry)
        jobid = found[0][1].get("job", "") if found else ""
        status, retryable = self.redis.hmget(self.keys.job(jobid), "status", "retryable") if jobid else (None, None)
        if status == Status.SUBMITTED.value or (status == Status.RUNNING.value and retryable):
            if self._requeue(keys=[self.keys.job(jobid), stream], args=[entry, max_attempts, jobid]) == 1:
                logger.warning("job %s requeued: its worker was lost", jobid)
                return jobid, "requeued"
        if status in (Status.SUBMITTED.value, Status.RUNNING.value):
            raw_meta = self.redis.hget(self.keys.job(jobid), "meta")
            meta = json.loads(raw_meta) if raw_meta else new_meta(context="", timeout=0, jobid=jobid)
            failure(meta, WorkerLost("worker lost while running the job"))
            self.finish(jobid, envelope(meta, {}), worker_id="", queue=queue, entry=entry)
            logger.warning("job %s marked error -8: its worker was lost", jobid)
            return jobid, "lost"
        self.redis.xack(stream, GROUP, entry)
        self.redis.xdel(stream, entry)
        return jobid, "already-final"


def error_envelope(error: FlintError, *, context: str = "", jobid: str = "", username: str = "",
                   timeout: int = 0) -> dict[str, Any]:
    """An envelope for a request that failed before it became a job (API and CLI error bodies)."""
    meta = new_meta(context=context, timeout=timeout, username=username, jobid=jobid or None)
    if not jobid:
        meta["job-id"] = ""
    return envelope(failure(meta, error), {})
