"""POST /v1/recover: a recovery code rotates every key and itself; old secrets die at once, data stays."""

from __future__ import annotations

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlalchemy import select

from loopkit_core.projects import get_project
from loopkit_core.server import Running
from loopkit_core.store.schema import records

KEY_FIELDS = ("producer_key", "agent_key", "dashboard_key")
SECRETS = (*KEY_FIELDS, "recovery_code")
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def auth(key: str) -> dict[str, str]:
    """The authorization header for a key."""
    return {"authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The API error shape with an exact status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == code


def recover(client: httpx.Client, body: object) -> httpx.Response:
    """POST /v1/recover."""
    return client.post("/v1/recover", json=body)


def ingest(client: httpx.Client, key: str, name: str) -> httpx.Response:
    """POST one record with a producer key."""
    return client.post("/v1/traces", json={"records": [{"type": "error", "name": name}]}, headers=auth(key))


def read_names(client: httpx.Client, key: str) -> list[str]:
    """The names of the project's records in the last hour, read with an agent key."""
    response = client.get("/v1/telemetry", params={"limit": 1000}, headers=auth(key))
    assert response.status_code == 200, response.text
    return sorted(r["name"] for r in response.json()["records"])


def grpc_export(server: Running, key: str) -> grpc.StatusCode:
    """An empty OTLP/gRPC export with a key; its status code."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        export = channel.unary_unary(
            EXPORT,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        try:
            export(ExportTraceServiceRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.fixture
def sandbox(client: httpx.Client) -> dict:
    """A project from POST /v1/signup, with one record already stored."""
    response = client.post("/v1/signup", json={"project_name": "lost keys"})
    assert response.status_code == 201
    body = response.json()
    assert ingest(client, body["producer_key"], "stored before").status_code == 200
    return body


def test_recover_rotates_every_key_and_the_code(server: Running, client: httpx.Client, sandbox: dict):
    response = recover(client, {"project_id": sandbox["project_id"], "recovery_code": sandbox["recovery_code"]})
    assert response.status_code == 200, response.text
    new = response.json()
    assert new["ok"] is True
    assert new["project_id"] == sandbox["project_id"]
    assert (new["kind"], new["quota_spans"], new["expires_at"]) == ("sandbox", 5000, sandbox["expires_at"])
    for field in SECRETS:
        assert new[field] != sandbox[field]
    assert new["producer_key"].startswith("lk_ingest_")
    assert new["agent_key"].startswith("lk_agent_")
    assert new["dashboard_key"].startswith("lk_dash_")
    assert new["recovery_code"].startswith("lk_recover_")
    assert new["ingest_url"] == sandbox["ingest_url"]
    assert "keys" not in new
    # Old keys are refused at once, on every surface.
    old_ingest = ingest(client, sandbox["producer_key"], "late")
    assert old_ingest.status_code == 401
    assert old_ingest.json()["code"] == 16  # google.rpc.Status UNAUTHENTICATED on the OTLP path
    assert grpc_export(server, sandbox["producer_key"]) == grpc.StatusCode.UNAUTHENTICATED
    for field in KEY_FIELDS:
        assert_error(client.get("/v1/telemetry", headers=auth(sandbox[field])), 401, "unauthenticated")
    # New keys work; the record stored before recovery is still there, read with the new agent key.
    assert ingest(client, new["producer_key"], "stored after").status_code == 200
    assert grpc_export(server, new["producer_key"]) == grpc.StatusCode.OK
    assert read_names(client, new["agent_key"]) == ["stored after", "stored before"]
    assert_error(client.get("/v1/telemetry", headers=auth(new["producer_key"])), 403, "forbidden")
    # Exactly three live keys remain.
    project = get_project(server.app.store.control, sandbox["project_id"])
    assert sorted(k["kind"] for k in project["keys"]) == ["agent", "dashboard", "producer"]
    # Both records are in the project's real store (SQLite file or PostgreSQL schema).
    with server.app.store.project(sandbox["project_id"]).connect() as db:
        names = sorted(db.execute(select(records.c.name)).scalars())
    assert names == ["stored after", "stored before"]


def test_old_recovery_code_is_spent(client: httpx.Client, sandbox: dict):
    first = recover(client, {"project_id": sandbox["project_id"], "recovery_code": sandbox["recovery_code"]})
    assert first.status_code == 200
    again = recover(client, {"project_id": sandbox["project_id"], "recovery_code": sandbox["recovery_code"]})
    assert_error(again, 401, "unauthenticated")
    assert "keys" not in again.json() and "agent_key" not in again.json()
    # The keys from the first recovery are untouched by the failed attempt.
    assert read_names(client, first.json()["agent_key"]) == ["stored before"]
    # The new code works once, and chains.
    second = recover(client, {"project_id": sandbox["project_id"], "recovery_code": first.json()["recovery_code"]})
    assert second.status_code == 200
    assert_error(client.get("/v1/telemetry", headers=auth(first.json()["agent_key"])), 401, "unauthenticated")
    assert read_names(client, second.json()["agent_key"]) == ["stored before"]


def test_recovering_a_permanent_project(client: httpx.Client):
    minted = client.post("/v1/provision", json={"project_name": "perm"}).json()
    new = recover(client, {"project_id": minted["project_id"], "recovery_code": minted["recovery_code"]}).json()
    assert (new["kind"], new["quota_spans"], new["expires_at"]) == ("permanent", None, None)
    # The old keys no longer resume it through provision; the new ones do.
    assert_error(
        client.post("/v1/provision", json={"project_name": "perm"}, headers=auth(minted["agent_key"])),
        401,
        "unauthenticated",
    )
    resumed = client.post("/v1/provision", json={"project_name": "perm"}, headers=auth(new["dashboard_key"]))
    assert resumed.status_code == 200 and resumed.json()["resumed"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"project_id": "PLACEHOLDER", "recovery_code": "lk_recover_wrong"},
        {"project_id": "PLACEHOLDER", "recovery_code": ""},
        {"project_id": "PLACEHOLDER", "recovery_code": "x" * 10_000},
        {"project_id": "PLACEHOLDER", "recovery_code": 12345},
        {"project_id": "PLACEHOLDER", "recovery_code": None},
        {"project_id": "PLACEHOLDER", "recovery_code": ["lk_recover_"]},
        {"project_id": "PLACEHOLDER"},
        {"project_id": "nosuch-00000000", "recovery_code": "CODE"},
        {"project_id": "../../control", "recovery_code": "CODE"},
        {"project_id": "", "recovery_code": "CODE"},
        {"project_id": 7, "recovery_code": "CODE"},
        {"recovery_code": "CODE"},
        {},
    ],
    ids=[
        "wrong-code",
        "empty-code",
        "huge-code",
        "int-code",
        "null-code",
        "list-code",
        "no-code",
        "unknown-project",
        "path-project",
        "empty-project",
        "int-project",
        "no-project",
        "empty-body",
    ],
)
def test_wrong_unknown_or_missing_is_401(client: httpx.Client, sandbox: dict, body: dict):
    filled = {
        k: (sandbox["project_id"] if v == "PLACEHOLDER" else sandbox["recovery_code"] if v == "CODE" else v)
        for k, v in body.items()
    }
    response = recover(client, filled)
    assert_error(response, 401, "unauthenticated")
    assert not {"agent_key", "producer_key", "dashboard_key", "recovery_code"} & set(response.json())
    # Nothing was rotated: the signup keys still work and the code still recovers.
    assert read_names(client, sandbox["agent_key"]) == ["stored before"]
    ok = recover(client, {"project_id": sandbox["project_id"], "recovery_code": sandbox["recovery_code"]})
    assert ok.status_code == 200


def test_a_recovery_code_only_opens_its_own_project(client: httpx.Client, sandbox: dict):
    other = client.post("/v1/signup", json={"project_name": "other"}).json()
    crossed = recover(client, {"project_id": sandbox["project_id"], "recovery_code": other["recovery_code"]})
    assert_error(crossed, 401, "unauthenticated")
    # A key is not a recovery code, and a recovery code is not a key.
    as_key = recover(client, {"project_id": sandbox["project_id"], "recovery_code": sandbox["agent_key"]})
    assert_error(as_key, 401, "unauthenticated")
    assert ingest(client, sandbox["recovery_code"], "x").status_code == 401
    assert read_names(client, sandbox["agent_key"]) == ["stored before"]
    assert read_names(client, other["agent_key"]) == []


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"not json", 400, "bad_request"),
        (b"[1, 2]", 400, "bad_request"),
        (b'"lk_recover_x"', 400, "bad_request"),
        (b'{"project_id": "a", "recovery_code": "' + b"r" * 17_000 + b'"}', 413, "payload_too_large"),
    ],
)
def test_malformed_recover_bodies(client: httpx.Client, content: bytes, status: int, code: str):
    response = client.post("/v1/recover", content=content, headers={"content-type": "application/json"})
    assert_error(response, status, code)


def test_recover_after_delete_is_401(server: Running, client: httpx.Client, sandbox: dict):
    from loopkit_core.purge import delete_project

    assert delete_project(server.app.store, sandbox["project_id"]) is True
    response = recover(client, {"project_id": sandbox["project_id"], "recovery_code": sandbox["recovery_code"]})
    assert_error(response, 401, "unauthenticated")
