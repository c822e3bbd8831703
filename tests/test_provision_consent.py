"""POST /v1/provision mints a permanent project only with the operator's consent on a server others can reach."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import make_settings

from loopkit_core.app import LoopKit, create_app
from loopkit_core.projects import hash_secret, list_projects
from loopkit_core.provisioning import provisioning_open, reachable_by_others
from loopkit_core.server import in_thread
from loopkit_core.settings import Settings

TOKEN = "op-token-" + "k" * 32
BODY = {"project_name": "checkout", "operator": "acme"}
REFUSAL = (
    "minting a permanent project on this server needs the operator's consent: send the operator's provision token "
    "as `authorization: Bearer <token>`; ask the operator (see /contact.json), or use POST /v1/signup for a sandbox"
)


def bearer(key: str) -> dict[str, str]:
    """The authorization header for a key or token."""
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("overrides", "reachable", "is_open"),
    [
        ({}, False, True),
        ({"host": "127.0.0.1"}, False, True),
        ({"host": "127.0.0.2"}, False, True),
        ({"host": "::1"}, False, True),
        ({"host": "[::1]"}, False, True),
        ({"host": "localhost"}, False, True),
        ({"host": "0.0.0.0"}, True, False),
        ({"host": "::"}, True, False),
        ({"host": "192.168.1.20"}, True, False),
        ({"host": "loopkit.example.com"}, True, False),
        ({"host": "127.0.0.1", "forwarded_allow_ips": "10.0.0.1"}, True, False),
        ({"host": "127.0.0.1", "public_url": "https://loopkit.example.com"}, True, False),
        ({"host": "127.0.0.1", "public_url": "http://localhost:8080"}, False, True),
        ({"host": "127.0.0.1", "open_provisioning": False}, False, False),
        ({"host": "0.0.0.0", "open_provisioning": True}, True, True),
    ],
)
def test_who_can_reach_the_server_decides_whether_provisioning_is_open(overrides, reachable, is_open):
    settings = replace(Settings(), **overrides)
    assert (reachable_by_others(settings), provisioning_open(settings)) == (reachable, is_open)


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("FALSE", False), ("1", True), ("off", False), ("auto", None)]
)
def test_open_provisioning_from_the_environment(raw, expected):
    assert Settings.from_env({"LOOPKIT_OPEN_PROVISIONING": raw}).open_provisioning is expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOOPKIT_OPEN_PROVISIONING": "maybe"}, "LOOPKIT_OPEN_PROVISIONING: 'maybe' is not true or false (or auto)"),
        ({"LOOPKIT_PROVISION_TOKEN": "short"}, "provision_token must be at least 16 printable ASCII characters"),
        ({"LOOPKIT_PROVISION_TOKEN": "sha256:abc"}, "provision_token as a digest must be sha256: and 64 lowercase"),
    ],
)
def test_bad_provisioning_settings_are_refused(env, message):
    with pytest.raises(ValueError) as refused:
        Settings.from_env(env)
    assert str(refused.value).startswith(message)


class AsgiClient:
    """A synchronous HTTP client of an ASGI app served in-process: nothing binds or connects a socket."""

    def __init__(self, app: object) -> None:
        # A documentation address (TEST-NET-3) as the caller's: the app sees a client from elsewhere.
        self.transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """One request, answered by the app."""

        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://loopkit.test") as client:
                response = await client.request(method, url, **kwargs)
                await response.aread()
                return response

        return asyncio.run(send())

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        """GET url."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        """POST url."""
        return self.request("POST", url, **kwargs)


@contextmanager
def public_server(tmp_path: Path, **overrides: object) -> Iterator[tuple[LoopKit, AsgiClient]]:
    """A LoopKit configured to listen on every interface (0.0.0.0), served here in-process only."""
    settings = replace(make_settings(tmp_path / "data", rate_limit_per_hour=1000), host="0.0.0.0", **overrides)
    assert reachable_by_others(settings)
    app = create_app(settings)
    try:
        yield app, AsgiClient(app.http)
    finally:
        app.close()


@pytest.fixture
def public(tmp_path: Path) -> Iterator[tuple[LoopKit, AsgiClient]]:
    """A 0.0.0.0 server with an operator token."""
    with public_server(tmp_path, provision_token=TOKEN) as served:
        yield served


def assert_refused(response: httpx.Response) -> None:
    """The 403 without the operator's consent, with no key in it."""
    assert response.status_code == 403, response.text
    assert response.json() == {"ok": False, "error": {"code": "provision_requires_operator", "message": REFUSAL}}


def test_a_stranger_cannot_squat_a_name_and_the_operator_mints_it(public):
    app, client = public
    for headers in ({}, bearer("wrong-token-" + "x" * 30), bearer(TOKEN + "x"), bearer(TOKEN[:-1]), {"x": TOKEN}):
        assert_refused(client.post("/v1/provision", json=BODY, headers=headers))
    assert list_projects(app.store.control) == []
    minted = client.post("/v1/provision", json=BODY, headers=bearer(TOKEN))
    assert minted.status_code == 201, minted.text
    body = minted.json()
    assert (body["kind"], body["quota_spans"], body["expires_at"], body["resumed"], body["graduated"]) == (
        "permanent",
        None,
        None,
        False,
        True,
    )
    # Resuming with the project's own keys needs no token; the operator's token is not one of its keys.
    for kind in ("producer", "agent", "dashboard"):
        resumed = client.post("/v1/provision", json=BODY, headers=bearer(body[f"{kind}_key"]))
        assert (resumed.status_code, resumed.json()["project_id"], resumed.json()["resumed"]) == (
            200,
            body["project_id"],
            True,
        )
    again = client.post("/v1/provision", json=BODY, headers=bearer(TOKEN))
    assert (again.status_code, again.json()["error"]["code"]) == (401, "unauthenticated")
    assert [p["project_id"] for p in list_projects(app.store.control)] == [body["project_id"]]


def test_an_expired_sandboxs_owner_cannot_graduate_it_alone(tmp_path: Path):
    with public_server(tmp_path, provision_token=TOKEN) as (app, client):
        sandbox = client.post("/v1/signup", json={"project_name": "checkout"}).json()
        app.clock = lambda: time.time() + 15 * 86400  # past the 14-day sandbox
        for kind in ("producer", "agent", "dashboard"):
            assert_refused(client.post("/v1/provision", json=BODY, headers=bearer(sandbox[f"{kind}_key"])))
        assert [p["kind"] for p in list_projects(app.store.control)] == ["sandbox"]


def test_contact_json_says_how_provisioning_works(public, tmp_path: Path):
    _, client = public
    provisioning = client.get("/contact.json").json()["provisioning"]
    assert provisioning == {
        "open": False,
        "requires": "operator token",
        "how": "POST /v1/provision mints a permanent project only with the operator's provision token, sent as "
        "authorization: Bearer <token>: ask the operator for it (production.text, production.email); "
        "later calls resume the project with one of its own keys",
    }


def test_without_a_token_set_a_public_server_never_mints(tmp_path: Path):
    with public_server(tmp_path) as (app, client):
        refused = client.post("/v1/provision", json=BODY, headers=bearer(TOKEN))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "provision_requires_operator"
        assert "has not set a provision token (LOOPKIT_PROVISION_TOKEN)" in refused.json()["error"]["message"]
        assert list_projects(app.store.control) == []


@pytest.mark.parametrize(
    ("overrides", "headers"),
    [
        ({"open_provisioning": True}, {}),  # the operator opened it explicitly
        ({"provision_token": "sha256:" + hash_secret(TOKEN)}, bearer(TOKEN)),  # configured as a digest
    ],
)
def test_explicitly_open_or_digest_configured(tmp_path: Path, overrides, headers):
    with public_server(tmp_path, **overrides) as (app, client):
        minted = client.post("/v1/provision", json=BODY, headers=headers)
        assert minted.status_code == 201, minted.text
        assert len(list_projects(app.store.control)) == 1


def test_loopback_server_with_provisioning_closed_needs_the_token(tmp_path: Path):
    settings = make_settings(tmp_path / "data", open_provisioning=False, provision_token=TOKEN)
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        assert_refused(client.post("/v1/provision", json=BODY))
        sandbox = client.post("/v1/signup", json={"project_name": "checkout"}).json()
        assert_refused(client.post("/v1/provision", json=BODY, headers=bearer(sandbox["agent_key"])))
        minted = client.post("/v1/provision", json=BODY, headers=bearer(TOKEN))
        assert minted.status_code == 201, minted.text
        resumed = client.post("/v1/provision", json=BODY, headers=bearer(minted.json()["agent_key"]))
        assert (resumed.status_code, resumed.json()["project_id"]) == (200, minted.json()["project_id"])
        # The minted project's producer key works.
        posted = client.post(
            "/v1/traces",
            json={"records": [{"type": "event", "name": "x"}]},
            headers=bearer(minted.json()["producer_key"]),
        )
        assert posted.status_code == 200
        assert client.get("/contact.json").json()["provisioning"]["open"] is False
        assert sorted(p["kind"] for p in list_projects(running.app.store.control)) == ["permanent", "sandbox"]
