"""The REST API (SPEC section 5; Flint-compatible, default port 3501): ``create_app(settings)``.

Every request is authenticated (``flint-key`` header, ``?flint-key=``, or ``x-flint-username`` and
``x-flint-password``; see :mod:`runtime.auth`) except ``/v1/health`` and ``/openapi.json``. The
request body is the flintbit's input: JSON when the content type is ``application/json``, absent,
or ``application/x-www-form-urlencoded`` (curl's ``-d`` default) and the body parses as JSON.

HTTP status: 200 whenever a job was accepted (its envelope carries any failure); every error body
is an envelope, and :func:`http_status` is the one place an error becomes an HTTP status.
Sync endpoints block in Starlette's thread pool, which is raised to :data:`THREADPOOL_SIZE`.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, APIKeyQuery
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime.auth import User, UserStore
from runtime.client import FlintClient
from runtime.errors import ConfigError, FlintError, InternalError, InvalidRequest, LimitExceeded, NotFound, \
    QueueUnavailable
from runtime.queue import error_envelope
from runtime.settings import MAX_TIMEOUT_MS, Settings

__all__ = ["create_app", "http_status", "parse_input", "RequestInput", "MAX_JSON_DEPTH", "THREADPOOL_SIZE",
           "uvicorn_log_config"]

logger = logging.getLogger(__name__)

# Sync calls hold a thread each while they wait; 100 concurrent ones must not starve the rest.
THREADPOOL_SIZE = 256

# JSON bodies nest at most this deep (serde_json's default is 128; Python's pickle and json
# recurse, and a body nested ~500 deep broke the worker that took its job).
MAX_JSON_DEPTH = 100

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_STATUS_BY_EXIT_CODE = {-2: 400, -3: 404, -5: 401, -7: 413, -9: 403}

_ERROR_BODY = {"type": "object", "required": ["meta", "output"], "properties": {
    "meta": {"type": "object", "required": ["job-id", "exit-code", "message", "status"], "properties": {
        "job-id": {"type": "string"}, "exit-code": {"type": "integer"}, "message": {"type": "string"},
        "status": {"const": "error"}, "context": {"type": "string"}, "username": {"type": "string"}}},
    "output": {"type": "object", "maxProperties": 0}}}
_ERROR_MEANING = {
    400: "malformed body, invalid ref or parameter, or a flintbit that does not compile (-2)",
    401: "no or wrong credentials (-5)",
    403: "not allowed: only admin users may upload or delete flintbits (-9)",
    404: "unknown flintbit, connector, job or path (-3)",
    413: "body larger than api.max-body (-7)",
    500: "internal or configuration error (-8, -2)",
    503: "the queue (Redis) is unavailable (-8)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route may answer; every one is an envelope."""
    return {code: {"description": f"Error envelope: {_ERROR_MEANING[code]}",
                   "content": {"application/json": {"schema": _ERROR_BODY}}} for code in (*codes, 500)}


_RUN_ERRORS = _errors(400, 401, 404, 413, 503)
_READ_ERRORS = _errors(400, 401, 404, 503)

_BODY_DOC = {"requestBody": {"required": False, "content": {
    "application/json": {"schema": {"description": "the input (a JSON value; an empty body is {})"}}}}}
_SCRIPT_DOC = {"requestBody": {"required": True, "content": {
    "text/plain": {"schema": {"type": "string", "description": "the flintbit's Python source"}}}}}


def http_status(error: FlintError) -> int:
    """The HTTP status of a request that failed with ``error`` (its body is an error envelope)."""
    if isinstance(error, QueueUnavailable):
        return 503
    if isinstance(error, ConfigError):
        return 500  # the server's configuration is wrong, not the request
    return _STATUS_BY_EXIT_CODE.get(error.exit_code, 500)


@dataclass(frozen=True)
class RequestInput:
    """A request body as a flintbit sees it: the parsed ``data``, the ``raw`` text, its type."""

    data: Any
    raw: str
    content_type: str


def parse_input(body: bytes, content_type: str | None) -> RequestInput:
    """Parse a request body; InvalidRequest (-2, HTTP 400) when it is malformed.

    >>> parse_input(b'{"name": "ops"}', "application/x-www-form-urlencoded").data
    {'name': 'ops'}
    >>> parse_input(b"", None).data
    {}
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("malformed body: not UTF-8 text") from None
    if not text.strip():
        return RequestInput({}, "", "application/json")
    if media in ("", "application/json") or media.endswith("+json"):
        return RequestInput(_json(text), text, "application/json")
    if media == "application/x-www-form-urlencoded":
        if text.lstrip()[:1] in ("{", "[", '"'):
            return RequestInput(_json(text), text, "application/json")
        try:
            return RequestInput(dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True)), text, media)
        except ValueError:
            raise InvalidRequest("malformed body: neither JSON nor form fields") from None
    return RequestInput({}, text, media)  # other types (XML, text): the flintbit reads input.raw()


def _json(text: str) -> Any:
    """Parse a JSON body; anything Python's json module would take but JSON is not is refused (-2):
    NaN and Infinity, numbers too large for a float or over 4300 digits, nesting past
    :data:`MAX_JSON_DEPTH` (deeper input can break the workers, which pickle and serialise it),
    and lone surrogates (``"\\ud800"``: not text, and no connector could encode it)."""
    try:
        data = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidRequest(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # _not_json, _finite, or an integer over 4300 digits
        problem = "a number has more than 4300 digits" if "integer string conversion" in str(exc) else str(exc)
        raise InvalidRequest(f"malformed JSON body: {problem}") from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text) and _wire(data) is not data:  # a pair makes one character: fine
        raise InvalidRequest("malformed JSON body: a \\u escape names half of a UTF-16 surrogate pair")
    return data


def _wire(value: Any) -> Any:
    """``value`` ready to send as UTF-8 JSON: a lone surrogate (from a ``"\\ud800"`` escape in a
    body, or a flintbit's own text) cannot be encoded, so each becomes U+FFFD; else ``value`` itself."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.loads(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is too large")
    return value


def _depth(data: Any) -> int:
    """How deep lists and objects nest in ``data`` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (-7, HTTP 413) past ``limit`` bytes by Content-Length or by what arrives."""
    too_large = LimitExceeded(f"request body is larger than the limit of {limit} bytes (api.max-body)")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidRequest("malformed Content-Length header")
        if int(length) > limit:
            raise too_large
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise too_large
    return bytes(received)


class RedactKeys(logging.Filter):
    """Hides ``flint-key`` query values in uvicorn's access log lines."""

    _KEY = re.compile(r"(flint(?:-|%2d)key=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._KEY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging config with :class:`RedactKeys` on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact-keys"] = {"()": RedactKeys}
    config["handlers"]["access"].setdefault("filters", []).append("redact-keys")
    return config


def _context(request: Request) -> str:
    params = request.path_params
    if "name" in params:
        return f"connector:{params['name']}"
    return str(params.get("ref") or "")


def _document_errors_only_as_envelopes(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; this app answers 400 instead."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings, client: FlintClient | None = None) -> FastAPI:
    """The API app on ``settings``; in embedded mode its in-process workers run while it serves.

    ``connectors.yaml`` is read here, so that a broken one stops ``flint serve`` at once with a
    ConfigError naming the file and line, rather than failing the app's start-up with a traceback.
    """
    client = client or FlintClient(settings)
    client.registry()
    client.reserve_connections(THREADPOOL_SIZE + 16)
    users = UserStore(settings.users_file or settings.config_dir / "users.yaml")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, THREADPOOL_SIZE)
        await run_in_threadpool(client.start_workers)
        try:
            if not await run_in_threadpool(users.users):
                logger.warning("no API users in %s: every request will be refused (401) until "
                               "`flint user add NAME` adds one", users.path)
        except FlintError as exc:
            logger.warning("%s", exc.message)
        try:
            yield
        finally:
            await run_in_threadpool(client.close)

    app = FastAPI(title="Flint runtime", version="1", lifespan=lifespan,
                  description="Run flintbits and connector requests as jobs; every error body is an envelope.")
    app.state.client = client
    app.state.users = users
    _document_errors_only_as_envelopes(app)

    # -- errors: every one becomes an envelope ----------------------------------------------------
    def error_response(request: Request, error: FlintError, status: int | None = None) -> JSONResponse:
        body = error_envelope(error, context=_context(request), username=getattr(request.state, "username", ""))
        return JSONResponse(_wire(body), status_code=status or http_status(error))

    @app.exception_handler(FlintError)
    async def flint_error(request: Request, exc: FlintError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error: FlintError = NotFound(f"no such path: {request.url.path} (a flintbit ref uses ':', not '/')")
        elif exc.status_code == 405:
            error = InvalidRequest(f"method {request.method} not allowed on {request.url.path}")
        else:
            error = InvalidRequest(str(exc.detail))
        return error_response(request, error, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problem = (exc.errors() or [{}])[0]
        where = str((problem.get("loc") or ["request"])[-1])
        return error_response(request, InvalidRequest(f"invalid {where}: {problem.get('msg', 'invalid value')}"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(request, InternalError("internal error; see the server log"))

    # -- dependencies -----------------------------------------------------------------------------
    key_header = APIKeyHeader(name="flint-key", scheme_name="flint-key header", auto_error=False,
                              description="A flint-key (`flint user add`)")
    key_query = APIKeyQuery(name="flint-key", scheme_name="flint-key query", auto_error=False,
                            description="A flint-key in the query string")
    user_header = APIKeyHeader(name="x-flint-username", scheme_name="username", auto_error=False,
                               description="With x-flint-password")
    password_header = APIKeyHeader(name="x-flint-password", scheme_name="password", auto_error=False,
                                   description="With x-flint-username")

    def caller(request: Request, header_key: str | None = Depends(key_header),
               query_key: str | None = Depends(key_query), username: str | None = Depends(user_header),
               password: str | None = Depends(password_header)) -> User:
        user = users.authenticate(username=username, password=password, key=header_key or query_key)
        request.state.username = user.name
        return user

    def admin(user: User = Depends(caller)) -> User:
        user.require_admin("upload or delete flintbits")
        return user

    async def job_input(request: Request) -> RequestInput:
        return parse_input(await _read_body(request, settings.max_body), request.headers.get("content-type"))

    async def script_text(request: Request) -> str:
        try:
            return (await _read_body(request, settings.max_body)).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("a flintbit must be UTF-8 text") from None

    timeout_path = Path(ge=1, le=MAX_TIMEOUT_MS,
                        description="The job's timeout in ms (the call waits at most this, plus a grace); at most a day")

    # -- flintbits ----------------------------------------------------------------------------------
    def run_bit(ref: str, user: User, body: RequestInput, timeout_ms: int | None, wait: bool) -> dict[str, Any]:
        return _wire(client.run_bit(ref, body.data, timeout_ms=timeout_ms, username=user.name, wait=wait,
                                    raw=body.raw, content_type=body.content_type))

    @app.post("/v1/bit/run/{ref}", tags=["flintbits"], openapi_extra=_BODY_DOC, responses=_RUN_ERRORS)
    def bit_run(ref: str, user: User = Depends(caller), body: RequestInput = Depends(job_input)) -> dict[str, Any]:
        """Queue flintbit ``ref``; returns meta only (status ``submitted``)."""
        return run_bit(ref, user, body, None, wait=False)

    @app.post("/v1/bit/run/{ref}/sync", tags=["flintbits"], openapi_extra=_BODY_DOC, responses=_RUN_ERRORS)
    def bit_run_sync(ref: str, user: User = Depends(caller),
                     body: RequestInput = Depends(job_input)) -> dict[str, Any]:
        """Run flintbit ``ref`` and return its envelope (or, past its timeout, the envelope as it stands)."""
        return run_bit(ref, user, body, None, wait=True)

    @app.post("/v1/bit/run/{ref}/sync/{timeout_ms}", tags=["flintbits"], openapi_extra=_BODY_DOC,
               responses=_RUN_ERRORS)
    def bit_run_sync_timeout(ref: str, timeout_ms: int = timeout_path, user: User = Depends(caller),
                             body: RequestInput = Depends(job_input)) -> dict[str, Any]:
        """Run flintbit ``ref`` with a timeout of ``timeout_ms`` and return its envelope."""
        return run_bit(ref, user, body, timeout_ms, wait=True)

    @app.get("/v1/bit/result/{job_id}", tags=["jobs"], responses=_READ_ERRORS)
    def job_result(job_id: str, user: User = Depends(caller)) -> dict[str, Any]:
        """The job's envelope as it stands now."""
        return _wire(client.result(job_id))

    @app.get("/v1/bit/log/{job_id}", tags=["jobs"], responses=_READ_ERRORS)
    def job_log(job_id: str, user: User = Depends(caller)) -> list[dict[str, Any]]:
        """The job's log lines ``[{"ts", "level", "message"}]``."""
        return _wire(client.logs(job_id))

    @app.put("/v1/bit/{ref}", tags=["flintbits"], openapi_extra=_SCRIPT_DOC,
              responses=_errors(400, 401, 403, 413, 503))
    def bit_upload(ref: str, user: User = Depends(admin), source: str = Depends(script_text)) -> dict[str, Any]:
        """Upload flintbit ``ref`` (admin only); refused with the line number if it does not compile."""
        return client.store.upload(ref, source, username=user.name)

    @app.get("/v1/bit/{ref}", tags=["flintbits"], response_class=PlainTextResponse, responses=_READ_ERRORS)
    def bit_source(ref: str, user: User = Depends(caller)) -> PlainTextResponse:
        """The flintbit's source."""
        return PlainTextResponse(client.read_bit(ref))

    @app.delete("/v1/bit/{ref}", tags=["flintbits"], responses=_errors(400, 401, 403, 404, 503))
    def bit_delete(ref: str, user: User = Depends(admin)) -> dict[str, Any]:
        """Remove an uploaded flintbit (admin only)."""
        client.store.delete(ref)
        return {"ref": ref, "deleted": True}

    @app.get("/v1/bits", tags=["flintbits"], responses=_errors(401, 503))
    def bit_list(user: User = Depends(caller)) -> list[dict[str, str]]:
        """Every flintbit: ``[{"ref", "origin"}]`` (origin ``upload`` or its directory)."""
        return client.store.list()

    # -- connectors ---------------------------------------------------------------------------------
    def call(name: str, user: User, body: RequestInput, timeout_ms: int | None, wait: bool) -> dict[str, Any]:
        if not isinstance(body.data, dict):
            raise InvalidRequest("a connector request body must be a JSON object of request keys")
        return _wire(client.call_connector(name, body.data, timeout_ms=timeout_ms, username=user.name, wait=wait))

    @app.post("/v1/connector/run/{name}", tags=["connectors"], openapi_extra=_BODY_DOC, responses=_RUN_ERRORS)
    def connector_run(name: str, user: User = Depends(caller),
                      body: RequestInput = Depends(job_input)) -> dict[str, Any]:
        """Queue a direct request to connector ``name``; returns meta only."""
        return call(name, user, body, None, wait=False)

    @app.post("/v1/connector/run/{name}/sync", tags=["connectors"], openapi_extra=_BODY_DOC,
               responses=_RUN_ERRORS)
    def connector_run_sync(name: str, user: User = Depends(caller),
                           body: RequestInput = Depends(job_input)) -> dict[str, Any]:
        """Run a direct request to connector ``name`` and return the envelope."""
        return call(name, user, body, None, wait=True)

    @app.post("/v1/connector/run/{name}/sync/{timeout_ms}", tags=["connectors"], openapi_extra=_BODY_DOC,
               responses=_RUN_ERRORS)
    def connector_run_sync_timeout(name: str, timeout_ms: int = timeout_path, user: User = Depends(caller),
                                   body: RequestInput = Depends(job_input)) -> dict[str, Any]:
        """Run a direct request to connector ``name`` with a timeout of ``timeout_ms``."""
        return call(name, user, body, timeout_ms, wait=True)

    @app.get("/v1/connectors", tags=["connectors"], responses=_errors(401, 503))
    def connector_list(user: User = Depends(caller)) -> list[dict[str, str]]:
        """``[{"name", "type", "description"}]``; never config values."""
        return _wire(client.connectors())

    # -- health -------------------------------------------------------------------------------------
    @app.get("/v1/health", tags=["health"], responses=_errors(503))
    def health() -> dict[str, Any]:
        """``{"status": "ok", "queue": "redis" | "embedded"}``; 503 when Redis cannot be reached."""
        client.queue.ping()
        return {"status": "ok", "queue": "embedded" if settings.embedded else "redis"}

    return app
