"""Hostile parameter values (issue 22, item 8) and the per-project diagnose rate limit: a precise 4xx, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Project, make_settings, new_project

from loopkit_core.server import Running, in_thread

# Each was a 500 (int('²') raises after '²'.isdigit() said yes) or was accepted (int('٥') == 5, float('1_0') == 10).
NOT_ASCII_NUMBERS = ["²", "٥", "١٢٣", "1_0", "５", "1\u00a0", "0x10"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server for the module, with a diagnose limit low enough to reach."""
    with in_thread(make_settings(tmp_path_factory.mktemp("params") / "data", diagnose_per_minute=3)) as running:
        yield running


@pytest.fixture(scope="module")
def client(running: Running) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with httpx.Client(base_url=running.http_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def project(running: Running) -> Project:
    """The project whose reads are probed."""
    return new_project(running, "params")


def _refused(answer: httpx.Response, pattern: str) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "bad_request" and re.search(pattern, error["message"]), error


@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
def test_telemetry_takes_ascii_numbers_only(client, project, value):
    agent = project.auth("agent")
    _refused(client.get("/v1/telemetry", params={"limit": value}, headers=agent), "^limit must be an integer$")
    _refused(client.get("/v1/telemetry", params={"since_minutes": value}, headers=agent), "^since_minutes must be a")
    if value != "0x10":  # not digits at all: RFC 3339 parsing refuses it too
        _refused(client.get("/v1/telemetry", params={"until": value}, headers=agent), "^until must be RFC 3339")


@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
def test_packet_lists_take_ascii_numbers_only(client, project, value):
    for path, kind in (("/v1/packets", "agent"), ("/v1/dashboard", "dashboard")):
        headers = {**project.auth(kind), "accept": "application/json"}
        _refused(client.get(path, params={"limit": value}, headers=headers), "^limit must be an integer from 1 to 100$")


@pytest.mark.parametrize("value", ["²", "١٢٣", "1_0"])
def test_diagnose_until_takes_ascii_digits_only(client, project, value):
    answer = client.post("/v1/runs/diagnose", json={"until": value}, headers=project.auth("agent"))
    _refused(answer, "^until must be RFC 3339")


def test_ascii_values_still_work(client, project):
    agent = project.auth("agent")
    answer = client.get("/v1/telemetry", params={"limit": "5", "since_minutes": "1.5", "until": "1700000000000000000"})
    assert answer.status_code == 401  # no key: checked first
    answer = client.get(
        "/v1/telemetry", params={"limit": "5", "since_minutes": "1.5", "until": "1700000000000000000"}, headers=agent
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["window"] == {"start": "2023-11-14T22:11:50.000000Z", "end": "2023-11-14T22:13:20.000000Z"}
    assert client.get("/v1/packets", params={"limit": "100"}, headers=agent).status_code == 200


def test_a_non_ascii_csrf_value_is_refused_not_a_crash(client, running, tmp_path: Path):
    """compare_digest raises TypeError on non-ASCII str: the dashboard compares bytes and answers 403."""
    owner = new_project(running, "csrf")
    records = [{"type": "error", "name": "GET /x", "message": "boom"} for _ in range(3)]
    assert client.post("/v1/traces", json={"records": records}, headers=owner.auth()).status_code == 200
    packet = client.post("/v1/runs/diagnose", json={}, headers=owner.auth("agent")).json()["packet"]
    with httpx.Client(base_url=running.http_url, timeout=30) as browser:
        signed = browser.post("/v1/dashboard/login", data={"key": owner.dashboard_key, "next": "/v1/dashboard"})
        assert signed.status_code == 303
        path = f"/v1/dashboard/packets/{packet['packet_id']}/approve"
        for token in ("é" * 43, "\u2028", "ﬀ"):
            answer = browser.post(path, data={"note": "n", "csrf": token})
            assert answer.status_code == 403, answer.text
            assert "form expired or came from another site" in answer.text
    after = client.get(f"/v1/packets/{packet['packet_id']}", headers=owner.auth("agent")).json()["packet"]
    assert after["approval"]["state"] == "pending"


def test_diagnose_is_rate_limited_per_project(client, running):
    first, second = new_project(running, "busy"), new_project(running, "quiet")
    answers = [client.post("/v1/runs/diagnose", json={}, headers=first.auth("agent")) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.json()["error"] == {
        "code": "rate_limited",
        "message": "at most 3 diagnoses a minute per project; retry later",
    }
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another project's diagnoses are not held back by the first one's.
    assert client.post("/v1/runs/diagnose", json={}, headers=second.auth("agent")).status_code == 200
