"""Schemathesis against the app's own /openapi.json, in process (ASGI), as an admin.

For every operation, generated requests (valid and invalid parameters and bodies) never get a
500, every non-2xx body is an error envelope, and statuses, content types and bodies conform to
what the OpenAPI document says. The project has an example flintbit (``box:bit.py``, from the
``creds`` fixture) and the capture smtp connector, so generated requests can reach real jobs.
"""

from __future__ import annotations

import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from tests.api.conftest import test_client


@schemathesis.check
def error_bodies_are_envelopes(ctx, response, case) -> None:
    """Every response outside 2xx is ``{"meta": {... "exit-code" ...}, "output": {}}``."""
    if 200 <= response.status_code < 300:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"meta", "output"}, body
    assert isinstance(body["meta"].get("exit-code"), int) and body["meta"].get("status") == "error", body
    assert body["output"] == {}, body
    return None


# Random refs, connector names and job ids reach only 400 and 404; about half the generated cases
# are steered (deterministically, by a hash of the case) to things that exist, so real jobs run.
JOBS: list[str] = ["job-00000000-0000-0000-0000-000000000000"]
GOOD = {"ref": ["box:bit.py", "box:bit.py", "box:nope.py"], "name": ["smtp"], "job_id": JOBS,
        "timeout_ms": [1, 50, 2000]}


def steer(case) -> None:
    params = dict(case.path_parameters or {})
    pick = zlib.crc32(repr((sorted(params.items(), key=str), case.body, case.query)).encode())
    if pick % 2 or not set(params) & set(GOOD):
        return
    for key in params:
        if key in GOOD and (key != "timeout_ms" or pick % 3):
            params[key] = GOOD[key][pick // 2 % len(GOOD[key])]
    case.path_parameters = params


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          error_bodies_are_envelopes]


@pytest.fixture
def api_schema(project, creds):
    """The app's OpenAPI document, loaded over ASGI from an app whose lifespan (workers) is running."""
    with test_client(project.settings()) as client:
        for sync in ("", "/sync"):
            envelope = client.post(f"/v1/bit/run/box:bit.py{sync}", json={"name": "x"}, headers=creds.user()).json()
            JOBS.append(envelope["meta"]["job-id"])
        yield schemathesis.openapi.from_asgi("/openapi.json", client.app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case, creds):
    steer(case)
    case.call_and_validate(headers=creds.admin(), checks=CHECKS)
