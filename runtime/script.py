"""The names a flintbit finds already defined: ``input``, ``output``, ``log``, ``connector``,
``flintbit``, ``call`` and ``config`` (SPEC section 2), and the :class:`Response` a call returns.

These objects talk to the job through a :class:`JobHost` (implemented by :mod:`runtime.execution`):
it runs connector requests and nested flintbits in this process, and queues async calls.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Protocol

from jsonpath_ng.ext import parse as parse_jsonpath
from jsonpath_ng.exceptions import JsonPathParserError

from runtime.errors import InvalidRequest

__all__ = ["Input", "Output", "Log", "CallBuilder", "Call", "Response", "GlobalConfig", "FlintbitExit", "JobHost"]

LEVELS = ("trace", "debug", "info", "warn", "error")


class FlintbitExit(BaseException):
    """Raised by ``output.exit``: ends the flintbit at once with an exit-code and message.

    A BaseException, so that a flintbit's ``except Exception`` does not swallow it.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JobHost(Protocol):
    """What the scripting objects need from the job that runs them."""

    def log(self, level: str, message: str) -> None: ...
    def run_sync(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None) -> dict[str, Any]: ...
    def submit(self, kind: str, target: str, request: dict[str, Any], timeout_ms: int | None) -> dict[str, Any]: ...
    def wait(self, jobid: str, timeout_ms: int | None) -> dict[str, Any]: ...


class Input:
    """The flintbit's input: the request body, parsed when it is JSON."""

    def __init__(self, data: Any, *, raw: str = "", content_type: str = "application/json",
                 jobid: str = "", username: str = "") -> None:
        self._data = data
        self._raw = raw if raw else (json.dumps(data) if data is not None else "")
        self.type = content_type
        self.jobid = jobid
        self.username = username

    def get(self, key: str, default: Any = None) -> Any:
        """The top-level key ``key`` of a JSON object body, else ``default``."""
        if isinstance(self._data, dict):
            return self._data.get(key, default)
        return default

    def path(self, expression: str) -> Any:
        """A JSONPath query (``$.a.b[0]``): the value, a list when several match, None when none."""
        try:
            matches = [m.value for m in parse_jsonpath(expression).find(self._data)]
        except (JsonPathParserError, Exception) as exc:  # jsonpath-ng raises bare Exceptions on bad syntax
            raise InvalidRequest(f"invalid JSONPath {expression!r}: {exc}") from None
        if not matches:
            return None
        return matches[0] if len(matches) == 1 else matches

    def raw(self) -> str:
        """The body as it was sent."""
        return self._raw

    def data(self) -> Any:
        """The parsed body (a dict for JSON objects)."""
        return self._data

    def __repr__(self) -> str:
        return f"Input(type={self.type!r}, keys={sorted(self._data) if isinstance(self._data, dict) else None})"


class Output:
    """The flintbit's output: a JSON object built with chained ``set`` calls."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> "Output":
        """Set ``key`` to ``value``; returns ``output`` so calls chain."""
        self.data[str(key)] = value
        return self

    def setraw(self, key: str, json_text: str) -> "Output":
        """Set ``key`` to the value parsed from ``json_text``."""
        try:
            self.data[str(key)] = json.loads(json_text)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"output.setraw({key!r}): not JSON: {exc}") from None
        return self

    def remove(self, key: str) -> "Output":
        """Remove ``key`` if set."""
        self.data.pop(str(key), None)
        return self

    def exit(self, code: int, message: str = "") -> None:
        """End the flintbit now with ``code`` and ``message``; what was set so far is kept."""
        try:
            code = int(code)
        except (TypeError, ValueError):
            raise InvalidRequest(f"output.exit: exit-code must be an integer, not {code!r}") from None
        raise FlintbitExit(code, str(message) if message else ("success" if code == 0 else f"exit {code}"))


class Log:
    """``log.info("...")`` and friends; the lines are kept with the job."""

    def __init__(self, host: JobHost) -> None:
        self._host = host

    def _write(self, level: str, message: Any) -> None:
        self._host.log(level, str(message))

    def trace(self, message: Any) -> None:
        """A trace line."""
        self._write("trace", message)

    def debug(self, message: Any) -> None:
        """A debug line."""
        self._write("debug", message)

    def info(self, message: Any) -> None:
        """An info line."""
        self._write("info", message)

    def warn(self, message: Any) -> None:
        """A warning line."""
        self._write("warn", message)

    warning = warn

    def error(self, message: Any) -> None:
        """An error line."""
        self._write("error", message)


class Response:
    """What ``.sync()``, ``.async_()`` and ``.wait()`` return: an envelope with accessors."""

    def __init__(self, envelope: Mapping[str, Any], host: JobHost | None = None) -> None:
        self.envelope: dict[str, Any] = {"meta": dict(envelope.get("meta", {})), "output": envelope.get("output") or {}}
        self._host = host

    @property
    def meta(self) -> dict[str, Any]:
        """The envelope's meta."""
        return self.envelope["meta"]

    @property
    def output(self) -> dict[str, Any]:
        """The envelope's output."""
        return self.envelope["output"]

    @property
    def exitcode(self) -> int:
        """The exit-code (0 is success)."""
        return int(self.meta.get("exit-code", 0))

    @property
    def message(self) -> str:
        """The message."""
        return str(self.meta.get("message", ""))

    @property
    def status(self) -> str:
        """submitted, running, complete, error or aborted."""
        return str(self.meta.get("status", ""))

    @property
    def jobid(self) -> str:
        """The job id."""
        return str(self.meta.get("job-id", ""))

    @property
    def context(self) -> str:
        """The flintbit ref, or ``connector:<name>``."""
        return str(self.meta.get("context", ""))

    @property
    def timeout(self) -> int:
        """The execution limit in ms."""
        return int(self.meta.get("timeout", 0))

    def get(self, key: str, default: Any = None) -> Any:
        """An output key."""
        return self.output.get(key, default)

    def wait(self, timeout_ms: int | None = None) -> "Response":
        """For an async call: block until the job ends (or ``timeout_ms``); the Response then."""
        if self._host is None or not self.jobid:
            return self
        if self.status not in ("submitted", "running"):
            return self
        return Response(self._host.wait(self.jobid, timeout_ms), self._host)

    def __repr__(self) -> str:
        return f"Response(status={self.status!r}, exitcode={self.exitcode}, message={self.message!r})"


class CallBuilder:
    """``connector("smtp").set("to", [...]).timeout(5000).sync()``."""

    def __init__(self, host: JobHost, kind: str, target: str) -> None:
        self._host = host
        self._kind = kind
        self._target = target
        self._request: dict[str, Any] = {}
        self._timeout: int | None = None

    def set(self, key: str, value: Any) -> "CallBuilder":
        """Set a request key; returns the builder so calls chain."""
        self._request[str(key)] = value
        return self

    def timeout(self, ms: int) -> "CallBuilder":
        """The request's time limit in ms."""
        try:
            ms = int(ms)
        except (TypeError, ValueError):
            raise InvalidRequest(f"timeout must be a number of ms, not {ms!r}") from None
        if ms <= 0:
            raise InvalidRequest("timeout must be positive")
        self._timeout = ms
        return self

    def sync(self) -> Response:
        """Run the request in this worker and return its Response (failures are in it, not raised)."""
        return Response(self._host.run_sync(self._kind, self._target, dict(self._request), self._timeout), self._host)

    def async_(self) -> Response:
        """Queue the request; the Response has status ``submitted`` and a ``jobid`` to ``wait`` on."""
        return Response(self._host.submit(self._kind, self._target, dict(self._request), self._timeout), self._host)


class Call:
    """``call.connector(name)`` and ``call.bit(ref)``."""

    def __init__(self, host: JobHost) -> None:
        self._host = host

    def connector(self, name: str) -> CallBuilder:
        """A request to connector ``name``."""
        return CallBuilder(self._host, "connector", name)

    def bit(self, ref: str) -> CallBuilder:
        """A call of flintbit ``ref``."""
        return CallBuilder(self._host, "bit", ref)


class GlobalConfig:
    """``config.get("dotted.path", default)`` over ``config/global.yaml``."""

    def __init__(self, data: Mapping[str, Any] | None) -> None:
        self._data = data or {}

    def get(self, path: str, default: Any = None) -> Any:
        """The value at ``path`` (keys separated by dots), else ``default``."""
        value: Any = self._data
        for part in str(path).split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return default
        return value
