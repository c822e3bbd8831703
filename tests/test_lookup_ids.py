"""IDs that LoopKit could never have minted (NUL bytes, control characters, odd punctuation) are a miss, never a 500.

PostgreSQL refuses NUL bytes in text outright, so these must be answered before the database is asked; on both
backends the server must then keep serving the same connection.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import Project

HOSTILE = ["%00", "pkt_%00", "rec_%01abc", "a%0Ab", "%E2%80%AE", "x" * 41, "..", "pkt_'--"]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_ids_in_paths_are_404(client: httpx.Client, project: Project, raw: str):
    agent, dashboard = project.auth("agent"), project.auth("dashboard")
    for path, method, headers, body in [
        (f"/v1/packets/{raw}", "GET", agent, None),
        (f"/v1/packets/{raw}/handoff?format=json", "GET", agent, None),
        (f"/v1/records/{raw}", "GET", agent, None),
        (f"/v1/packets/{raw}/approve", "POST", dashboard, {"note": "no"}),
        (f"/v1/packets/{raw}/reject", "POST", dashboard, {"note": "no"}),
        (f"/v1/packets/{raw}/stages", "POST", agent, {"stage": "merged"}),
    ]:
        answer = client.request(method, path, headers=headers, json=body)
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    assert client.get("/v1/packets", headers=agent).status_code == 200


def test_hostile_issue_and_filters_are_precise_errors(client: httpx.Client, project: Project):
    agent = project.auth("agent")
    answer = client.get("/v1/telemetry", params={"issue": "iss_\x00"}, headers=agent)
    assert answer.status_code == 404, answer.text
    answer = client.get("/v1/telemetry", params={"service": "a\x00b"}, headers=agent)
    assert answer.status_code == 400, answer.text
    assert "NUL" in answer.json()["error"]["message"]
    answer = client.post("/v1/runs/verify", json={"packet_id": "pkt_\x00"}, headers=agent)
    assert answer.status_code == 404, answer.text
    assert client.get("/v1/telemetry", headers=agent).status_code == 200
