"""Keys and projects: scopes, 401/403, project isolation over HTTP and gRPC, and keys stored only as hashes."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import Project, make_settings, new_project, sqlite_only, store_exists
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sqlalchemy import func, select

from loopkit_core.server import Running, in_thread
from loopkit_core.store.schema import records as records_table

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
WIDE = {"since_minutes": 10 * 365 * 24 * 60, "limit": 1000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One LoopKit for the module; every test makes its own projects."""
    with in_thread(make_settings(tmp_path_factory.mktemp("isolation") / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        yield c


@pytest.fixture
def a(server: Running) -> Project:
    """Project A."""
    return new_project(server, "project a")


@pytest.fixture
def b(server: Running) -> Project:
    """Project B."""
    return new_project(server, "project b")


@pytest.fixture(scope="module")
def export(server: Running) -> Iterator:
    """Call TraceService/Export on the module's server with raw protobuf bytes."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel.unary_unary(
            EXPORT,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


def post_records(client: httpx.Client, headers: dict, records: list[dict]) -> httpx.Response:
    """POST the records shape with the given headers."""
    return client.post("/v1/traces", json={"records": records}, headers=headers)


def listed(client: httpx.Client, project: Project, **params: object) -> list[dict]:
    """Every record the project's agent key sees in a wide window."""
    response = client.get("/v1/telemetry", params={**WIDE, **params}, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return response.json()["records"]


def otlp_request(name: str = "op", resource: dict[str, str] | None = None, attrs: dict[str, str] | None = None):
    """One OTLP span with fixed trace and span IDs."""
    now = time.time_ns()
    span = Span(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(SPAN),
        name=name,
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in (attrs or {}).items()],
    )
    resource_attrs = {"service.name": "svc", **(resource or {})}
    rs = ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])
    rs.resource.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource_attrs.items())
    return ExportTraceServiceRequest(resource_spans=[rs])


def assert_api_error(response: httpx.Response, status: int, code: str) -> None:
    """The API's error JSON with the given status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"ok", "error"}
    assert body["ok"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# ---------------------------------------------------------------- scopes


@pytest.mark.parametrize("kind", ["producer", "dashboard"])
def test_keys_without_read_scope_cannot_read(client, a, kind):
    [record_id] = post_records(client, a.auth("producer"), [{"type": "event", "name": "x"}]).json()["record_ids"]
    response = client.get("/v1/telemetry", headers=a.auth(kind))
    assert_api_error(response, 403, "forbidden")
    assert (
        response.json()["error"]["message"] == f"the {kind} key of this project does not have the telemetry:read scope"
    )
    assert_api_error(client.get(f"/v1/records/{record_id}", headers=a.auth(kind)), 403, "forbidden")


@pytest.mark.parametrize("kind", ["agent", "dashboard"])
def test_keys_without_write_scope_cannot_ingest_over_http(client, a, kind):
    records = post_records(client, a.auth(kind), [{"type": "event", "name": "x"}])
    otlp_json = client.post(
        "/v1/traces",
        json={"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": SPAN, "name": "x"}]}]}]},
        headers=a.auth(kind),
    )
    proto = client.post(
        "/v1/traces",
        content=otlp_request().SerializeToString(),
        headers={**a.auth(kind), "content-type": "application/x-protobuf"},
    )
    for response in (records, otlp_json):
        assert response.status_code == 403, response.text
        assert response.json() == {
            "code": 7,
            "message": f"the {kind} key of this project does not have the telemetry:write scope",
        }
    assert proto.status_code == 403
    assert proto.headers["content-type"] == "application/x-protobuf"
    assert listed(client, a) == []


@pytest.mark.parametrize("kind", ["agent", "dashboard"])
def test_keys_without_write_scope_cannot_ingest_over_grpc(client, export, a, kind):
    with pytest.raises(grpc.RpcError) as caught:
        export(otlp_request(), metadata=[("authorization", f"Bearer {getattr(a, kind + '_key')}")], timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == f"the {kind} key of this project does not have the telemetry:write scope"
    assert listed(client, a) == []


def test_producer_key_ingests_over_grpc(client, export, a):
    response = export(otlp_request(), metadata=[("authorization", f"Bearer {a.producer_key}")], timeout=10)
    assert response.partial_success.rejected_spans == 0
    [record] = listed(client, a)
    assert (record["trace_id"], record["span_id"]) == (TRACE, SPAN)


# ---------------------------------------------------------------- missing or bad keys

BAD_HEADERS = [
    ("none", None),
    ("basic", "Basic x"),
    ("basic with a real-looking key", "Basic lk_agent_abc"),
    ("bearer alone", "Bearer"),
    ("token with a space", "Bearer lk_agent_a b"),
    ("no scheme", "lk_agent_abc"),
    ("10 KB key", "Bearer lk_agent_" + "a" * 10_240),
    ("non-ascii", "Bearer lk_agent_clé".encode()),
    ("unknown agent key", "Bearer lk_agent_" + "A" * 43),
    ("unknown producer key", "Bearer lk_ingest_" + "A" * 43),
]


def _headers(value: object) -> dict:
    return {} if value is None else {"authorization": value}


@pytest.mark.parametrize("value", [v for _, v in BAD_HEADERS], ids=[n for n, _ in BAD_HEADERS])
def test_missing_malformed_or_unknown_keys_are_401(client, a, value):
    assert_api_error(client.get("/v1/telemetry", headers=_headers(value)), 401, "unauthenticated")
    assert_api_error(client.get("/v1/records/rec_x", headers=_headers(value)), 401, "unauthenticated")
    ingest = post_records(client, _headers(value), [{"type": "event", "name": "x"}])
    assert ingest.status_code == 401, ingest.text
    assert ingest.json()["code"] == 16
    assert listed(client, a) == []


def test_a_key_altered_by_one_character_is_401(client, a):
    key = a.agent_key
    altered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_api_error(
        client.get("/v1/telemetry", headers={"authorization": f"Bearer {altered}"}), 401, "unauthenticated"
    )
    assert_api_error(client.get("/v1/telemetry", headers={"authorization": f"Bearer {key}x"}), 401, "unauthenticated")
    assert client.get("/v1/telemetry", headers={"authorization": f"bearer {key}"}).status_code == 200


@pytest.mark.parametrize(
    "metadata",
    [[], [("authorization", "Basic x")], [("authorization", "Bearer")], [("authorization", "Bearer lk_ingest_nope")]],
    ids=["none", "basic", "bearer-alone", "unknown"],
)
def test_grpc_without_a_known_key_is_unauthenticated(client, export, a, metadata):
    with pytest.raises(grpc.RpcError) as caught:
        export(otlp_request(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert listed(client, a) == []


# ---------------------------------------------------------------- isolation


def test_one_projects_agent_key_never_sees_anothers_records(client, a, b):
    a_ids = post_records(
        client,
        a.auth(),
        [{"type": "error", "name": "a-op", "session_id": "shared", "trace_id": TRACE, "span_id": "1" * 16}],
    ).json()["record_ids"]
    b_ids = post_records(
        client,
        b.auth(),
        [
            {"type": "error", "name": "b-op", "session_id": "shared", "trace_id": TRACE, "span_id": "2" * 16},
            {"type": "event", "name": "b-other"},
        ],
    ).json()["record_ids"]
    assert [r["record_id"] for r in listed(client, a)] == a_ids
    assert sorted(r["record_id"] for r in listed(client, b)) == sorted(b_ids)
    # Filters naming B's records, trace or session never reach into B from A.
    assert listed(client, a, record_id=b_ids) == []
    assert [r["record_id"] for r in listed(client, a, trace_id=TRACE)] == a_ids
    assert [r["record_id"] for r in listed(client, a, session_id="shared")] == a_ids
    assert listed(client, a, name="b-op") == []
    for record_id in b_ids:
        assert_api_error(client.get(f"/v1/records/{record_id}", headers=a.auth("agent")), 404, "not_found")
        assert client.get(f"/v1/records/{record_id}", headers=b.auth("agent")).status_code == 200
    assert_api_error(client.get(f"/v1/records/{a_ids[0]}", headers=b.auth("agent")), 404, "not_found")


def test_the_same_trace_and_span_ids_in_two_projects_are_two_records(client, export, a, b):
    ids = {}
    for project, message in ((a, "from a"), (b, "from b")):
        response = post_records(
            client,
            project.auth(),
            [{"type": "error", "name": "pay", "message": message, "trace_id": TRACE, "span_id": SPAN}],
        )
        ids[project.project_id] = response.json()["record_ids"][0]
    assert ids[a.project_id] != ids[b.project_id]
    for project, message in ((a, "from a"), (b, "from b")):
        [record] = listed(client, project)
        assert record["record_id"] == ids[project.project_id]
        assert record["message"] == message
    # The same span over gRPC to each project dedups within that project only.
    for project in (a, b):
        export(otlp_request("pay"), metadata=[("authorization", f"Bearer {project.producer_key}")], timeout=10)
        assert [r["record_id"] for r in listed(client, project)] == [ids[project.project_id]]


def test_a_payload_field_cannot_choose_the_project(client, server, export, a, b):
    hostile = {
        "type": "event",
        "name": "smuggled",
        "project_id": b.project_id,
        "attributes": {"project_id": b.project_id, "loopkit.project_id": b.project_id},
    }
    response = client.post(
        "/v1/traces", json={"project_id": b.project_id, "records": [hostile]}, headers=a.auth("producer")
    )
    assert response.status_code == 200
    json_span = client.post(
        "/v1/traces",
        json={
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "project_id", "value": {"stringValue": b.project_id}}]},
                    "scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": "3" * 16, "name": "smuggled-json"}]}],
                }
            ]
        },
        headers={**a.auth("producer"), "x-project-id": b.project_id},
    )
    assert json_span.status_code == 200, json_span.text
    export(
        otlp_request("smuggled-grpc", resource={"project_id": b.project_id}, attrs={"project_id": b.project_id}),
        metadata=[("authorization", f"Bearer {a.producer_key}"), ("x-project-id", b.project_id)],
        timeout=10,
    )
    assert sorted(r["name"] for r in listed(client, a)) == ["smuggled", "smuggled-grpc", "smuggled-json"]
    assert listed(client, b) == []
    # Only A's record store (SQLite file or PostgreSQL schema) holds them.
    assert _count(server, a.project_id) == 3
    assert _count(server, b.project_id) in (None, 0)


def _count(server: Running, project_id: str) -> int | None:
    if not store_exists(server, project_id):
        return None
    with server.app.store.project(project_id).connect() as conn:
        return conn.execute(select(func.count()).select_from(records_table)).scalar()


# ---------------------------------------------------------------- keys at rest


@sqlite_only("scans the bytes of every file in data_dir for the keys")
def test_keys_are_stored_only_as_sha256_digests(client, server, a, b):
    # Use the keys so every code path that touches them has run.
    post_records(client, a.auth(), [{"type": "event", "name": "x"}])
    listed(client, a)
    data_dir = Path(server.settings.data_dir)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert data_dir / "control.db" in files
    secrets = {
        f"{project.project_id} {field}": getattr(project, field)
        for project in (a, b)
        for field in ("producer_key", "agent_key", "dashboard_key", "recovery_code")
    }
    for path in files:
        content = path.read_bytes()
        for label, secret in secrets.items():
            random_part = secret[secret.index("_", 3) + 1 :]  # after lk_ingest_, lk_agent_, lk_dash_, lk_recover_
            assert len(random_part) >= 32
            assert secret.encode() not in content, f"{label} in plaintext in {path.name}"
            assert random_part[-24:].encode() not in content, f"{label} (its random part) in {path.name}"
    with sqlite3.connect(f"file:{data_dir / 'control.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT project_id, kind, key_hash FROM api_keys WHERE project_id IN (?, ?)", (a.project_id, b.project_id)
        ).fetchall()
        recovery = dict(
            conn.execute(
                "SELECT project_id, recovery_hash FROM projects WHERE project_id IN (?, ?)",
                (a.project_id, b.project_id),
            ).fetchall()
        )
    assert len(rows) == 6
    for project_id, kind, key_hash in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", key_hash)
        project = a if project_id == a.project_id else b
        assert key_hash == hashlib.sha256(getattr(project, f"{kind}_key").encode()).hexdigest()
    for project in (a, b):
        assert recovery[project.project_id] == hashlib.sha256(project.recovery_code.encode()).hexdigest()
