"""Property-based fuzzing of API parameters and bodies through a live server, beyond what the schema describes:
any query string, any JSON body, any bytes with any encoding get a precise 4xx or a success, never a 500."""

from __future__ import annotations

import json
import os

import httpx
import pytest
from conftest import make_settings, new_project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopkit_core.server import in_thread

EXAMPLES = int(os.environ.get("LOOPKIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)
TELEMETRY_PARAMS = ["since_minutes", "until", "limit", "cursor", "issue", "type", "name", "service", "record_id"]
TELEMETRY_PARAMS += ["trace_id", "session_id"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
params = st.lists(
    st.tuples(st.sampled_from(TELEMETRY_PARAMS) | st.text(max_size=8), st.text(max_size=40)),
    max_size=6,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with in_thread(make_settings(tmp_path_factory.mktemp("api-fuzz"))) as running:
        project = new_project(running, "api fuzz")
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            records = [{"type": "error", "name": "pay", "message": f"declined {i}"} for i in range(4)]
            assert client.post("/v1/traces", json={"records": records}, headers=project.auth()).status_code == 200
            packet = client.post("/v1/runs/diagnose", json={}, headers=project.auth("agent")).json()["packet"]
            yield client, project, packet["packet_id"]


def api_error(response: httpx.Response) -> None:
    """A refusal in the API's error shape, with a 4xx status."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert body["ok"] is False and body["error"]["code"] and body["error"]["message"]


@FUZZ
@given(params)
def test_any_telemetry_query_is_a_page_or_a_precise_400(live, query):
    client, project, _ = live
    response = client.get("/v1/telemetry", params=query, headers=project.auth("agent"))
    if response.status_code == 200:
        body = response.json()
        assert body["ok"] is True and isinstance(body["records"], list)
    else:
        api_error(response)


@FUZZ
@given(json_values, st.sampled_from(["/v1/runs/diagnose", "/v1/runs/verify", "approve", "reject"]))
def test_any_json_body_for_runs_and_decisions_is_answered_precisely(live, body, route):
    client, project, packet_id = live
    kind = "agent"
    if route in ("approve", "reject"):
        route, kind = f"/v1/packets/{packet_id}/{route}", "dashboard"
    response = client.post(
        route, content=json.dumps(body), headers={**project.auth(kind), "content-type": "application/json"}
    )
    if response.status_code == 200:
        assert response.json()["ok"] is True
    else:
        api_error(response)


@FUZZ
@given(
    st.binary(max_size=512),
    st.sampled_from(["application/x-protobuf", "application/json", "text/plain", ""]),
    st.sampled_from(["", "gzip", "deflate", "br", "identity"]),
)
def test_any_bytes_posted_to_traces_get_an_otlp_answer(live, body, content_type, encoding):
    client, project, _ = live
    headers = {**project.auth(), "content-type": content_type, "content-encoding": encoding}
    response = client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code in (200, 400, 413, 415), (response.status_code, response.text[:300])


stage_values = json_values | st.sampled_from(
    ["merged", "pr_opened", "deployed", "https://example.com/pr/1", "javascript:alert(1)", "http://[::1", "\x00"]
)
stage_bodies = st.dictionaries(
    st.sampled_from(["stage", "url", "note", "issue_id"]) | st.text(max_size=6), stage_values, max_size=5
)


@FUZZ
@given(stage_bodies)
def test_any_stage_body_is_recorded_as_sent_or_refused_precisely(live, body):
    client, project, packet_id = live
    path = f"/v1/packets/{packet_id}"
    if client.get(path, headers=project.auth("agent")).json()["packet"]["approval"]["state"] != "approved":
        assert client.post(f"{path}/approve", json={"note": "fuzz"}, headers=project.auth("dashboard")).is_success
    headers = {**project.auth("agent"), "content-type": "application/json"}
    response = client.post(f"{path}/stages", content=json.dumps(body), headers=headers)
    if response.status_code == 201:
        stage = response.json()["stage"]
        assert (stage["stage"], stage["url"]) == (body["stage"], body.get("url"))
        assert stage["note"] == ((body.get("note") or "").strip() or None)
    else:
        api_error(response)
