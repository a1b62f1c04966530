"""Malformed and schema-invalid configuration, through ``flint check``, ``flint run`` and the API.

Each error names the file (and the line, for broken YAML, or the key), never a secret's value,
and is an envelope with -2 (exit status 1) from ``flint run``; the API never answers with a
traceback: ``flint serve`` stops with the message, or the job's envelope carries it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from runtime.api import create_app
from runtime.auth import UserStore
from runtime.errors import ConfigError
from tests.servers.redis import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET_VALUE = "hunter2-do-not-show"


def flint(project, *args, env=None, timeout=60):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLINT_", "CFGTEST_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-c", "from runtime.cli import main; main()", "--config",
                           str(project.config_dir), *args], cwd=project.root, env=environ, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# (file, content, check that fails, what the message must say)
CASES = {
    "flint.yaml broken": ("flint.yaml", "redis:\n  prefix: [unclosed\n", "flint.yaml",
                          ["flint.yaml: line 3:", "expected ',' or ']'"]),
    "connectors.yaml broken": ("connectors.yaml", "connectors:\n  smtp:\n    type: smtp\n   bad: indent\n",
                               "connectors.yaml", ["connectors.yaml: line 4:"]),
    "global.yaml broken": ("global.yaml", "team: {name: ops\n", "global.yaml", ["global.yaml: line 2:"]),
    "flint.yaml tab": ("flint.yaml", "jobs:\n\tdefault-timeout: 5\n", "flint.yaml",
                       ["flint.yaml: line 2:", "'\\t'"]),
    "flint.yaml not UTF-8": ("flint.yaml", b"jobs: {default-timeout: 5} # \xff\n", "flint.yaml",
                             ["flint.yaml: not UTF-8 text (byte 29)"]),
    "flint.yaml NUL": ("flint.yaml", "jobs: {default-timeout: 5}\nredis: {prefix: a\x00b}\n", "flint.yaml",
                       ["flint.yaml: line 2: character #x0000"]),
    "connectors.yaml duplicate name": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, config: {capture-dir: a}}\n"
                                       "  smtp: {type: smtp, config: {capture-dir: b}}\n", "connectors.yaml",
                                       ["connectors.yaml: line 3: duplicate key 'smtp'"]),
    "global.yaml self alias": ("global.yaml", "a: &x [*x]\n", "global.yaml", ["global.yaml: a[0]:", "itself"]),
    "flint.yaml unknown key": ("flint.yaml", "workers: 3\n", "flint.yaml", ["flint.yaml: unknown key: workers"]),
    "flint.yaml unknown key in a section": ("flint.yaml", "jobs: {max-outputs: 3}\n", "flint.yaml",
                                            ["flint.yaml: unknown key in jobs: max-outputs"]),
    "flint.yaml wrong type": ("flint.yaml", "jobs: {default-timeout: soon}\n", "flint.yaml",
                              ["jobs.default-timeout must be a whole number, not 'soon'"]),
    "flint.yaml boolean timeout": ("flint.yaml", "jobs: {default-timeout: true}\n", "flint.yaml",
                                   ["jobs.default-timeout must be a whole number, not True"]),
    "flint.yaml fractional timeout": ("flint.yaml", "jobs: {default-timeout: 1.5}\n", "flint.yaml",
                                      ["jobs.default-timeout must be a whole number, not 1.5"]),
    "flint.yaml timeout past a day": ("flint.yaml", "jobs: {default-timeout: 9999999999999}\n", "flint.yaml",
                                      ["jobs.default-timeout must be at most 86400000 (a day), not 9999999999999"]),
    "flint.yaml section not a mapping": ("flint.yaml", "jobs: [1, 2]\n", "flint.yaml", ["jobs must be a mapping"]),
    "flint.yaml prefix a mapping": ("flint.yaml", "redis: {prefix: {a: 1}}\n", "flint.yaml",
                                    ["redis.prefix must be text"]),
    "flint.yaml unset variable": ("flint.yaml", "redis: {prefix: '${CFGTEST_UNSET}'}\n", "flint.yaml",
                                  ["flint.yaml: redis.prefix: environment variable CFGTEST_UNSET is not set"]),
    "connectors.yaml unknown key": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, config: "
                                    "{capture-dir: var/mail, colour: red}}\n", "connectors.yaml",
                                    ["connectors.smtp.config: unknown key: 'colour'"]),
    "connectors.yaml unknown entry key": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, kind: x, config: "
                                          "{capture-dir: var/mail}}\n", "connectors.yaml",
                                          ["connectors.smtp: unknown key: kind"]),
    "connectors.yaml wrong type": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, config: "
                                   "{target: h, port: abc}}\n", "connectors.yaml",
                                   ["connectors.smtp.config: 'port' must be of type integer"]),
    "connectors.yaml wrong type beside a secret": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, config: "
                                                   "{target: h, port: [1], username: u, "
                                                   "password: secrets.CFGTEST_SET}}\n", "connectors.yaml",
                                                   ["connectors.smtp.config: 'port' must be of type integer"]),
    "connectors.yaml not a mapping": ("connectors.yaml", "connectors: [a, b]\n", "connectors.yaml",
                                      ["must be a mapping with a 'connectors' mapping"]),
    "connectors.yaml description a list": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, description: [a], "
                                           "config: {capture-dir: var/mail}}\n", "connectors.yaml",
                                           ["connectors.smtp.description: must be text"]),
    "connectors.yaml unknown type": ("connectors.yaml", "connectors:\n  smtp: {type: smtpx, config: {}}\n",
                                     "connectors.yaml", ["connectors.smtp.type: unknown connector type 'smtpx'",
                                                         "smtp, imap, pop3"]),
    "connectors.yaml missing secret": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, config: "
                                       "{target: h, username: u, password: secrets.CFGTEST_NO_SUCH}}\n",
                                       "connectors.yaml", ["connectors.smtp.config.password: secret CFGTEST_NO_SUCH "
                                                           "is not set"]),
    "connectors.yaml unset variable": ("connectors.yaml", "connectors:\n  smtp: {type: smtp, config: "
                                       "{target: '${CFGTEST_UNSET}'}}\n", "connectors.yaml",
                                       ["connectors.smtp.config.target: environment variable CFGTEST_UNSET"]),
    "global.yaml unset variable": ("global.yaml", "a: '${CFGTEST_UNSET}'\n", "global.yaml",
                                   ["global.yaml: a: environment variable CFGTEST_UNSET is not set"]),
    "secrets file not a mapping": ("secrets.yaml", "- a\n- b\n", "connectors.yaml",
                                   ["secrets.yaml: must be a mapping of NAME: value"]),
    "secrets file broken": ("secrets.yaml", "CFGTEST_PW: [\n", "connectors.yaml", ["secrets.yaml: line 2:"]),
}

NEEDS_SECRET = {"secrets file not a mapping", "secrets file broken"}


def write_case(project, name):
    file, content, _, _ = CASES[name]
    if name in NEEDS_SECRET:
        project.connectors({"connectors": {"smtp": {"type": "smtp", "config": {
            "target": "h", "username": "u", "password": "secrets.CFGTEST_PW"}}}})
    path = project.config_dir / file
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    if file == "flint.yaml":  # keep the project's flintbits directory
        with path.open("ab") as handle:
            handle.write(f"flintbits: {project.bits_dir}\n".encode())


@pytest.mark.parametrize("name", list(CASES))
def test_flint_check_and_flint_run_name_the_file_and_fail_with_minus_2(project, name):
    _, _, failing, needles = CASES[name]
    project.bit("box:bit.py", "output.set('a', config.get('a'))\n")
    write_case(project, name)
    env = {"CFGTEST_SET": SECRET_VALUE}

    check = flint(project, "check", env=env)
    assert check.returncode == 1, check.stdout + check.stderr
    report = json.loads(check.stdout)
    [problem] = [c for c in report["checks"] if not c["ok"]]
    assert problem["check"] == failing
    for needle in needles:
        assert needle in problem["detail"], problem["detail"]

    run = flint(project, "run", "box:bit.py", env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    meta = json.loads(run.stdout)["meta"]
    assert (meta["exit-code"], meta["status"]) == (-2, "error"), meta
    for needle in needles:
        assert needle in meta["message"]
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    assert SECRET_VALUE not in run.stdout + run.stderr + check.stdout


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[0] != "global.yaml"])
def test_the_api_refuses_to_start_on_a_broken_config_with_the_message(project, name, monkeypatch):
    """flint.yaml and connectors.yaml (and the secrets they need) are read before serving."""
    _, _, _, needles = CASES[name]
    monkeypatch.setenv("CFGTEST_SET", SECRET_VALUE)
    monkeypatch.delenv("CFGTEST_UNSET", raising=False)
    write_case(project, name)
    with pytest.raises(ConfigError) as raised:
        create_app(project.settings())
    for needle in needles:
        assert needle in raised.value.message
    assert SECRET_VALUE not in raised.value.message


@pytest.mark.parametrize("name", ["connectors.yaml broken", "flint.yaml unknown key",
                                  "connectors.yaml missing secret"])
def test_flint_serve_stops_with_the_message_and_no_traceback(project, name):
    _, _, _, needles = CASES[name]
    write_case(project, name)
    serve = flint(project, "serve", "--port", str(free_port()), timeout=30)
    assert serve.returncode == 1
    assert "Traceback" not in serve.stderr and serve.stderr.startswith("flint serve: ")
    for needle in needles:
        assert needle in serve.stderr


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[0] == "global.yaml"])
def test_a_broken_global_yaml_fails_each_job_with_minus_2_not_the_api(project, creds, name):
    _, _, _, needles = CASES[name]
    write_case(project, name)
    with TestClient(create_app(project.settings()), raise_server_exceptions=False) as api:
        response = api.post("/v1/bit/run/box:bit.py/sync", headers=creds.user())
        assert response.status_code == 200  # the job was accepted; its envelope carries the failure
        meta = response.json()["meta"]
        assert (meta["exit-code"], meta["status"]) == (-2, "error")
        for needle in needles:
            assert needle in meta["message"]
        assert api.get("/v1/connectors", headers=creds.user()).status_code == 200


def test_a_broken_users_file_is_an_envelope_naming_the_line_never_quoting_it(project, creds):
    with TestClient(create_app(project.settings()), raise_server_exceptions=False) as api:
        hashes = (project.config_dir / "users.yaml").read_text()
        (project.config_dir / "users.yaml").write_text(hashes + "  broken: [\n")
        response = api.get("/v1/bits", headers=creds.user())
        assert response.status_code == 500
        body = response.json()
        assert body["output"] == {} and body["meta"]["exit-code"] == -2
        message = body["meta"]["message"]
        assert "users.yaml: line" in message and "Traceback" not in response.text
        assert "sha256$" not in response.text and "scrypt$" not in response.text


@pytest.fixture
def creds(project):
    from tests.api.conftest import Credentials, GREETING

    project.bit("box:bit.py", GREETING)
    store = UserStore(project.config_dir / "users.yaml")
    return Credentials(store.add("admin", "admin", "admin-pass-1"), store.add("ops", "user", "ops-pass-1"))
