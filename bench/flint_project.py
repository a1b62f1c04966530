"""A throwaway Flint project for one bench run: config, the bench's flintbits, and its workers.

The project lives in a fresh directory, uses the bench's Redis under a key prefix of its own, and
has one connector, ``smtp``, pointed at the SMTP sink (no TLS, no auth). Workers are real
``flint worker`` processes (the console entry point, run by this interpreter).

How long the runtime took is read from Redis, not from the worker's wall time, so that process
start-up (imports, config, connecting) is not counted: from the earliest ``started`` stamp the
worker put on a job when it claimed it, to the latest entry id (Redis's own clock, in ms) of the
jobs' ``done`` streams, written when each result was stored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.servers import BenchError
from bench.tasks import BODY, RECIPIENT, SENDER
from runtime.client import FlintClient
from runtime.keys import Keys
from runtime.settings import Settings

__all__ = ["BenchProject", "REPO", "NOOP", "BULK", "PROBE", "ATTACH", "NOOP_SOURCE"]

REPO = Path(__file__).resolve().parent.parent

NOOP, BULK, PROBE, ATTACH, SEND = "bench:noop.py", "bench:bulk.py", "bench:probe.py", "bench:attach.py", "bench:send.py"

NOOP_SOURCE = "pass\n"

_BITS = {
    NOOP: NOOP_SOURCE,
    BULK: f"""\
        count = int(input.get("count", 1000))
        for index in range(count):
            response = (connector("smtp").set("to", {RECIPIENT!r}).set("subject", f"bench message {{index}}")
                        .set("body", {BODY!r}).sync())
            if response.exitcode != 0:
                output.exit(response.exitcode, response.message)
        output.set("sent", count)
        """,
    SEND: f"""\
        response = connector("smtp").set("to", {RECIPIENT!r}).set("subject", "warm-up").set("body", {BODY!r}).sync()
        if response.exitcode != 0:
            output.exit(response.exitcode, response.message)
        """,
    ATTACH: f"""\
        response = (connector("smtp").set("to", {RECIPIENT!r}).set("subject", "a 10 MB attachment")
                    .set("body", {BODY!r}).set("attachments", [input.get("path")]).sync())
        if response.exitcode != 0:
            output.exit(response.exitcode, response.message)
        """,
    PROBE: """\
        import os
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        output.set("pid", os.getpid())
        output.set("VmHWM-kB", int(fields["VmHWM"].split()[0])).set("VmRSS-kB", int(fields["VmRSS"].split()[0]))
        """,
}


class BenchProject:
    """Config and flintbits under ``root``; the bench's Redis; the SMTP sink as connector ``smtp``."""

    def __init__(self, root: Path, redis_url: str, sink_port: int) -> None:
        self.root = root
        self.redis_url = redis_url
        self.config_dir = root / "config"
        self.bits_dir = root / "flintbits"
        self.attachments_dir = root / "var" / "attachments"
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        for directory in (self.config_dir, self.bits_dir, self.attachments_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._write(self.config_dir / "flint.yaml", {
            "redis": {"url": redis_url, "prefix": self.prefix}, "flintbits": str(self.bits_dir)})
        self._write(self.config_dir / "connectors.yaml", {"connectors": {"smtp": {
            "type": "smtp", "description": "the bench's SMTP sink",
            "config": {"target": "127.0.0.1", "port": sink_port, "security": "none", "from": SENDER,
                       "attachment_size": 10, "attachment-roots": [str(self.attachments_dir)]}}}})
        (self.config_dir / "global.yaml").write_text("{}\n")
        for ref, source in _BITS.items():
            path = self.bits_dir.joinpath(*ref.split(":"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.keys = Keys(self.prefix)
        self._client: FlintClient | None = None

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        path.write_text(yaml.safe_dump(data))

    def settings(self) -> Settings:
        """The project's settings (the environment does not leak in)."""
        return Settings.load(self.config_dir, redis_url=self.redis_url, env={})

    def client(self) -> FlintClient:
        """A client that submits to the project's queues (workers run elsewhere)."""
        if self._client is None:
            self._client = FlintClient(self.settings())
        return self._client

    # -- processes -------------------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        """``flint --config DIR ARGS...`` with this interpreter."""
        return [sys.executable, "-c", "from runtime.cli import main; main()", "--config", str(self.config_dir), *args]

    def environment(self) -> dict[str, str]:
        """The environment of the project's processes: the repository importable, no stray Flint settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        return env

    def popen(self, *args: str, log: str) -> subprocess.Popen:
        """Start ``flint ARGS...`` in the project directory; its output goes to ``log`` there."""
        with open(self.root / log, "ab") as out:
            return subprocess.Popen(self.command(*args), cwd=self.root, env=self.environment(),
                                    stdout=out, stderr=subprocess.STDOUT)

    def user_key(self, name: str = "bench") -> str:
        """Add API user ``name`` with ``flint user add``; its flint-key."""
        done = subprocess.run(self.command("user", "add", name), cwd=self.root, env=self.environment(),
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"flint user add failed: {done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1]

    def burst_worker(self, timeout: float = 300.0) -> float:
        """Run one ``flint worker --burst`` to the end; return its wall time (start-up included)."""
        started = time.perf_counter()
        process = self.popen("worker", "--burst", log="worker.log")
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise BenchError(f"flint worker --burst still running after {timeout:.0f} s") from None
        if code != 0:
            raise BenchError(f"flint worker --burst exited with {code}: {self.tail('worker.log')}")
        return time.perf_counter() - started

    def tail(self, log: str, lines: int = 15) -> str:
        """The last lines of a log in the project directory."""
        try:
            return "\n".join((self.root / log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- jobs ------------------------------------------------------------------------------------
    def queue_bits(self, ref: str, count: int, body: dict[str, Any] | None = None) -> list[str]:
        """Queue ``count`` runs of flintbit ``ref`` (async, as the API's run endpoint does)."""
        client = self.client()
        return [client.run_bit(ref, body or {}, wait=False, username="bench")["meta"]["job-id"] for _ in range(count)]

    def queue_sends(self, count: int) -> list[str]:
        """Queue ``count`` direct smtp connector requests (``call_connector``)."""
        client = self.client()
        return [client.call_connector("smtp", {"to": RECIPIENT, "subject": f"bench message {i}", "body": BODY},
                                      wait=False, username="bench")["meta"]["job-id"] for i in range(count)]

    def envelopes(self, jobids: list[str]) -> list[dict[str, Any]]:
        """The jobs' envelopes as they stand."""
        return [self.client().result(jobid) for jobid in jobids]

    def check(self, jobids: list[str]) -> None:
        """BenchError unless every job ended ``complete`` with exit-code 0 (read through the client)."""
        for jobid, result in zip(jobids, self.envelopes(jobids)):
            meta = result["meta"]
            if meta["status"] != "complete" or meta["exit-code"] != 0:
                raise BenchError(f"job {jobid} ended {meta['status']} {meta['exit-code']}: {meta['message']}; "
                                 f"worker log:\n{self.tail('worker.log')}")

    def window(self, jobids: list[str]) -> tuple[int, float] | None:
        """(jobs, seconds from the first claim to the last stored result), or None without the stamps.

        The stamps are the ``started`` field of each job's hash and the id of the entry in its
        ``done`` stream; None when a runtime version no longer writes them (the caller then falls
        back to wall time minus start-up).
        """
        pipe = self.redis.pipeline(transaction=False)
        for jobid in jobids:
            pipe.hget(self.keys.job(jobid), "started")
            pipe.xrevrange(self.keys.done(jobid), count=1)
        replies = pipe.execute()
        starts: list[int] = []
        ends: list[int] = []
        for started, done in zip(replies[0::2], replies[1::2]):
            if not started or not str(started).isdigit() or not done:
                return None
            starts.append(int(started))
            ends.append(int(done[0][0].split("-")[0]))
        return len(jobids), (max(ends) - min(starts)) / 1000.0

    def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            self._client.close()
            self._client.queue.redis.close()
        self.redis.close()
