"""Running one job in this process: a flintbit script or a direct connector request.

An :class:`Executor` lives in a worker's child process (see :mod:`runtime.child`) and runs the jobs
it is handed, one at a time. It reaches the queue only through a :class:`Link` (the child's pipe to
its supervisor), so it never holds a Redis connection of its own.

Time limits are enforced here with a timer signal (``setitimer``), which interrupts busy loops and
blocking calls alike; nested limits (a ``.timeout(ms)`` inside a job) stack. The supervisor kills
the process as a backstop when a flintbit ignores the signal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from connectors import ConnectorCall
from runtime.configuration import Secret, load_yaml
from runtime.envelope import envelope, failure, finish, new_meta, now_ms
from runtime.errors import FlintError, InternalError, InvalidRequest, LimitExceeded, TimedOut
from runtime.registry import ConnectorRegistry
from runtime.script import Call, FlintbitExit, GlobalConfig, Input, Log, Output
from runtime.settings import Settings
from runtime.store import Script, compile_script

__all__ = ["JobSpec", "Link", "Executor", "Redactor", "DeadlineReached"]

logger = logging.getLogger(__name__)

_current = threading.local()

# A job's log keeps at most this many lines, each at most this many characters.
MAX_LOG_LINES = 10_000
MAX_LOG_LINE = 64 * 1024

# Input keys whose values are secrets wherever they appear in a job's messages and log lines.
SECRET_INPUT_KEYS = frozenset({"password", "secret", "token", "api-key", "flint-key", "x-flint-password"})


@dataclass
class JobSpec:
    """Everything a worker needs to run a job; kept in Redis as JSON with the job."""

    jobid: str
    kind: str  # "bit" or "connector"
    target: str  # flintbit ref or connector name
    input: Any = None
    raw: str = ""
    content_type: str = "application/json"
    timeout: int = 60000
    username: str = ""
    timestamp: int = field(default_factory=now_ms)
    retryable: bool = False

    @property
    def context(self) -> str:
        """The envelope's ``context``: the ref, or ``connector:<name>``."""
        return self.target if self.kind == "bit" else f"connector:{self.target}"

    def submitted_meta(self) -> dict[str, Any]:
        """The job's meta as submitted: its id, context, timeout, caller and submission time."""
        meta = new_meta(context=self.context, timeout=self.timeout, username=self.username, jobid=self.jobid)
        meta["timestamp"] = self.timestamp
        return meta

    def to_json(self) -> str:
        """Serialised for Redis."""
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str | bytes) -> "JobSpec":
        """Read back from Redis."""
        return cls(**json.loads(text))


class Link(Protocol):
    """The executor's way to the queue (through the supervisor)."""

    def submit(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None,
               username: str) -> dict[str, Any]: ...
    def wait(self, jobid: str, timeout_ms: int | None) -> dict[str, Any]: ...
    def script(self, ref: str) -> Script: ...
    def log(self, jobid: str, lines: list[dict[str, Any]]) -> None: ...


class DeadlineReached(BaseException):
    """A time limit passed; ``token`` says which (a BaseException: flintbits do not catch it)."""

    def __init__(self, token: object) -> None:
        super().__init__("deadline reached")
        self.token = token


class Deadlines:
    """Stacked time limits on the main thread, armed with ``setitimer(ITIMER_REAL)``."""

    def __init__(self) -> None:
        self._stack: list[tuple[float, object]] = []
        self._enabled = threading.current_thread() is threading.main_thread()
        if self._enabled:
            signal.signal(signal.SIGALRM, self._fire)

    def _fire(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        expired = [token for deadline, token in self._stack if deadline <= now]
        if expired:
            raise DeadlineReached(expired[0])  # the outermost limit that passed wins
        self._arm()

    def _arm(self) -> None:
        if not self._enabled:
            return
        if not self._stack:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        remaining = min(d for d, _ in self._stack) - time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.0005))

    def remaining_ms(self) -> int | None:
        """Milliseconds until the nearest limit, or None with no limit set."""
        if not self._stack:
            return None
        return max(int((min(d for d, _ in self._stack) - time.monotonic()) * 1000), 0)

    @contextmanager
    def limit(self, ms: int) -> Iterator[object]:
        """Within the block, raise DeadlineReached(token) once ``ms`` have passed."""
        token = object()
        self._stack.append((time.monotonic() + ms / 1000.0, token))
        self._arm()
        try:
            yield token
        finally:
            self._stack = [entry for entry in self._stack if entry[1] is not token]
            self._arm()


class Redactor:
    """Replaces every known secret value in text with ``**********`` (defence in depth)."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: Any) -> None:
        """Remember ``value`` (a Secret or text) as secret."""
        text = value.reveal() if isinstance(value, Secret) else value
        if isinstance(text, str) and len(text) >= 3:
            self._values.add(text)

    def add_from(self, data: Any) -> None:
        """Remember every Secret inside a config structure."""
        if isinstance(data, Secret):
            self.add(data)
        elif isinstance(data, dict):
            for value in data.values():
                self.add_from(value)
        elif isinstance(data, list):
            for value in data:
                self.add_from(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, "**********")
        return text


class _JobRun:
    """The JobHost of one running job: what its ``log``, ``connector`` and ``flintbit`` reach."""

    def __init__(self, executor: "Executor", spec: JobSpec) -> None:
        self.executor = executor
        self.spec = spec
        self.lines: list[dict[str, Any]] = []
        self.count = 0

    def log(self, level: str, message: str) -> None:
        self.count += 1
        if self.count > MAX_LOG_LINES:
            if self.count == MAX_LOG_LINES + 1:
                message, level = f"log truncated: a job keeps at most {MAX_LOG_LINES} lines", "warn"
            else:
                return
        if len(message) > MAX_LOG_LINE:
            message = message[:MAX_LOG_LINE] + f"... [{len(message) - MAX_LOG_LINE} characters cut]"
        self.lines.append({"ts": now_ms(), "level": level, "message": self.executor.redact(message)})
        if len(self.lines) >= 200:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            self.executor.link.log(self.spec.jobid, lines)

    def _limit_ms(self, requested: int | None, default: int) -> int:
        limit = requested or default
        remaining = self.executor.deadlines.remaining_ms()
        return limit if remaining is None else max(min(limit, remaining), 1)

    def run_sync(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None) -> dict[str, Any]:
        if kind == "connector":
            return self.executor.run_connector(self, target, request, timeout_ms)
        return self.executor.run_nested_bit(self, target, request, timeout_ms)

    def submit(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None) -> dict[str, Any]:
        self.flush()
        return {"meta": self.executor.link.submit(kind, target, request, timeout_ms, self.spec.username), "output": {}}

    def wait(self, jobid: str, timeout_ms: int | None) -> dict[str, Any]:
        self.flush()
        return self.executor.link.wait(jobid, self._limit_ms(timeout_ms, self.spec.timeout))


class Executor:
    """Runs jobs in this process; keeps the connector registry, compiled scripts and secrets."""

    def __init__(self, settings: Settings, link: Link) -> None:
        self.settings = settings
        self.link = link
        self.deadlines = Deadlines()
        self.redact = Redactor()
        self._registry: ConnectorRegistry | None = None
        self._registry_stamp: tuple[int, int] | None = None
        self._global: GlobalConfig | None = None
        self._compiled: dict[tuple[str, str], Any] = {}
        self.recycle = False  # set when this process should be replaced after the job
        self.pid = os.getpid()

    # -- configuration -------------------------------------------------------------------------
    def registry(self) -> ConnectorRegistry:
        """The connector registry, reloaded when ``connectors.yaml`` changes."""
        path = self.settings.config_dir / "connectors.yaml"
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if self._registry is None or stamp != self._registry_stamp:
            if self._registry is not None:
                self._registry.close()
            self._registry = ConnectorRegistry.load(path, self.settings.secret_resolver())
            self._registry_stamp = stamp
            for spec in self._registry.specs.values():
                self.redact.add_from(spec.config)
        return self._registry

    def global_config(self) -> GlobalConfig:
        """``config/global.yaml`` for ``config.get``."""
        if self._global is None:
            data = load_yaml(Path(self.settings.config_dir) / "global.yaml", resolver=self.settings.secret_resolver())
            self._global = GlobalConfig(data if isinstance(data, dict) else {})
        return self._global

    # -- one job -------------------------------------------------------------------------------
    def run(self, spec: JobSpec, script: Script | None = None) -> dict[str, Any]:
        """Run ``spec`` under its timeout; return ``{"meta": ..., "output": ...}`` (final).

        ``script`` is the flintbit's source when the caller already has it (else it is asked for).
        """
        job = _JobRun(self, spec)
        if isinstance(spec.input, dict):  # secrets handed in as input are hidden from the start
            for key in SECRET_INPUT_KEYS & set(spec.input):
                self.redact.add(spec.input[key])
        meta = spec.submitted_meta()
        output: dict[str, Any] = {}
        try:
            with self.deadlines.limit(spec.timeout) as token:
                try:
                    if spec.kind == "connector":
                        result = self.run_connector(job, spec.target, spec.input or {}, spec.timeout, nested=False)
                        meta, output = {**meta, **_final_fields(result["meta"])}, result["output"]
                    else:
                        script = script or self.link.script(spec.target)
                        output = self._run_bit(job, script, _input_for(spec), meta)
                except DeadlineReached as exc:
                    if exc.token is not token:
                        raise
                    failure(meta, TimedOut(f"timed out after {spec.timeout} ms"))
        except FlintError as exc:
            failure(meta, exc)
        except MemoryError:
            self.recycle = True
            failure(meta, LimitExceeded(f"memory limit of {self.settings.memory_limit_mb} MB exceeded"))
        meta["message"] = self.redact(str(meta["message"]))
        job.flush()
        return envelope(meta, self._bounded(output, meta))

    def _bounded(self, output: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        try:
            text = json.dumps(output, default=str)
        except (TypeError, ValueError) as exc:
            failure(meta, InvalidRequest(f"output is not JSON: {exc}"))
            return {}
        if len(text) > self.settings.max_output:
            failure(meta, LimitExceeded(f"output is {len(text)} bytes; the limit is {self.settings.max_output}"))
            return {}
        return json.loads(text)

    def _run_bit(self, job: _JobRun, script: Script, data: Input, meta: dict[str, Any]) -> dict[str, Any]:
        """Execute a flintbit's code; set exit-code/message/status in ``meta``; return the output."""
        key = (script.ref, script.version)
        code = self._compiled.get(key)
        if code is None:
            code = self._compiled[key] = compile_script(script.source, script.ref)
        out = Output()
        host_call = Call(job)
        namespace = {
            "__name__": "__flintbit__",
            "__file__": script.ref,
            "input": data,
            "output": out,
            "log": Log(job),
            "call": host_call,
            "connector": host_call.connector,
            "flintbit": host_call.bit,
            "config": self.global_config(),
        }
        previous = getattr(_current, "namespace", None)
        _current.namespace = namespace
        try:
            exec(code, namespace)
            finish(meta, exit_code=0, message="success")
        except FlintbitExit as exc:
            finish(meta, exit_code=exc.code, message=exc.message)
        except SystemExit as exc:
            code_value = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finish(meta, exit_code=code_value, message="success" if code_value == 0 else str(exc.code))
        except (DeadlineReached, MemoryError, FlintError):
            raise
        except BaseException as exc:  # Exception, and KeyboardInterrupt, GeneratorExit, ... raised by it
            job.log("error", "".join(traceback.format_exception(exc)).rstrip())
            finish(meta, exit_code=1, message=f"{type(exc).__name__}: {exc}")
        finally:
            if os.getpid() != self.pid:
                os._exit(0)  # a process the flintbit forked ends with its copy of the flintbit
            _current.namespace = previous
        return out.data

    def run_connector(self, job: _JobRun, name: str, request: dict[str, Any], timeout_ms: int | None,
                      *, nested: bool = True) -> dict[str, Any]:
        """One connector request in this process; failures come back in the envelope."""
        default = self.settings.default_timeout
        meta = new_meta(context=f"connector:{name}", timeout=timeout_ms or default, username=job.spec.username)
        if nested:
            meta["job-id"] = job.spec.jobid + "." + meta["job-id"][4:12]
        output: dict[str, Any] = {}
        try:
            if not isinstance(request, dict):
                raise InvalidRequest("a connector request must be a JSON object")
            connector = self.registry().get(name)
            if isinstance(request.get("password"), str):
                self.redact.add(request["password"])
            configured = connector.config.get("timeout")
            limit = job._limit_ms(timeout_ms or (configured if isinstance(configured, int) else None), default)
            meta["timeout"] = timeout_ms or (configured if isinstance(configured, int) else default)
            call = ConnectorCall(jobid=job.spec.jobid, timeout_ms=limit, log=job.log)
            with self.deadlines.limit(limit) as token:
                try:
                    output = connector.run(request, call)
                except DeadlineReached as exc:
                    if exc.token is not token:
                        raise
                    raise TimedOut(f"timed out after {limit} ms") from None
            finish(meta, exit_code=0, message="success")
        except FlintError as exc:
            failure(meta, exc)
        except (DeadlineReached, MemoryError):
            raise
        except Exception as exc:  # a bug in a connector must not kill the job silently
            logger.exception("connector %s failed", name)
            job.log("error", "".join(traceback.format_exception(exc)).rstrip())
            failure(meta, InternalError(f"connector {name} failed: {type(exc).__name__}: {exc}"))
        meta["message"] = self.redact(str(meta["message"]))
        return envelope(meta, output)

    def run_nested_bit(self, job: _JobRun, ref: str, request: dict[str, Any], timeout_ms: int | None) -> dict[str, Any]:
        """``flintbit(ref).sync()``: run another flintbit here, under its own limit."""
        limit = job._limit_ms(timeout_ms, self.settings.default_timeout)
        meta = new_meta(context=ref, timeout=timeout_ms or limit, username=job.spec.username)
        output: dict[str, Any] = {}
        try:
            script = self.link.script(ref)
            data = Input(request, jobid=meta["job-id"], username=job.spec.username)
            with self.deadlines.limit(limit) as token:
                try:
                    output = self._run_bit(job, script, data, meta)
                except DeadlineReached as exc:
                    if exc.token is not token:
                        raise
                    raise TimedOut(f"timed out after {limit} ms") from None
        except FlintError as exc:
            failure(meta, exc)
        meta["message"] = self.redact(str(meta["message"]))
        return envelope(meta, output)


def _final_fields(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("exit-code", "message", "status")}


def _input_for(spec: JobSpec) -> Input:
    return Input(spec.input, raw=spec.raw, content_type=spec.content_type, jobid=spec.jobid, username=spec.username)


def current_namespace() -> dict[str, Any] | None:
    """The globals of the flintbit running on this thread, for ``from runtime import output``."""
    return getattr(_current, "namespace", None)
