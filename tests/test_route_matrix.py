"""Every /v1 route and gRPC Export × every kind of key: the exact status, from one table (docs/scopes.md)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import make_settings
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from loopkit_core.app import ROUTES
from loopkit_core.projects import rotate_keys
from loopkit_core.server import Running, in_thread

REPO = Path(__file__).resolve().parent.parent
# The record every project-scoped read finds: in a session and a trace, so the session and trace routes have one.
SESSION_ID, TRACE_ID = "sess-seed", "5eed" * 8
SEED = {"type": "event", "name": "seed", "session_id": SESSION_ID, "trace_id": TRACE_ID, "span_id": "5eed" * 4}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GRPC_ROW = "gRPC TraceService/Export"
GRPC_LOGS_ROW = "gRPC LogsService/Export"
GRPC_METRICS_ROW = "gRPC MetricsService/Export"
GRPC_ROWS = {GRPC_ROW, GRPC_LOGS_ROW, GRPC_METRICS_ROW}

# Who calls: no key, two malformed authorization values, the project's three keys, the three keys of another
# project, and the project's three keys after `rotate_keys` revoked them.
KEYS = [
    "none",
    "Bearer not-a-key",
    "Basic abc",
    "producer",
    "agent",
    "dashboard",
    "other producer",
    "other agent",
    "other dashboard",
    "revoked producer",
    "revoked agent",
    "revoked dashboard",
]
MALFORMED = ("Bearer not-a-key", "Basic abc")
OWN_PROJECT = "*"  # the call succeeds, in the key's own project (writes land there, reads see only it)
_401 = {"none": "401", "Bearer not-a-key": "401", "Basic abc": "401"}
_REVOKED_401 = {"revoked producer": "401", "revoked agent": "401", "revoked dashboard": "401"}
_UNAUTH = {k: "UNAUTHENTICATED" for k in KEYS if k in _401 or k in _REVOKED_401}

# THE TABLE: route -> key -> status. The single source of truth for docs/scopes.md and for this test.
TABLE: dict[str, dict[str, str]] = {
    "POST /v1/signup": dict.fromkeys(KEYS, "201"),
    "POST /v1/provision": dict.fromkeys(KEYS, "201"),  # a new name: minting needs no key
    "POST /v1/recover": dict.fromkeys(KEYS, "200"),  # the recovery code decides, not the key
    "POST /v1/traces": {
        **_401,
        "producer": "200",
        "agent": "403",
        "dashboard": "403",
        "other producer": "200" + OWN_PROJECT,
        "other agent": "403",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "POST /v1/logs": {
        **_401,
        "producer": "200",
        "agent": "403",
        "dashboard": "403",
        "other producer": "200" + OWN_PROJECT,
        "other agent": "403",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "POST /v1/metrics": dict.fromkeys(KEYS, "501"),  # never stored, whoever calls: the answer is the same
    "GET /v1/telemetry": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/records/{record_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "404",  # another project's record does not exist for this key
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/sessions": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/sessions/{session_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/traces/{trace_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "POST /v1/runs/diagnose": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "POST /v1/runs/verify": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "404",  # another project's packet does not exist for this key
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/packets": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "GET /v1/packets/{packet_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",  # another project's packet does not exist for this key
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "GET /v1/packets/{packet_id}/handoff": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",  # handoffs are for agents: reports:read, which the dashboard key does not hold
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "POST /v1/evals": {
        **_401,
        "producer": "403",
        "agent": "201",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "404",  # another project's packet does not exist for this key
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/packets/{packet_id}/evals": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",  # eval specs are for agents: reports:read
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "POST /v1/packets/{packet_id}/approve": {
        **_401,
        "producer": "403",
        "agent": "403",  # only a person, with the dashboard key (approvals:write), decides
        "dashboard": "200",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/packets/{packet_id}/reject": {
        **_401,
        "producer": "403",
        "agent": "403",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/packets/{packet_id}/stages": {  # the cell approves the packet first (dashboard key)
        **_401,
        "producer": "403",
        "agent": "201",
        "dashboard": "403",  # stages are recorded by the agent that did them (runs:write)
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/loops": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "GET /v1/issues/{fingerprint}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",  # another project's issues do not exist for this key
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/issues/{fingerprint}/merge": {  # the cell unmerges first (dashboard key), so the merge can hold
        **_401,
        "producer": "403",
        "agent": "403",  # only a person, with the dashboard key (approvals:write), merges
        "dashboard": "200",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/issues/{fingerprint}/unmerge": {  # the cell merges first (dashboard key), so there is one to undo
        **_401,
        "producer": "403",
        "agent": "403",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "GET /v1/plugins": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "403",
        "other producer": "403",
        "other agent": "200",
        "other dashboard": "403",
        **_REVOKED_401,
    },
    "GET /v1/grouping/rules": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "PUT /v1/grouping/rules": {
        **_401,
        "producer": "403",
        "agent": "403",  # grouping is a person's decision: approvals:write, the dashboard key's
        "dashboard": "200",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    # The dashboard (sent with `accept: application/json`, so errors are the API's JSON): the dashboard key reads and
    # decides, the agent key only reads. Forms answer 303 (a redirect to the page) on success.
    "GET /v1/dashboard": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "GET /v1/dashboard/packets/{packet_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "GET /v1/dashboard/records/{record_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "GET /v1/dashboard/issues": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "GET /v1/dashboard/issues/{fingerprint}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/dashboard/issues/{fingerprint}/merge": {
        **_401,
        "producer": "403",
        "agent": "403",
        "dashboard": "303",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/dashboard/issues/{fingerprint}/unmerge": {
        **_401,
        "producer": "403",
        "agent": "403",
        "dashboard": "303",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "GET /v1/dashboard/sessions": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "200" + OWN_PROJECT,
        "other dashboard": "200" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "GET /v1/dashboard/sessions/{session_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "GET /v1/dashboard/traces/{trace_id}": {
        **_401,
        "producer": "403",
        "agent": "200",
        "dashboard": "200",
        "other producer": "403",
        "other agent": "404",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/dashboard/login": {  # the key goes in the form body, not in a header
        **_401,
        "producer": "403",
        "agent": "303",
        "dashboard": "303",
        "other producer": "403",
        "other agent": "303" + OWN_PROJECT,
        "other dashboard": "303" + OWN_PROJECT,
        **_REVOKED_401,
    },
    "POST /v1/dashboard/logout": dict.fromkeys(KEYS, "303"),  # forgetting a session needs no key
    "POST /v1/dashboard/packets/{packet_id}/approve": {
        **_401,
        "producer": "403",
        "agent": "403",
        "dashboard": "303",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    "POST /v1/dashboard/packets/{packet_id}/reject": {
        **_401,
        "producer": "403",
        "agent": "403",
        "dashboard": "303",
        "other producer": "403",
        "other agent": "403",
        "other dashboard": "404",
        **_REVOKED_401,
    },
    GRPC_ROW: {
        **_UNAUTH,
        "producer": "OK",
        "agent": "PERMISSION_DENIED",
        "dashboard": "PERMISSION_DENIED",
        "other producer": "OK" + OWN_PROJECT,
        "other agent": "PERMISSION_DENIED",
        "other dashboard": "PERMISSION_DENIED",
    },
    GRPC_LOGS_ROW: {
        **_UNAUTH,
        "producer": "OK",
        "agent": "PERMISSION_DENIED",
        "dashboard": "PERMISSION_DENIED",
        "other producer": "OK" + OWN_PROJECT,
        "other agent": "PERMISSION_DENIED",
        "other dashboard": "PERMISSION_DENIED",
    },
    GRPC_METRICS_ROW: dict.fromkeys(KEYS, "UNIMPLEMENTED"),
}


def render_table() -> str:
    """TABLE as a markdown table (rows: routes; columns: key kinds)."""
    lines = [
        "| route | " + " | ".join(f"`{k}`" if k in MALFORMED else k for k in KEYS) + " |",
        "|---|" + "---|" * len(KEYS),
    ]
    for route, cells in TABLE.items():
        lines.append(f"| `{route}` | " + " | ".join(cells[k] for k in KEYS) + " |")
    return "\n".join(lines) + "\n"


def app_v1_routes() -> set[str]:
    """'METHOD /path' for every /v1 route the app serves (HEAD, which Starlette adds to GET, left out)."""
    return {
        f"{method} {route.path}"
        for route in ROUTES
        if route.path.startswith("/v1")
        for method in sorted(route.methods or ())
        if method != "HEAD"
    }


def test_the_matrix_covers_every_v1_route_and_every_key_kind():
    assert app_v1_routes() == set(TABLE) - GRPC_ROWS
    for route, cells in TABLE.items():
        assert set(cells) == set(KEYS), route


def test_docs_scopes_md_is_the_table():
    doc = (REPO / "docs" / "scopes.md").read_text()
    assert render_table() in doc
    assert "tests/test_route_matrix.py" in doc


@dataclass
class World:
    """A server, the project under test, another project, and the secrets each cell needs."""

    server: Running
    client: httpx.Client
    project_id: str
    keys: dict[str, str]  # every column of KEYS that is a key -> the key
    other_id: str
    other_agent: str
    record_id: str  # a record of the project under test
    packet_id: str  # a packet of the project under test
    eval_candidate: str  # the eval candidate of the packet's issue
    fingerprint: str  # the fingerprint of the packet's first issue (merged into the second by the merge cells)
    into: str  # the fingerprint of the packet's second issue
    victim_id: str  # a third project whose keys POST /v1/recover rotates, cell after cell
    recovery_code: str
    stored: dict[str, set[str]] = field(default_factory=dict)  # project -> names of the records posted to it
    counter: itertools.count = field(default_factory=itertools.count)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server for the whole matrix (rate limit raised: the project routes are called many times)."""
    settings = make_settings(tmp_path_factory.mktemp("matrix") / "data", rate_limit_per_hour=10_000)
    with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:

        def signup(name: str) -> dict:
            response = client.post("/v1/signup", json={"project_name": name})
            assert response.status_code == 201
            return response.json()

        mine, other, victim = signup("mine"), signup("other"), signup("victim")
        seeded = client.post("/v1/traces", json={"records": [SEED]}, headers=_auth(mine["producer_key"]))
        assert seeded.status_code == 200
        # Three failures of one kind: the packet gets an issue, so it has an eval candidate (POST /v1/evals).
        failures = [{"type": "error", "name": "seed", "message": f"declined {i}"} for i in range(3)]
        # And three tool failures: a second issue, for the merge routes.
        failures += [{"type": "tool_failure", "name": "seed", "message": f"tool broke {i}"} for i in range(3)]
        failed = client.post("/v1/traces", json={"records": failures}, headers=_auth(mine["producer_key"]))
        assert failed.status_code == 200
        diagnosed = client.post("/v1/runs/diagnose", json={}, headers=_auth(mine["agent_key"]))
        assert diagnosed.status_code == 200
        rotated = rotate_keys(server.app.store.control, mine["project_id"])
        keys = {kind: rotated[f"{kind}_key"] for kind in ("producer", "agent", "dashboard")}
        keys |= {f"other {kind}": other[f"{kind}_key"] for kind in ("producer", "agent", "dashboard")}
        keys |= {f"revoked {kind}": mine[f"{kind}_key"] for kind in ("producer", "agent", "dashboard")}
        yield World(
            server=server,
            client=client,
            project_id=mine["project_id"],
            keys=keys,
            other_id=other["project_id"],
            other_agent=other["agent_key"],
            record_id=seeded.json()["record_ids"][0],
            packet_id=diagnosed.json()["packet"]["packet_id"],
            eval_candidate=diagnosed.json()["packet"]["issues"][0]["eval_candidate"],
            fingerprint=diagnosed.json()["packet"]["issues"][0]["fingerprint"],
            into=diagnosed.json()["packet"]["issues"][1]["fingerprint"],
            victim_id=victim["project_id"],
            recovery_code=victim["recovery_code"],
            stored={mine["project_id"]: {"seed"}, other["project_id"]: set()},
        )


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def authorization(world: World, key: str) -> str | None:
    """The authorization value a column sends."""
    if key == "none":
        return None
    if key in MALFORMED:
        return key
    return f"Bearer {world.keys[key]}"


def owner_of(world: World, key: str) -> str:
    """The project a column's key belongs to."""
    return world.other_id if key.startswith("other ") else world.project_id


def names_read(world: World, agent_key: str) -> set[str]:
    """Names of every record an agent key can read in the last hour."""
    response = world.client.get("/v1/telemetry", params={"limit": 1000}, headers=_auth(agent_key))
    assert response.status_code == 200
    return {r["name"] for r in response.json()["records"]}


HTTP_CELLS = [(route, key) for route in TABLE if route not in GRPC_ROWS for key in KEYS]


@pytest.mark.parametrize(("route", "key"), HTTP_CELLS, ids=[f"{r} | {k}" for r, k in HTTP_CELLS])
def test_http_cell(world: World, route: str, key: str):
    expected = TABLE[route][key]
    status = int(expected.rstrip(OWN_PROJECT))
    value = authorization(world, key)
    headers = {"authorization": value} if value is not None else {}
    n = next(world.counter)
    client = world.client
    # Each cell is its key alone: the login cell's session cookie must not authenticate a later "none" cell
    # (it did, in whatever order the cells ran, as a csrf_failed 403).
    client.cookies.clear()
    name = f"cell {n}"
    if route == "POST /v1/signup":
        response = client.post("/v1/signup", json={"project_name": name}, headers=headers)
    elif route == "POST /v1/provision":
        response = client.post("/v1/provision", json={"project_name": name}, headers=headers)
    elif route == "POST /v1/recover":
        body = {"project_id": world.victim_id, "recovery_code": world.recovery_code}
        response = client.post("/v1/recover", json=body, headers=headers)
        if response.status_code == 200:
            world.recovery_code = response.json()["recovery_code"]
    elif route == "POST /v1/traces":
        # A payload naming the project under test never decides where the record goes: the key does.
        record = {"type": "event", "name": name, "attributes": {"project_id": world.project_id}}
        body = {"records": [record], "project_id": world.project_id}
        response = client.post("/v1/traces", json=body, headers=headers)
    elif route == "POST /v1/logs":
        # An OTLP/JSON log record; as for traces, the key alone decides the project.
        log = {"body": {"stringValue": name}, "attributes": [{"key": "project_id", "value": {"stringValue": "x"}}]}
        body = {"resourceLogs": [{"scopeLogs": [{"scope": {"name": name}, "logRecords": [log]}]}]}
        response = client.post("/v1/logs", json=body, headers=headers)
    elif route == "POST /v1/metrics":
        response = client.post("/v1/metrics", json={"resourceMetrics": []}, headers=headers)
    elif route == "GET /v1/telemetry":
        response = client.get("/v1/telemetry", params={"limit": 1000}, headers=headers)
    elif route == "GET /v1/records/{record_id}":
        response = client.get(f"/v1/records/{world.record_id}", headers=headers)
    elif route == "GET /v1/sessions":
        response = client.get("/v1/sessions", headers=headers)
    elif route == "GET /v1/sessions/{session_id}":
        response = client.get(f"/v1/sessions/{SESSION_ID}", headers=headers)
    elif route == "GET /v1/traces/{trace_id}":
        response = client.get(f"/v1/traces/{TRACE_ID}", headers=headers)
    elif route == "POST /v1/runs/diagnose":
        response = client.post("/v1/runs/diagnose", json={"since_minutes": 60}, headers=headers)
    elif route == "GET /v1/packets":
        response = client.get("/v1/packets", headers=headers)
    elif route == "GET /v1/packets/{packet_id}":
        response = client.get(f"/v1/packets/{world.packet_id}", headers=headers)
    elif route == "POST /v1/runs/verify":
        response = client.post("/v1/runs/verify", json={"packet_id": world.packet_id}, headers=headers)
    elif route == "GET /v1/packets/{packet_id}/handoff":
        response = client.get(f"/v1/packets/{world.packet_id}/handoff", params={"format": "json"}, headers=headers)
    elif route == "POST /v1/evals":
        body = {"packet_id": world.packet_id, "eval_candidate": world.eval_candidate, "passed": 1, "failed": 0}
        response = client.post("/v1/evals", json={**body, "commit": "abc", "note": name}, headers=headers)
    elif route == "GET /v1/packets/{packet_id}/evals":
        response = client.get(f"/v1/packets/{world.packet_id}/evals", headers=headers)
    elif route in ("POST /v1/packets/{packet_id}/approve", "POST /v1/packets/{packet_id}/reject"):
        response = client.post(
            route.split(" ")[1].format(packet_id=world.packet_id), json={"note": name}, headers=headers
        )
    elif route == "POST /v1/packets/{packet_id}/stages":
        approved = client.post(
            f"/v1/packets/{world.packet_id}/approve", json={"note": "go"}, headers=_auth(world.keys["dashboard"])
        )
        assert approved.status_code == 200
        body = {"stage": "pr_opened", "url": "https://example.com/pr/1", "note": name}
        response = client.post(f"/v1/packets/{world.packet_id}/stages", json=body, headers=headers)
    elif route == "GET /v1/issues/{fingerprint}":
        response = client.get(f"/v1/issues/{world.fingerprint}", headers=headers)
    elif route in ("POST /v1/issues/{fingerprint}/merge", "POST /v1/dashboard/issues/{fingerprint}/merge"):
        client.post(f"/v1/issues/{world.fingerprint}/unmerge", headers=_auth(world.keys["dashboard"]))
        path = route.split(" ")[1].format(fingerprint=world.fingerprint)
        if route.startswith("POST /v1/dashboard"):
            headers["accept"] = "application/json"
            response = client.post(path, data={"into": world.into, "note": name}, headers=headers)
        else:
            response = client.post(path, json={"into": world.into, "note": name}, headers=headers)
    elif route in ("POST /v1/issues/{fingerprint}/unmerge", "POST /v1/dashboard/issues/{fingerprint}/unmerge"):
        merge = {"into": world.into, "note": "setup"}
        client.post(f"/v1/issues/{world.fingerprint}/merge", json=merge, headers=_auth(world.keys["dashboard"]))
        path = route.split(" ")[1].format(fingerprint=world.fingerprint)
        if route.startswith("POST /v1/dashboard"):
            headers["accept"] = "application/json"
            response = client.post(path, data={"note": name}, headers=headers)
        else:
            response = client.post(path, json={"note": name}, headers=headers)
    elif route == "GET /v1/loops":
        response = client.get("/v1/loops", headers=headers)
    elif route == "GET /v1/plugins":
        response = client.get("/v1/plugins", headers=headers)
    elif route == "GET /v1/grouping/rules":
        response = client.get("/v1/grouping/rules", headers=headers)
    elif route == "PUT /v1/grouping/rules":
        # Each write names its cell in the rule, so the project it landed in can be checked below.
        rules = [{"match": {"name": name}, "fingerprint": "{name}"}]
        response = client.put("/v1/grouping/rules", json={"rules": rules}, headers=headers)
    elif route == "POST /v1/dashboard/login":
        key = "" if value is None else value.removeprefix("Bearer ")
        response = client.post(route.split(" ")[1], data={"key": key}, headers={"accept": "application/json"})
    elif route.startswith(("GET /v1/dashboard", "POST /v1/dashboard")):
        method, path = route.split(" ")
        path = path.format(
            packet_id=world.packet_id,
            record_id=world.record_id,
            session_id=SESSION_ID,
            trace_id=TRACE_ID,
            fingerprint=world.fingerprint,
        )
        headers["accept"] = "application/json"
        response = client.request(method, path, headers=headers, data={"note": name} if method == "POST" else None)
    else:
        raise AssertionError(f"no request written for {route}")
    assert response.status_code == status, (route, key, response.text)
    if status == 303:  # a dashboard form: where the browser goes next, and for login the session cookie
        if route == "POST /v1/dashboard/login":
            assert response.headers["location"] == "/v1/dashboard"
            assert response.cookies.get("loopkit_dashboard", path="/v1/dashboard")
        elif route == "POST /v1/dashboard/logout":
            assert response.headers["location"] == "/v1/dashboard?signed_out=1"
        elif route.startswith("POST /v1/dashboard/issues/"):
            assert response.headers["location"] == f"/v1/dashboard/issues/{world.fingerprint}#merges"
            merges = client.get(f"/v1/issues/{world.fingerprint}", headers={"authorization": value}).json()
            last = merges["issue"]["merges"][-1]
            assert (last["action"], last["note"]) == (route.rsplit("/", 1)[1], name)
        else:
            assert response.headers["location"] == f"/v1/dashboard/packets/{world.packet_id}#decision"
            decision = {"approve": "approved", "reject": "rejected"}[route.rsplit("/", 1)[1]]
            packet = client.get(f"/v1/packets/{world.packet_id}", headers={"authorization": value}).json()["packet"]
            assert (packet["approval"]["state"], packet["approval"]["note"]) == (decision, name)
        return

    body = response.json()
    if route == "POST /v1/metrics":
        assert body["code"] == 12  # UNIMPLEMENTED
        return
    if route == "POST /v1/logs":
        if status == 200:
            assert body == {}
            world.stored[owner_of(world, key)].add(name)
        else:
            assert body["code"] == {401: 16, 403: 7}[status]
        assert names_read(world, world.keys["agent"]) == world.stored[world.project_id]
        assert names_read(world, world.other_agent) == world.stored[world.other_id]
        return
    if route == "POST /v1/traces":
        if status == 200:
            assert (body["accepted"], body["rejected"]) == (1, 0)
            world.stored[owner_of(world, key)].add(name)
        else:
            # OTLP paths answer with a google.rpc.Status: 16 UNAUTHENTICATED, 7 PERMISSION_DENIED.
            assert body["code"] == {401: 16, 403: 7}[status]
        # Every project holds exactly what its own producer key wrote.
        assert names_read(world, world.keys["agent"]) == world.stored[world.project_id]
        assert names_read(world, world.other_agent) == world.stored[world.other_id]
        return
    if status >= 400:
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}[status]
        assert body == {"ok": False, "error": {"code": code, "message": body["error"]["message"]}}
        return
    # A handoff is the rendered packet, eval specs a document of their own: neither is an API answer.
    if route not in ("GET /v1/packets/{packet_id}/handoff", "GET /v1/packets/{packet_id}/evals"):
        assert body["ok"] is True
    if route == "GET /v1/telemetry":
        assert {r["name"] for r in body["records"]} == world.stored[owner_of(world, key)]
    elif route in ("POST /v1/issues/{fingerprint}/merge", "POST /v1/issues/{fingerprint}/unmerge"):
        action = route.rsplit("/", 1)[1]
        assert (body["merge"]["action"], body["merge"]["source"], body["merge"]["note"]) == (
            action,
            world.fingerprint,
            name,
        )
        assert body["issue"]["merged_into"] == (world.into if action == "merge" else None)
    elif route in ("GET /v1/issues/{fingerprint}", "GET /v1/dashboard/issues/{fingerprint}"):
        assert body["issue"]["fingerprint"] == world.fingerprint
    elif route == "GET /v1/records/{record_id}":
        assert (body["record"]["record_id"], body["record"]["name"]) == (world.record_id, "seed")
    elif route in ("GET /v1/sessions", "GET /v1/dashboard/sessions"):
        mine = owner_of(world, key) == world.project_id
        assert [x["session_id"] for x in body["sessions"]] == ([SESSION_ID] if mine else [])
    elif route in ("GET /v1/sessions/{session_id}", "GET /v1/dashboard/sessions/{session_id}"):
        assert [r["name"] for r in body["records"]] == ["seed"] and body["session"]["records"] == 1
    elif route in ("GET /v1/traces/{trace_id}", "GET /v1/dashboard/traces/{trace_id}"):
        assert (body["trace_id"], [x["name"] for x in body["spans"]]) == (TRACE_ID, ["seed"])
    elif route == "GET /v1/dashboard/issues":
        # The seed event makes no issue; the three failures seeded beside it make the packet's one issue.
        mine = owner_of(world, key) == world.project_id
        found = sorted(issue["fingerprint"] for issue in body["issues"])
        assert found == (sorted([world.fingerprint, world.into]) if mine else [])
    elif route == "POST /v1/signup":
        assert body["project_id"] not in (world.project_id, world.other_id)
    elif route == "POST /v1/provision":
        assert body["resumed"] is False and body["project_id"] not in (world.project_id, world.other_id)
    elif route == "POST /v1/recover":
        assert body["project_id"] == world.victim_id
    elif route == "POST /v1/runs/diagnose":
        assert body["packet"]["project_id"] == owner_of(world, key)
    elif route == "PUT /v1/grouping/rules":
        # The key alone decides whose rules change: the owner's rules in force are this cell's, the other's not.
        written = [{"match": {"name": name}, "fingerprint": "{name}"}]
        agents = {world.project_id: world.keys["agent"], world.other_id: world.other_agent}
        for project_id, agent in agents.items():
            read = client.get("/v1/grouping/rules", headers=_auth(agent)).json()
            assert (read["rules"] == written) == (project_id == owner_of(world, key))
    elif route == "GET /v1/packets":
        owner = owner_of(world, key)
        assert all(p["project_id"] == owner for p in body["packets"])
        assert (world.packet_id in {p["packet_id"] for p in body["packets"]}) == (owner == world.project_id)
    elif route == "GET /v1/packets/{packet_id}":
        assert body["packet"]["packet_id"] == world.packet_id
    elif route == "GET /v1/plugins":
        assert {"signature_clusterer", "latency_outliers"} <= set(body["diagnosers"])
    elif route == "GET /v1/dashboard":
        owner = owner_of(world, key)
        assert body["project"]["project_id"] == owner
        assert (world.packet_id in {p["packet_id"] for p in body["packets"]}) == (owner == world.project_id)
    elif route == "GET /v1/dashboard/packets/{packet_id}":
        assert (body["packet"]["packet_id"], body["packet"]["project_id"]) == (world.packet_id, world.project_id)
    elif route == "GET /v1/dashboard/records/{record_id}":
        assert (body["record"]["record_id"], body["record"]["name"]) == (world.record_id, "seed")
    elif route == "POST /v1/runs/verify":
        assert body["verification"]["packet_id"] == world.packet_id
        assert body["verification"]["project_id"] == world.project_id
    elif route in ("GET /v1/packets/{packet_id}/handoff", "GET /v1/packets/{packet_id}/evals"):
        assert (body["packet_id"], body["project_id"]) == (world.packet_id, world.project_id)
    elif route == "POST /v1/evals":
        assert (body["eval_run"]["packet_id"], body["eval_run"]["note"]) == (world.packet_id, name)
    elif route == "POST /v1/packets/{packet_id}/stages":
        assert (body["stage"]["packet_id"], body["stage"]["note"]) == (world.packet_id, name)
    elif route == "GET /v1/loops":
        mine = owner_of(world, key) == world.project_id
        assert all(loop["packet_id"] == world.packet_id for loop in body["loops"])
        if not mine:
            assert body["loops"] == [] and body["funnel"]["loops"] == 0
    elif route.startswith("POST /v1/packets/"):
        decision = {"approve": "approved", "reject": "rejected"}[route.rsplit("/", 1)[1]]
        assert (body["packet_id"], body["status"]) == (world.packet_id, decision)
        assert body["approval"]["trail"][-1]["note"] == name


@pytest.mark.parametrize("key", KEYS)
def test_grpc_cell(world: World, key: str):
    expected = TABLE[GRPC_ROW][key]
    value = authorization(world, key)
    n = next(world.counter)
    request = ExportTraceServiceRequest()
    now = time.time_ns()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes.fromhex(f"{n + 1:032x}"),
            span_id=bytes.fromhex(f"{n + 1:016x}"),
            name=f"grpc cell {n}",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )
    )
    with grpc.insecure_channel(world.server.grpc_target) as channel:
        export = channel.unary_unary(
            EXPORT,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        metadata = (("authorization", value),) if value is not None else ()
        try:
            answer = export(request, metadata=metadata, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code, answer = exc.code(), None
    assert code.name == expected.rstrip(OWN_PROJECT), (key, code)
    if answer is not None:
        assert not answer.HasField("partial_success")
        world.stored[owner_of(world, key)].add(span.name)
    assert names_read(world, world.keys["agent"]) == world.stored[world.project_id]
    assert names_read(world, world.other_agent) == world.stored[world.other_id]


@pytest.mark.parametrize("key", KEYS)
def test_grpc_logs_and_metrics_cells(world: World, key: str):
    value = authorization(world, key)
    metadata = (("authorization", value),) if value is not None else ()
    n = next(world.counter)
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    scope_logs.scope.name = f"grpc logs cell {n}"
    scope_logs.log_records.add(time_unix_nano=time.time_ns()).body.string_value = "line"
    with grpc.insecure_channel(world.server.grpc_target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request_serializer=ExportLogsServiceRequest.SerializeToString,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        try:
            answer = export(request, metadata=metadata, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code, answer = exc.code(), None
        metrics = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        with pytest.raises(grpc.RpcError) as refused:
            metrics(b"", metadata=metadata, timeout=10)
    assert code.name == TABLE[GRPC_LOGS_ROW][key].rstrip(OWN_PROJECT), (key, code)
    assert refused.value.code().name == TABLE[GRPC_METRICS_ROW][key]
    if answer is not None:
        assert not answer.HasField("partial_success")
        world.stored[owner_of(world, key)].add(scope_logs.scope.name)
    assert names_read(world, world.keys["agent"]) == world.stored[world.project_id]
    assert names_read(world, world.other_agent) == world.stored[world.other_id]
