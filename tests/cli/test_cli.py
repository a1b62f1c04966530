"""The ``flint`` command: envelopes on stdout, exit status 0 / 1 / 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def flint(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-c", "from runtime.cli import main; main()", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_readme_main_command_on_the_shipped_defaults(tmp_path):
    """The README's main job, run from the repository's own config and flintbits."""
    result = flint("--config", str(REPO / "config"), "run", "flint-util:smtp:operation:smtp.py",
                   "--set", "to=ops@example.com", "--set", "subject=Hello", "--set", "body=<p>It works.</p>",
                   cwd=tmp_path, env={"FLINT_FLINTBITS": str(REPO / "flintbits")})
    assert result.returncode == 0, result.stderr
    envelope = json.loads(result.stdout)
    assert envelope["meta"]["exit-code"] == 0 and envelope["meta"]["status"] == "complete"
    eml = Path(envelope["output"]["eml"])
    assert eml.is_file() and eml.is_relative_to(tmp_path / "var/mail")
    assert b"Subject: Hello" in eml.read_bytes()


def test_run_set_values_parse_as_json_else_text(project):
    project.bit("t:echo.py", "output.set('got', input.data())\n")
    result = flint("--config", str(project.config_dir), "run", "t:echo.py", "--input", '{"a": 1, "b": "x"}',
                   "--set", 'to=["a@x.org"]', "--set", "n=3", "--set", "word=hello there", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"]["got"] == {"a": 1, "b": "x", "to": ["a@x.org"], "n": 3,
                                                          "word": "hello there"}


def test_input_from_file_and_nonzero_exit_code_gives_status_1(project):
    project.bit("t:fail.py", "output.exit(7, 'nope: ' + input.get('why'))\n")
    (project.root / "in.json").write_text('{"why": "because"}')
    result = flint("--config", str(project.config_dir), "run", "t:fail.py", "--input", "@in.json", cwd=project.root)
    assert result.returncode == 1
    meta = json.loads(result.stdout)["meta"]
    assert (meta["exit-code"], meta["message"]) == (7, "nope: because")


@pytest.mark.parametrize("args, needle", [
    (["run"], "Missing argument"),
    (["run", "t:x.py", "--set", "novalue"], "KEY=VALUE"),
    (["run", "t:x.py", "--input", "{not json"], "not JSON"),
    (["run", "t:x.py", "--timeout", "0"], "timeout"),
    (["bogus"], "No such command"),
])
def test_usage_errors_exit_2(project, args, needle):
    result = flint("--config", str(project.config_dir), *args, cwd=project.root)
    assert result.returncode == 2 and needle in result.stderr


def test_unknown_flintbit_and_bad_ref_are_enveloped(project):
    missing = flint("--config", str(project.config_dir), "run", "box:none.py", cwd=project.root)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["meta"]["exit-code"] == -3
    assert "flintbit not found: box:none.py" in missing.stderr
    traversal = flint("--config", str(project.config_dir), "run", "box:..:..:etc:passwd.py", cwd=project.root)
    assert json.loads(traversal.stdout)["meta"]["exit-code"] == -2


def test_call_connector_directly(project):
    result = flint("--config", str(project.config_dir), "call", "smtp", "--set", "to=a@example.com",
                   "--set", "subject=direct", "--set", "body=hi", cwd=project.root)
    assert result.returncode == 0, result.stderr
    envelope = json.loads(result.stdout)
    assert envelope["meta"]["context"] == "connector:smtp" and envelope["output"]["result"] == "success"
    bad = flint("--config", str(project.config_dir), "call", "smtp", "--set", "subject=x", cwd=project.root)
    assert bad.returncode == 1 and json.loads(bad.stdout)["meta"]["exit-code"] == -2
    unknown = flint("--config", str(project.config_dir), "call", "smtpx", cwd=project.root)
    assert json.loads(unknown.stdout)["meta"]["message"] == "connector not found: smtpx"


def test_connectors_bits_and_check(project, monkeypatch):
    monkeypatch.setenv("RELAY_PASSWORD", "hidden-value-123")
    project.connectors({"connectors": {"relay": {"type": "smtp", "description": "Outbound relay", "config": {
        "target": "127.0.0.1", "port": 1, "password": "secrets.RELAY_PASSWORD", "username": "u"}}}})
    project.bit("box:good.py", "output.set('a', 1)\n")
    project.bit("box:broken.py", "def f(:\n")
    listed = flint("--config", str(project.config_dir), "connectors", cwd=project.root,
                   env={"RELAY_PASSWORD": "hidden-value-123"})
    assert json.loads(listed.stdout) == [{"name": "relay", "type": "smtp", "description": "Outbound relay"}]
    assert "hidden-value-123" not in listed.stdout
    bits = flint("--config", str(project.config_dir), "bits", cwd=project.root)
    assert [b["ref"] for b in json.loads(bits.stdout)] == ["box:broken.py", "box:good.py"]
    check = flint("--config", str(project.config_dir), "check", "--connect", cwd=project.root,
                  env={"RELAY_PASSWORD": "hidden-value-123"})
    assert check.returncode == 1 and "hidden-value-123" not in check.stdout
    report = {c["check"]: c for c in json.loads(check.stdout)["checks"]}
    assert report["connectors.yaml"]["ok"] and report["flintbit box:good.py"]["ok"]
    assert report["flintbit box:broken.py"]["detail"] == "box:broken.py does not compile: line 1: invalid syntax"
    assert report["connector relay"]["detail"] == "connection refused: 127.0.0.1:1"


def test_missing_secret_is_a_clear_config_error(project):
    project.connectors({"connectors": {"relay": {"type": "smtp", "config": {
        "target": "127.0.0.1", "port": 25, "password": "secrets.NOT_SET_ANYWHERE"}}}})
    result = flint("--config", str(project.config_dir), "call", "relay", "--set", "to=a@b.example", cwd=project.root)
    assert result.returncode == 1
    meta = json.loads(result.stdout)["meta"]
    assert meta["exit-code"] == -2
    assert "secret NOT_SET_ANYWHERE is not set" in meta["message"] and "connectors.yaml" in meta["message"]


def test_output_with_a_lone_surrogate_is_escaped_and_a_huge_timeout_is_a_usage_error(project):
    project.bit("t:odd.py", "output.set('odd', '\\ud800')\n")
    result = flint("--config", str(project.config_dir), "run", "t:odd.py", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert '"odd": "\\ud800"' in result.stdout and json.loads(result.stdout)["meta"]["exit-code"] == 0
    huge = flint("--config", str(project.config_dir), "run", "t:odd.py", "--timeout", "9999999999999", cwd=project.root)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr
