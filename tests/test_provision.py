"""POST /v1/provision: minted once per (operator, name), resumed only with that project's key, race-safe."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import make_settings

from loopkit_core.projects import list_projects, rotate_keys
from loopkit_core.server import Running, in_thread

KEY_FIELDS = {"producer_key", "agent_key", "dashboard_key", "recovery_code"}
URL_FIELDS = {"ingest_url", "otlp_grpc_endpoint", "diagnose_url", "dashboard_url", "quickstart_url"}
MINTED_FIELDS = {"ok", "project_id", "project_name", "kind", "quota_spans", "expires_at", "resumed", "graduated"}
RESUMED_FIELDS = MINTED_FIELDS | {"operator"}


def auth(key: str) -> dict[str, str]:
    """The authorization header for a key."""
    return {"authorization": f"Bearer {key}"}


def provision(client: httpx.Client, body: object, key: str | None = None) -> httpx.Response:
    """POST /v1/provision, with a key when given."""
    return client.post("/v1/provision", json=body, headers=auth(key) if key else {})


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The API error shape with an exact status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == code


def write_and_read(client: httpx.Client, minted: dict, name: str) -> list[str]:
    """Ingest one record with the producer key, then the names of every record read with the agent key."""
    posted = client.post(
        "/v1/traces", json={"records": [{"type": "event", "name": name}]}, headers=auth(minted["producer_key"])
    )
    assert posted.status_code == 200, posted.text
    read = client.get("/v1/telemetry", params={"limit": 1000}, headers=auth(minted["agent_key"]))
    assert read.status_code == 200, read.text
    return sorted(r["name"] for r in read.json()["records"])


@pytest.fixture
def minted(client: httpx.Client) -> dict:
    """A project minted by a first provision call."""
    response = provision(client, {"project_name": "agent app", "operator": "acme"})
    assert response.status_code == 201, response.text
    return response.json()


def test_first_call_mints_a_permanent_project(server: Running, minted: dict):
    assert set(minted) == MINTED_FIELDS | KEY_FIELDS | URL_FIELDS
    assert minted["ok"] is True
    assert (minted["resumed"], minted["graduated"]) == (False, True)
    assert minted["project_id"].startswith("agent-app-") and len(minted["project_id"]) == len("agent-app-") + 8
    assert (minted["project_name"], minted["kind"]) == ("agent app", "permanent")
    assert (minted["quota_spans"], minted["expires_at"]) == (None, None)  # graduated: uncapped, never expires
    assert minted["producer_key"].startswith("lk_ingest_")
    assert minted["agent_key"].startswith("lk_agent_")
    assert minted["dashboard_key"].startswith("lk_dash_")
    assert minted["recovery_code"].startswith("lk_recover_")
    assert minted["ingest_url"] == f"{server.http_url}/v1/traces"
    assert minted["otlp_grpc_endpoint"] == server.grpc_target
    assert [p["project_id"] for p in list_projects(server.app.store.control)] == [minted["project_id"]]


@pytest.mark.parametrize("kind", ["producer", "agent", "dashboard"])
def test_later_call_with_any_of_its_keys_resumes_without_rotating(
    server: Running, client: httpx.Client, minted: dict, kind: str
):
    assert write_and_read(client, minted, "before") == ["before"]
    for _ in range(2):
        response = provision(client, {"project_name": "agent app", "operator": "acme"}, minted[f"{kind}_key"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == RESUMED_FIELDS | URL_FIELDS  # no key and no recovery code: only hashes exist
        assert not KEY_FIELDS & set(body)
        assert (body["resumed"], body["graduated"]) == (True, True)
        assert (body["project_id"], body["project_name"], body["kind"]) == (
            minted["project_id"],
            "agent app",
            "permanent",
        )
        assert (body["operator"], body["quota_spans"], body["expires_at"]) == ("acme", None, None)
    # The keys were not rotated: the old ones still write and read, and there is still one project.
    assert write_and_read(client, minted, "after") == ["after", "before"]
    assert len(list_projects(server.app.store.control)) == 1


def test_name_is_matched_after_trimming(client: httpx.Client, minted: dict):
    response = provision(client, {"project_name": "  agent app  ", "operator": "acme"}, minted["agent_key"])
    assert response.status_code == 200
    assert response.json()["project_id"] == minted["project_id"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer not-a-key", "Basic abc", "lk_agent_xyz", "Bearer lk_agent_" + "A" * 43],
)
def test_later_call_without_a_valid_key_is_401(server: Running, client: httpx.Client, minted: dict, header):
    headers = {"authorization": header} if header is not None else {}
    response = client.post("/v1/provision", json={"project_name": "agent app", "operator": "acme"}, headers=headers)
    assert_error(response, 401, "unauthenticated")
    assert KEY_FIELDS.isdisjoint(response.json())
    assert len(list_projects(server.app.store.control)) == 1


def test_later_call_with_a_revoked_key_is_401(server: Running, client: httpx.Client, minted: dict):
    rotated = rotate_keys(server.app.store.control, minted["project_id"])
    body = {"project_name": "agent app", "operator": "acme"}
    assert_error(provision(client, body, minted["agent_key"]), 401, "unauthenticated")
    assert provision(client, body, rotated["agent_key"]).status_code == 200


@pytest.mark.parametrize("kind", ["producer", "agent", "dashboard"])
def test_later_call_with_another_projects_key_is_403(server: Running, client: httpx.Client, minted: dict, kind):
    other = provision(client, {"project_name": "other app", "operator": "acme"}).json()
    response = provision(client, {"project_name": "agent app", "operator": "acme"}, other[f"{kind}_key"])
    assert_error(response, 403, "forbidden")
    assert KEY_FIELDS.isdisjoint(response.json())
    # A sandbox's key is another project's key too.
    sandbox = client.post("/v1/signup", json={"project_name": "agent app"}).json()
    response = provision(client, {"project_name": "agent app", "operator": "acme"}, sandbox[f"{kind}_key"])
    assert_error(response, 403, "forbidden")
    assert len(list_projects(server.app.store.control)) == 3


def test_operator_and_name_select_the_project(server: Running, client: httpx.Client, minted: dict):
    cases = [
        {"project_name": "agent app", "operator": "globex"},  # another operator, same name
        {"project_name": "agent app"},  # no operator
        {"project_name": "Agent App", "operator": "acme"},  # names are case-sensitive
        # Pairs whose naive "operator/name" join would collide with each other.
        {"project_name": "b/c", "operator": "a"},
        {"project_name": "c", "operator": "a/b"},
        {"project_name": "app", "operator": "x/"},
        {"project_name": "/app", "operator": "x"},
    ]
    ids = {minted["project_id"]}
    for body in cases:
        response = provision(client, body)
        assert response.status_code == 201, (body, response.text)
        assert response.json()["resumed"] is False
        ids.add(response.json()["project_id"])
    assert len(ids) == len(cases) + 1
    assert len(list_projects(server.app.store.control)) == len(cases) + 1
    # Each one resumes only itself.
    resumed = provision(client, {"project_name": "c", "operator": "a/b"})
    assert_error(resumed, 401, "unauthenticated")


def test_deleted_projects_name_can_be_provisioned_again(server: Running, client: httpx.Client, minted: dict):
    from loopkit_core.purge import delete_project

    assert delete_project(server.app.store, minted["project_id"]) is True
    again = provision(client, {"project_name": "agent app", "operator": "acme"})
    assert again.status_code == 201
    assert again.json()["project_id"] != minted["project_id"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"operator": "acme"}, 400),
        ({"project_name": ""}, 400),
        ({"project_name": None}, 400),
        ({"project_name": 7}, 400),
        ({"project_name": "a\x00b"}, 400),
        ({"project_name": "x" * 201}, 400),
        ({"project_name": "ok", "operator": 5}, 400),
        ({"project_name": "ok", "operator": "o" * 201}, 400),
        ([], 400),
    ],
)
def test_bad_provision_bodies(server: Running, client: httpx.Client, body: object, status: int):
    assert_error(provision(client, body), status, "bad_request")
    assert list_projects(server.app.store.control) == []


def test_bad_provision_body_bytes(client: httpx.Client):
    headers = {"content-type": "application/json"}
    assert_error(client.post("/v1/provision", content=b"{nope", headers=headers), 400, "bad_request")
    big = b'{"project_name": "' + b"n" * 17_000 + b'"}'
    assert_error(client.post("/v1/provision", content=big, headers=headers), 413, "payload_too_large")


def test_parallel_first_calls_mint_exactly_one_project(tmp_path: Path):
    parallel = 8
    settings = make_settings(tmp_path / "data", rate_limit_per_hour=100)
    with in_thread(settings) as running:
        barrier = threading.Barrier(parallel, timeout=10)
        responses: list[httpx.Response | None] = [None] * parallel

        def call(i: int) -> None:
            with httpx.Client(base_url=running.http_url, timeout=30) as own:
                own.get("/healthz")  # connect first, so the requests start together
                barrier.wait()
                responses[i] = provision(own, {"project_name": "raced", "operator": "ops"})

        threads = [threading.Thread(target=call, args=(i,)) for i in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert all(r is not None for r in responses)
        statuses = Counter(r.status_code for r in responses)
        # Exactly one mint; every other caller lost the race: 409 while it tried to insert too, 401 when it
        # saw the winner's project first and had none of its keys. Never a 500, never a second project.
        assert statuses[201] == 1, statuses
        assert statuses[409] + statuses[401] == parallel - 1, statuses
        winner = next(r.json() for r in responses if r.status_code == 201)
        for r in responses:
            if r.status_code == 409:
                assert_error(r, 409, "conflict")
            elif r.status_code == 401:
                assert_error(r, 401, "unauthenticated")
            if r.status_code != 201:
                assert KEY_FIELDS.isdisjoint(r.json())
        projects = list_projects(running.app.store.control)
        assert [(p["project_id"], p["project_name"], p["operator"]) for p in projects] == [
            (winner["project_id"], "raced", "ops")
        ]
        # The winner's keys work, and resume the one project.
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            resumed = provision(client, {"project_name": "raced", "operator": "ops"}, winner["agent_key"])
            assert resumed.status_code == 200
            assert resumed.json()["project_id"] == winner["project_id"]
