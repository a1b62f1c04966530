"""``flint serve``, ``flint user add`` and Flint's curl clients, as separate processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers.redis import free_port

HERE = Path(__file__).resolve().parent
FLINT = [sys.executable, "-c", "from runtime.cli import main; main()"]
CURL_INSTALL = "curl is not installed: apt-get install -y curl"


def environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}


def flint(project, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FLINT, "--config", str(project.config_dir), *args], cwd=project.root, env=environ(),
                          input=stdin, capture_output=True, text=True, timeout=60)


class Served:
    """A ``flint serve`` process on a free port; its output is collected when it stops."""

    def __init__(self, project) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([*FLINT, "--config", str(project.config_dir), "serve", "--port", str(self.port)],
                                        cwd=project.root, env=environ(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while True:  # wait for the port to answer (process start-up, not a job)
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flint serve did not start: {self.stop()}")
            time.sleep(0.05)

    def stop(self) -> str:
        """Stop the server (SIGTERM: a graceful shutdown) and return everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
        output, _ = self.process.communicate(timeout=20)
        return output


@pytest.fixture
def users(project):
    """``flint user add``: an admin with a password, a key-only user; their keys."""
    admin = flint(project, "user", "add", "boss", "--role", "admin", "--password-stdin", stdin="boss-pass-1\n")
    user = flint(project, "user", "add", "ops")
    assert admin.returncode == 0 and user.returncode == 0, admin.stderr + user.stderr
    assert len(admin.stdout.splitlines()) == len(user.stdout.splitlines()) == 1
    return {"admin": admin.stdout.strip(), "user": user.stdout.strip(), "admin_password": "boss-pass-1"}


def test_user_add_prints_one_key_and_stores_only_hashes(project, users):
    text = (project.config_dir / "users.yaml").read_text()
    for secret in users.values():
        assert len(secret) > 8 and secret not in text
    assert flint(project, "user", "add", "bad name").returncode == 2
    assert flint(project, "user", "add", "x", "--role", "root").returncode == 2
    empty = flint(project, "user", "add", "x", "--password-stdin", stdin="")
    assert empty.returncode == 2 and "no password" in empty.stderr


def test_flint_upload_needs_redis(project):
    script = project.root / "x.py"
    script.write_text("output.set('a', 1)\n")
    result = flint(project, "upload", str(script), "up:x.py")
    assert result.returncode == 1 and "needs a Redis URL" in result.stderr


def test_curl_clients_against_flint_serve(project, users):
    if shutil.which("curl") is None:
        pytest.fail(CURL_INSTALL, pytrace=False)
    project.bit("box:bit.py", 'name = input.get("name", "world")\nlog.info(f"greeting {name}")\n'
                              'output.set("greeting", f"Hello, {name}!")\n')
    served = Served(project)
    try:
        script = subprocess.run(["bash", str(HERE / "test_curl.sh")], capture_output=True, text=True, timeout=60,
                                env={**environ(), "PORT": str(served.port), "KEY": users["user"], "ADMIN": "boss",
                                     "ADMIN_PASSWORD": users["admin_password"]})
    finally:
        log = served.stop()
    assert script.returncode == 0, script.stdout + script.stderr
    assert "all curl checks passed" in script.stdout
    assert "Application shutdown complete" in log
    assert "flint-key=***" in log  # the access log shows the query key redacted
    for secret in users.values():
        assert secret not in log
