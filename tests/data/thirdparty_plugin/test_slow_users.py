"""The slow_users diagnoser inside a real LoopKit: records in over HTTP, a packet out."""

from __future__ import annotations

import httpx
import pytest

from loopkit_core.server import in_thread
from loopkit_core.settings import Settings


@pytest.fixture
def loopkit(tmp_path):
    """A real LoopKit on free loopback ports with its own data directory, and a project's keys."""
    settings = Settings.from_env({}, data_dir=tmp_path / "data", http_port=0, grpc_port=0)
    with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        keys = client.post("/v1/signup", json={"project_name": "slow users test"}).json()
        client.headers["authorization"] = f"Bearer {keys['agent_key']}"
        yield client, {"authorization": f"Bearer {keys['producer_key']}"}


def thumbs(name: str, feedback: str, user: str) -> dict:
    """A user_signal record as an app would send it."""
    return {"type": "user_signal", "name": name, "user_id": user, "attributes": {"feedback": feedback}}


def test_the_plugin_is_loaded(loopkit):
    client, _ = loopkit
    plugins = client.get("/v1/plugins").json()
    assert {"name": "slow_users", "module": "loopkit_slow_users", "builtin": False, "hooks": ["diagnose"]} in plugins[
        "plugins"
    ]
    assert "slow_users" in plugins["diagnosers"]
    assert plugins["load_errors"] == []


def test_thumbs_down_become_one_issue_per_operation(loopkit):
    client, producer = loopkit
    records = [thumbs("POST /checkout", "thumbs_down", f"u{i}") for i in range(4)]
    records += [thumbs("POST /checkout", "thumbs_up", "u9"), thumbs("GET /search", "thumbs_down", "u1")]
    posted = client.post("/v1/traces", json={"records": records}, headers=producer).json()
    assert posted["accepted"] == 6

    answer = client.post("/v1/runs/diagnose", json={"diagnosers": ["slow_users"], "min_count": 3})
    assert answer.status_code == 200, answer.text
    packet = answer.json()["packet"]
    assert packet["diagnoser_errors"] == []
    [issue] = packet["issues"]  # GET /search has one thumbs-down only: below min_count
    assert issue["diagnoser"] == "slow_users"
    assert issue["count"] == 4
    thumbs_down = set(posted["record_ids"][:4])
    assert set(issue["evidence"]) == thumbs_down
    # Every record of the issue, not only the evidence sample: exactly the four thumbs-down.
    listed = client.get(issue["records_url"]).json()["records"]
    assert {r["record_id"] for r in listed} == thumbs_down
