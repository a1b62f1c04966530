"""The long-lived child process that runs a worker's jobs, and the handle its supervisor holds.

Forking per job (rq's ``Worker``) costs a process per job; running jobs in the worker itself
(rq's ``SimpleWorker``) gives no isolation. A worker here keeps one child process that runs job
after job. The child enforces each job's timeout itself (a timer signal); the supervisor kills it
as a backstop if it overruns, and replaces it when it dies (``os._exit``, a crash, a signal) or
after a memory blow-up, so one job's failure ends that job only.

The child never talks to Redis: what a job needs from the queue (queuing an async call, waiting on
a job, an uploaded script, its log lines) goes over the pipe to the supervisor, which serves it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol

from runtime import errors
from runtime.envelope import envelope, failure
from runtime.errors import FlintError, InternalError, TimedOut, WorkerLost
from runtime.execution import Executor, JobSpec, Link
from runtime.settings import Settings
from runtime.store import Script

__all__ = ["ChildProcess", "Services", "child_main"]

logger = logging.getLogger(__name__)

# How long past its timeout a job may take to stop by itself before its process is killed.
KILL_GRACE_S = 0.25


class Services(Link, Protocol):
    """What the supervisor does for its child: the queue-facing half of the job (a Link), and a
    ``tick`` called while it waits (heartbeats)."""

    def tick(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# In the child


class _PipeLink:
    """The executor's Link over the pipe: each call is a request answered by the supervisor."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _ask(self, method: str, *args: Any) -> Any:
        self.conn.send(("call", method, args))
        kind, value = self.conn.recv()
        if kind == "error":
            name, message = value
            cls = getattr(errors, name, InternalError)
            raise cls(message)
        return value

    def submit(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None,
               username: str) -> dict[str, Any]:
        return self._ask("submit", kind, target, request, timeout_ms, username)

    def wait(self, jobid: str, timeout_ms: int | None) -> dict[str, Any]:
        return self._ask("wait", jobid, timeout_ms)

    def script(self, ref: str) -> Script:
        return self._ask("script", ref)

    def log(self, jobid: str, lines: list[dict[str, Any]]) -> None:
        self.conn.send(("log", jobid, lines))


def _limit_memory(megabytes: int) -> None:
    limit = megabytes * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        logger.warning("could not set a memory limit of %d MB", megabytes)


_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the supervisor dies (no orphan keeps running a job)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        logger.debug("PR_SET_PDEATHSIG not available")


def _processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pgid:
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ...
                found.append(int(entry))
    return found


def end_strays() -> None:
    """Kill what the last job left running in this process's group (forks, subprocesses).

    Cheap when there is nothing: one read of this process's ``children`` file, unless the job
    forked (then the whole group is looked for, grandchildren included).
    """
    global _forked
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as children:
            has_children = bool(children.read().strip())
    except OSError:
        has_children = True
    if not (has_children or _forked):
        return
    _forked = False
    for pid in _processes_in_group(me):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:  # reap them
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def child_main(conn: Connection, settings: Settings) -> None:
    """The child's loop: receive a job, run it, send back the envelope; until told to stop."""
    os.setpgid(0, 0)  # its own process group: what a job starts can be found and ended
    _die_with_parent()
    os.register_at_fork(after_in_parent=_note_fork)
    # The supervisor decides when the child stops: a SIGINT or SIGTERM sent to the worker's whole
    # process group (Ctrl-C, systemd) lets the running job finish; the supervisor then stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ["FLINT_WORKER_CHILD"] = "1"
    _limit_memory(settings.memory_limit_mb)
    executor = Executor(settings, _PipeLink(conn))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        spec = JobSpec(**message[1])
        result = executor.run(spec, message[2])
        end_strays()
        conn.send(("done", result, executor.recycle))
        if executor.recycle:
            return


# ---------------------------------------------------------------------------------------------
# In the supervisor


def _context() -> multiprocessing.context.BaseContext:
    # fork: the child is made once per worker lifetime (and after a crash or timeout), not per job,
    # and forking needs no re-import of the caller's __main__ (forkserver and spawn do, which breaks
    # programs that embed the runtime). The child uses none of the parent's threads or clients.
    return multiprocessing.get_context("fork")


class ChildProcess:
    """The supervisor's handle on its child: start it, run a job in it, replace it when needed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: multiprocessing.Process | None = None
        self.conn: Connection | None = None
        self.jobs_run = 0

    def start(self) -> None:
        """Start a fresh child process."""
        context = _context()
        parent, child = context.Pipe()
        process = context.Process(target=child_main, args=(child, self.settings), daemon=True,
                                  name="flint-worker-child")
        process.start()
        child.close()
        self.process, self.conn = process, parent

    def stop(self) -> None:
        """Ask the child to stop; kill it if it does not."""
        if self.process is None:
            return
        try:
            if self.conn is not None:
                self.conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self.process.join(1.0)
        self._kill()

    def _kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # the child and what its job started
            except (ProcessLookupError, PermissionError):
                self.process.kill()  # not yet its own group leader
            self.process.join(2.0)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None

    def _lost(self, spec: JobSpec, meta: dict[str, Any]) -> dict[str, Any]:
        code = None
        if self.process is not None:
            self.process.join(1.0)  # reap it, so that its exit status is known
            code = self.process.exitcode
        self._kill()
        if code is not None and code < 0:
            how = f"killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        return envelope(failure(meta, WorkerLost(f"the process running the job was lost ({how})")), {})

    def run(self, spec: JobSpec, services: Services, script: Script | None = None) -> dict[str, Any]:
        """Run ``spec`` (with its flintbit's ``script``) in the child, serving its requests; return the envelope.

        The job is aborted (-6) if it outlives its timeout, and the child replaced.
        """
        meta = spec.submitted_meta()
        if self.process is None or not self.process.is_alive():
            try:
                self.start()
            except (OSError, RuntimeError) as exc:
                logger.exception("could not start the process that runs jobs")
                return envelope(failure(meta, InternalError(f"could not start the process that runs jobs: {exc}")), {})
        assert self.conn is not None
        deadline = time.monotonic() + spec.timeout / 1000.0 + KILL_GRACE_S
        tick_every = self.settings.heartbeat_interval
        try:
            self.conn.send(("run", spec.__dict__, script))
        except (OSError, ValueError):
            return self._lost(spec, meta)
        except Exception as exc:  # e.g. RecursionError pickling a pathological input: this job only
            logger.exception("could not hand job %s to the job process", spec.jobid)
            self._kill()  # the pipe may hold half a message
            return envelope(failure(meta, InternalError(f"could not hand the job to its process: "
                                                        f"{type(exc).__name__}")), {})
        self.jobs_run += 1
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("job %s overran its timeout; replacing the child process", spec.jobid)
                self._kill()
                return envelope(failure(meta, TimedOut(f"timed out after {spec.timeout} ms")), {})
            try:
                ready = self.conn.poll(min(remaining, tick_every))
            except (OSError, EOFError):
                return self._lost(spec, meta)
            if not ready:
                if not self.process.is_alive():
                    return self._lost(spec, meta)
                services.tick()
                continue
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return self._lost(spec, meta)
            kind = message[0]
            if kind == "done":
                if message[2]:  # the child asked to be replaced (e.g. after a memory blow-up)
                    self.process.join(1.0)
                    self._kill()
                return message[1]
            if kind == "log":
                services.log(message[1], message[2])
            elif kind == "call":
                self._serve(message[1], message[2], services, deadline)

    def _serve(self, method: str, args: tuple[Any, ...], services: Services, deadline: float) -> None:
        assert self.conn is not None
        try:
            if method == "wait":
                jobid, timeout_ms = args
                cap = max(int((deadline - KILL_GRACE_S - time.monotonic()) * 1000), 0)
                value: Any = services.wait(jobid, cap if timeout_ms is None else min(timeout_ms, cap))
            else:
                value = getattr(services, method)(*args)
            reply: tuple[str, Any] = ("ok", value)
        except FlintError as exc:
            reply = ("error", (type(exc).__name__, exc.message))
        except Exception as exc:  # the child must always get an answer
            logger.exception("serving %s for the child failed", method)
            reply = ("error", ("InternalError", f"{method} failed: {type(exc).__name__}"))
        self.conn.send(reply)
