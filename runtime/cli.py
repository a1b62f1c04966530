"""``flint``: run flintbits and connector requests, read results and logs, run workers.

The envelope goes to stdout as JSON; the exit status is 0 when its exit-code is 0, else 1, and 2
for usage errors. Global options: ``--config DIR`` (env ``FLINT_CONFIG``) and ``--redis URL``
(env ``FLINT_REDIS_URL``); with no Redis URL jobs run on the embedded in-process queue.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from runtime.errors import FlintError, InvalidRequest
from runtime.queue import error_envelope
from runtime.settings import MAX_TIMEOUT_MS, Settings

__all__ = ["main", "cli"]


def _emit(data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a flintbit: escape it, the JSON stays valid
        text = json.dumps(data, indent=2, ensure_ascii=True, default=str)
    click.echo(text)


def _exit_for(envelope: dict[str, Any]) -> int:
    return 0 if int(envelope.get("meta", {}).get("exit-code", 0)) == 0 else 1


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_input(input_text: str | None, sets: tuple[str, ...]) -> dict[str, Any]:
    """``--input JSON`` or ``--input @FILE``, then each ``--set KEY=VALUE`` over it."""
    data: Any = {}
    if input_text:
        if input_text.startswith("@"):
            try:
                input_text = Path(input_text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise click.UsageError(f"--input: cannot read {input_text[1:]}: {exc.strerror}") from None
        try:
            data = json.loads(input_text)
        except ValueError as exc:
            raise click.UsageError(f"--input is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise click.UsageError("--input must be a JSON object")
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set takes KEY=VALUE, not {item!r}")
        data[key] = parse_value(value)
    return data


class _Context:
    def __init__(self, config_dir: str | None, redis_url: str | None) -> None:
        self.config_dir = config_dir
        self.redis_url = redis_url
        self._client = None

    def settings(self) -> Settings:
        return Settings.load(self.config_dir, redis_url=self.redis_url)

    def client(self):  # -> FlintClient (imported late: `flint --help` stays fast)
        from runtime.client import FlintClient

        if self._client is None:
            self._client = FlintClient(self.settings())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _guard(action: Callable[[], dict[str, Any]], context: str = "") -> None:
    """Run ``action``; print its envelope (or an error envelope) and exit with the right status."""
    try:
        envelope = action()
    except FlintError as exc:
        envelope = error_envelope(exc, context=context)
        click.echo(f"flint: {exc.message}", err=True)
    _emit(envelope)
    sys.exit(_exit_for(envelope))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_dir", envvar="FLINT_CONFIG", default=None, metavar="DIR",
              help="Configuration directory (default ./config).")
@click.option("--redis", "redis_url", envvar="FLINT_REDIS_URL", default=None, metavar="URL",
              help="Redis URL; without one jobs run on the embedded in-process queue.")
@click.option("-v", "--verbose", is_flag=True, help="Log the runtime's own messages to stderr.")
@click.pass_context
def cli(ctx: click.Context, config_dir: str | None, redis_url: str | None, verbose: bool) -> None:
    """Flint runtime: run flintbits and connectors as jobs."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = _Context(config_dir, redis_url)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--timeout", type=click.IntRange(min=1, max=MAX_TIMEOUT_MS), default=None, metavar="MS",
                        help="Execution limit in ms (default from flint.yaml).")(func)
    func = click.option("--async", "is_async", is_flag=True, help="Queue and print the submitted meta.")(func)
    func = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="An input key; the value is JSON when it parses, else text.")(func)
    func = click.option("--input", "input_text", default=None, metavar="JSON|@FILE", help="The input object.")(func)
    return func


def _submit(state: _Context, submit: Callable[[Any], dict[str, Any]], is_async: bool) -> dict[str, Any]:
    client = state.client()
    result = submit(client)
    if is_async and client.settings.embedded:
        # The embedded queue lives in this process: print the receipt, then let the job finish
        # before exiting, so that it is not lost with the process.
        _emit(result)
        client.queue.wait(result["meta"]["job-id"], result["meta"]["timeout"] + 2000)
        sys.exit(0)
    return result


@cli.command()
@click.argument("ref")
@_run_options
@click.pass_obj
def run(state: _Context, ref: str, input_text: str | None, sets: tuple[str, ...], is_async: bool,
        timeout: int | None) -> None:
    """Run flintbit REF (e.g. flint-util:smtp:operation:smtp.py) and print its envelope."""
    body = build_input(input_text, sets)
    _guard(lambda: _submit(state, lambda c: c.run_bit(ref, body, timeout_ms=timeout, wait=not is_async,
                                                         username="cli"), is_async), ref)


@cli.command()
@click.argument("connector")
@_run_options
@click.pass_obj
def call(state: _Context, connector: str, input_text: str | None, sets: tuple[str, ...], is_async: bool,
         timeout: int | None) -> None:
    """Send a direct request to CONNECTOR and print its envelope."""
    body = build_input(input_text, sets)
    _guard(lambda: _submit(state, lambda c: c.call_connector(connector, body, timeout_ms=timeout,
                                                                wait=not is_async, username="cli"), is_async),
           f"connector:{connector}")


@cli.command()
@click.argument("job_id")
@click.option("--wait", "wait_ms", type=click.IntRange(min=1), default=None, metavar="MS",
              help="Wait up to MS for the job to end.")
@click.pass_obj
def result(state: _Context, job_id: str, wait_ms: int | None) -> None:
    """Print JOB_ID's envelope."""
    _guard(lambda: state.client().result(job_id, wait_ms))


@cli.command()
@click.argument("job_id")
@click.pass_obj
def log(state: _Context, job_id: str) -> None:
    """Print JOB_ID's log lines as JSON."""
    try:
        _emit(state.client().logs(job_id))
    except FlintError as exc:
        _emit(error_envelope(exc))
        sys.exit(1)


@cli.command()
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--connectors", "names", default=None, metavar="NAME,...",
              help="Serve only these connectors' queues (not flintbits).")
@click.option("--name", default=None, help="Worker name (default host.pid.random).")
@click.pass_obj
def worker(state: _Context, burst: bool, names: str | None, name: str | None) -> None:
    """Run one worker process (serves flintbits and every connector queue by default)."""
    from runtime.queue import JobQueue, connect
    from runtime.worker import Worker, default_queues

    try:
        settings = state.settings()
        if settings.embedded and not burst:
            raise InvalidRequest("flint worker needs a Redis URL (--redis or FLINT_REDIS_URL); "
                                 "the embedded queue lives inside `flint run` and `flint serve`")
        queues = default_queues(settings, [n.strip() for n in names.split(",") if n.strip()] if names else None)
        queue = JobQueue(connect(settings), settings)
        queue.ping()
    except FlintError as exc:
        click.echo(f"flint worker: {exc.message}", err=True)
        sys.exit(1)
    the_worker = Worker(settings, queue, queues, burst=burst, name=name)
    stop = lambda signum, frame: the_worker.stop(wake=False)  # noqa: E731 - a signal handler
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    count = the_worker.work()
    click.echo(f"worker {the_worker.id} stopped after {count} jobs", err=True)


@cli.command()
@click.pass_obj
def bits(state: _Context) -> None:
    """List the flintbits: uploaded ones and those in FLINT_FLINTBITS."""
    try:
        _emit(state.client().store.list())
    except FlintError as exc:
        click.echo(f"flint: {exc.message}", err=True)
        sys.exit(1)


@cli.command()
@click.pass_obj
def connectors(state: _Context) -> None:
    """List the configured connectors (name, type, description; never config values)."""
    try:
        _emit(state.client().connectors())
    except FlintError as exc:
        click.echo(f"flint: {exc.message}", err=True)
        sys.exit(1)


@cli.command()
@click.option("--connect", is_flag=True, help="Also connect to each connector's server.")
@click.pass_obj
def check(state: _Context, connect: bool) -> None:
    """Check the configuration, the flintbits and (with --connect) the connectors' servers."""
    from runtime.checks import run_checks

    report = run_checks(state.config_dir, state.redis_url, connect=connect)
    _emit(report)
    sys.exit(0 if report["ok"] else 1)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default api.host: 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default api.port: 3501).")
@click.pass_obj
def serve(state: _Context, host: str | None, port: int | None) -> None:
    """Serve the REST API (on the embedded queue its in-process workers run the jobs)."""
    import uvicorn

    from runtime.api import create_app, uvicorn_log_config

    try:
        settings = state.settings()
        app = create_app(settings)
    except FlintError as exc:
        click.echo(f"flint serve: {exc.message}", err=True)
        sys.exit(1)
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port,
                log_config=uvicorn_log_config())


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("ref")
@click.pass_obj
def upload(state: _Context, file: str, ref: str) -> None:
    """Upload FILE as flintbit REF (kept in Redis, seen by every worker); prints {"ref", "version"}."""
    try:
        if state.settings().embedded:
            raise InvalidRequest("flint upload needs a Redis URL (--redis or FLINT_REDIS_URL): the embedded "
                                 "queue lives only inside one process; put the file under FLINT_FLINTBITS instead")
        try:
            source = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"cannot read {file}: {exc}") from None
        _emit(state.client().store.upload(ref, source, username="cli"))
    except FlintError as exc:
        click.echo(f"flint upload: {exc.message}", err=True)
        sys.exit(1)


@cli.group("user")
def user_group() -> None:
    """Manage REST API users (the users file keeps hashes only)."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "user"]), default="user", show_default=True,
              help="admin may also upload and delete flintbits.")
@click.option("--password-stdin", is_flag=True, help="Read a password from the first line of stdin "
              "(else the user signs in with its flint-key only).")
@click.pass_obj
def user_add(state: _Context, name: str, role: str, password_stdin: bool) -> None:
    """Create or replace API user NAME and print its new flint-key (one line; it is not stored)."""
    from runtime.auth import UserStore

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: no password on the first line of stdin")
    try:
        settings = state.settings()
        key = UserStore(settings.users_file or settings.config_dir / "users.yaml").add(name, role, password)
    except FlintError as exc:
        click.echo(f"flint user add: {exc.message}", err=True)
        sys.exit(2 if type(exc) is InvalidRequest else 1)
    click.echo(key)


def main() -> None:
    """Console entry point."""
    cli(prog_name="flint")
