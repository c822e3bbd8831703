"""Sandbox expiry on an injected clock: ingest and reads refused at expires_at, purged after the grace period."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import make_settings, store_exists
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from loopkit_core.projects import get_project, list_projects, promote
from loopkit_core.purge import Purger, purge_expired
from loopkit_core.server import Running, in_thread

DAY = 86400.0
SANDBOX_DAYS = 14
GRACE_DAYS = 7
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def auth(key: str) -> dict[str, str]:
    """The authorization header for a key."""
    return {"authorization": f"Bearer {key}"}


class Clock:
    """A settable clock the server reads instead of time.time()."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def otlp_request(span_no: int) -> ExportTraceServiceRequest:
    """An export request with one span (span IDs derived from span_no)."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    spans.spans.add(
        trace_id=bytes.fromhex(f"{span_no + 1:032x}"),
        span_id=bytes.fromhex(f"{span_no + 1:016x}"),
        name=f"span-{span_no}",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1_000_000,
    )
    return request


def grpc_export(server: Running, key: str, span_no: int) -> grpc.StatusCode:
    """One OTLP/gRPC export; its status code."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        export = channel.unary_unary(
            EXPORT,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        try:
            export(otlp_request(span_no), metadata=(("authorization", f"Bearer {key}"),), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def post_proto(client: httpx.Client, key: str, span_no: int) -> httpx.Response:
    """One OTLP/HTTP protobuf export."""
    headers = {**auth(key), "content-type": "application/x-protobuf"}
    return client.post("/v1/traces", content=otlp_request(span_no).SerializeToString(), headers=headers)


def post_record(client: httpx.Client, key: str, name: str) -> httpx.Response:
    """One record in the records shape."""
    return client.post("/v1/traces", json={"records": [{"type": "event", "name": name}]}, headers=auth(key))


def read(client: httpx.Client, key: str) -> httpx.Response:
    """GET /v1/telemetry for the last hour."""
    return client.get("/v1/telemetry", params={"limit": 1000}, headers=auth(key))


def db_files(server: Running, project_id: str) -> list[Path | str]:
    """The project's SQLite files (database, WAL, shared memory) that exist, or its PostgreSQL schema."""
    if server.app.store.postgres:
        return [server.app.store.project_schema(project_id)] if store_exists(server, project_id) else []
    base = Path(server.settings.data_dir) / "projects" / f"{project_id}.db"
    return [p for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists()]


@pytest.fixture
def clock() -> Clock:
    """Starts at the real time, so record timestamps and the read window agree with it."""
    return Clock(time.time())


@pytest.fixture
def running(tmp_path: Path, clock: Clock) -> Iterator[Running]:
    """A server on the injected clock (the purge thread effectively off)."""
    settings = make_settings(tmp_path / "data", purge_interval_seconds=3600.0)
    with in_thread(settings, clock=clock) as server:
        yield server


@pytest.fixture
def client(running: Running) -> Iterator[httpx.Client]:
    """An HTTP client for `running`."""
    with httpx.Client(base_url=running.http_url, timeout=30) as c:
        yield c


@pytest.fixture
def sandbox(client: httpx.Client, clock: Clock) -> dict:
    """A signup sandbox with one stored record; expires_at as unix seconds added."""
    body = client.post("/v1/signup", json={"project_name": "short lived"}).json()
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    assert expires == int(clock.now + SANDBOX_DAYS * DAY)
    assert post_record(client, body["producer_key"], "early").status_code == 200
    return {**body, "expires": expires}


def test_ingest_works_until_expires_at_then_is_permission_denied(running, client, clock, sandbox):
    key = sandbox["producer_key"]
    clock.now = sandbox["expires"] - 1
    assert post_record(client, key, "last second").status_code == 200
    assert post_proto(client, key, 1).status_code == 200
    assert grpc_export(running, key, 2) == grpc.StatusCode.OK
    assert read(client, sandbox["agent_key"]).status_code == 200

    for now in (sandbox["expires"], sandbox["expires"] + 1, sandbox["expires"] + 3 * DAY):
        clock.now = now
        refused = post_proto(client, key, 3)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/x-protobuf"
        status = status_pb2.Status.FromString(refused.content)
        assert status.code == 7  # PERMISSION_DENIED
        assert f"sandbox project {sandbox['project_id']} expired at " in status.message
        as_json = post_record(client, key, "too late")
        assert as_json.status_code == 403
        assert as_json.json()["code"] == 7
        assert "expired" in as_json.json()["message"]
        assert grpc_export(running, key, 4) == grpc.StatusCode.PERMISSION_DENIED
        assert "retry-after" not in refused.headers  # final, not retryable
        # Reads say why, with the API's error shape.
        response = read(client, sandbox["agent_key"])
        assert response.status_code == 403
        assert response.json() == {
            "ok": False,
            "error": {"code": "project_expired", "message": response.json()["error"]["message"]},
        }
        assert "/contact.json" in response.json()["error"]["message"]
    # A wrong-scope key still gets its 403 for the scope, an unknown one 401.
    assert read(client, sandbox["producer_key"]).json()["error"]["code"] == "forbidden"
    assert read(client, "lk_agent_unknown").status_code == 401

    # Nothing was stored after expiry: back before it, exactly the earlier records are there.
    clock.now = sandbox["expires"] - 1
    names = sorted(r["name"] for r in read(client, sandbox["agent_key"]).json()["records"])
    assert names == ["early", "last second", "span-1", "span-2"]


def test_record_read_is_also_refused_after_expiry(client, clock, sandbox):
    record_id = post_record(client, sandbox["producer_key"], "one").json()["record_ids"][0]
    path = f"/v1/records/{record_id}"
    assert client.get(path, headers=auth(sandbox["agent_key"])).status_code == 200
    clock.now = sandbox["expires"]
    response = client.get(path, headers=auth(sandbox["agent_key"]))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "project_expired"


def test_purge_expired_waits_for_the_grace_period(running, client, clock, sandbox):
    store = running.app.store
    keeper = client.post("/v1/signup", json={"project_name": "keeper"}).json()
    permanent = client.post("/v1/provision", json={"project_name": "forever"}).json()
    assert post_record(client, permanent["producer_key"], "kept").status_code == 200
    grace = GRACE_DAYS * DAY
    assert db_files(running, sandbox["project_id"])
    # Not yet expired, expired but within the grace period, and the last second of it: nothing is purged.
    for now in (sandbox["expires"] - 1, sandbox["expires"], sandbox["expires"] + grace - 1):
        assert purge_expired(store, now, grace) == []
    assert len(list_projects(store.control)) == 3
    assert db_files(running, sandbox["project_id"])
    # The clock has not moved, so both sandboxes expire together; at exactly expiry + grace, both go.
    assert keeper["expires_at"] == sandbox["expires_at"]
    now = sandbox["expires"] + grace
    purged = purge_expired(store, now, grace)
    assert sorted(purged) == sorted([sandbox["project_id"], keeper["project_id"]])
    assert db_files(running, sandbox["project_id"]) == []
    assert get_project(store.control, sandbox["project_id"]) is None
    assert [p["project_id"] for p in list_projects(store.control)] == [permanent["project_id"]]
    # Its keys are revoked: 401 (not "expired") for every one of them, on every path.
    clock.now = sandbox["expires"] - 1
    for kind in ("producer", "agent", "dashboard"):
        assert read(client, sandbox[f"{kind}_key"]).status_code == 401
    assert post_record(client, sandbox["producer_key"], "x").status_code == 401
    assert grpc_export(running, sandbox["producer_key"], 9) == grpc.StatusCode.UNAUTHENTICATED
    recovered = client.post(
        "/v1/recover", json={"project_id": sandbox["project_id"], "recovery_code": sandbox["recovery_code"]}
    )
    assert recovered.status_code == 401
    assert db_files(running, sandbox["project_id"]) == []
    # A second pass finds nothing more; the permanent project is untouched.
    assert purge_expired(store, now + 100 * DAY, grace) == []
    assert [r["name"] for r in read(client, permanent["agent_key"]).json()["records"]] == ["kept"]


def test_a_promoted_sandbox_never_expires(running, client, clock, sandbox):
    promote(running.app.store.control, sandbox["project_id"])
    clock.now = sandbox["expires"] + 1000 * DAY
    assert post_record(client, sandbox["producer_key"], "years later").status_code == 200
    assert grpc_export(running, sandbox["producer_key"], 5) == grpc.StatusCode.OK
    assert purge_expired(running.app.store, clock.now, GRACE_DAYS * DAY) == []
    names = sorted(r["name"] for r in read(client, sandbox["agent_key"]).json()["records"])
    assert names == ["early", "span-5", "years later"]


def test_promoting_an_expired_sandbox_revives_it(running, client, clock, sandbox):
    clock.now = sandbox["expires"] + DAY
    assert post_record(client, sandbox["producer_key"], "refused").status_code == 403
    promote(running.app.store.control, sandbox["project_id"])
    assert post_record(client, sandbox["producer_key"], "accepted").status_code == 200
    names = sorted(r["name"] for r in read(client, sandbox["agent_key"]).json()["records"])
    assert names == ["accepted", "early"]


def test_the_purger_thread_purges_within_a_bounded_wait(tmp_path: Path, clock: Clock):
    settings = make_settings(tmp_path / "data", purge_interval_seconds=0.05, sandbox_grace_days=1.0)
    with in_thread(settings, clock=clock) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        body = client.post("/v1/signup", json={"project_name": "purged"}).json()
        assert post_record(client, body["producer_key"], "soon gone").status_code == 200
        assert db_files(server, body["project_id"])
        expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
        # Expired but within the grace period: several passes run, nothing goes.
        clock.now = expires + 0.5 * DAY
        threading.Event().wait(0.3)
        assert db_files(server, body["project_id"])
        assert [p["project_id"] for p in list_projects(server.app.store.control)] == [body["project_id"]]
        clock.now = expires + DAY
        for _ in range(200):  # at most 10 s
            if not db_files(server, body["project_id"]):
                break
            threading.Event().wait(0.05)
        assert db_files(server, body["project_id"]) == []
        assert list_projects(server.app.store.control) == []
        assert read(client, body["agent_key"]).status_code == 401
        assert post_record(client, body["producer_key"], "x").status_code == 401


def test_purger_survives_a_failing_pass(tmp_path: Path, clock: Clock):
    settings = make_settings(tmp_path / "data", purge_interval_seconds=3600.0)
    with in_thread(settings, clock=clock) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        body = client.post("/v1/signup", json={"project_name": "after failure"}).json()
        calls = []

        def flaky_clock() -> float:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("clock broke once")
            return clock.now + 30 * DAY

        purger = Purger(server.app.store, flaky_clock, 0.02, GRACE_DAYS * DAY)
        purger.start()
        try:
            for _ in range(250):  # at most 5 s
                if get_project(server.app.store.control, body["project_id"]) is None:
                    break
                threading.Event().wait(0.02)
        finally:
            purger.stop()
            purger.join(5)
        assert not purger.is_alive()
        assert len(calls) >= 2
        assert get_project(server.app.store.control, body["project_id"]) is None
