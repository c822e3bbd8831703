"""Agent discovery pages: /quickstart.md with this server's URLs, /agents.md, and their links in /llms.txt."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
from openapi_schema_validator import OAS31Validator


def test_quickstart_names_this_server_and_runs_the_whole_loop(client, server):
    response = client.get("/quickstart.md")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    text = response.text
    assert "{{" not in text
    assert f"{server.http_url}/v1/signup" in text
    assert f"endpoint `{server.grpc_target}`" in text
    for route in (
        "/v1/signup",
        "/v1/traces",
        "/v1/telemetry",
        "/v1/runs/diagnose",
        "/handoff?format=prompt",
        "/approve",
        "/v1/runs/verify",
    ):
        assert route in text, route


def test_the_quickstart_signup_command_works_as_written(client, server, tmp_path):
    text = client.get("/quickstart.md").text
    command = re.search(r"^curl -s -X POST \S+/v1/signup .*$", text, re.MULTILINE).group(0)
    result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "my-app.json").read_text().count('"producer_key":"lk_ingest_') == 1


def test_signup_quickstart_url_is_served(client):
    signup = client.post("/v1/signup", json={"project_name": "discover"}).json()
    path = signup["quickstart_url"].split("://", 1)[1].split("/", 1)[1]
    assert client.get("/" + path).status_code == 200


def test_agents_md_states_the_loop_and_the_boundary(client):
    response = client.get("/agents.md")
    assert response.status_code == 200
    text = response.text
    for step in (
        "Read a bounded window",
        "Cluster",
        "Eval candidates and patch plans",
        "Stop before any external write",
        "Verify the next window",
    ):
        assert step in text, step
    assert "without a recorded human approval" in text


def test_llms_txt_links_both_pages(client):
    text = client.get("/llms.txt").text
    assert "(/quickstart.md)" in text and "(/agents.md)" in text


# A markdown link: [text](target). Targets in llms.txt are paths on this server.
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def llms_links(client) -> list[tuple[str, str]]:
    """(text, target) of every markdown link in the served /llms.txt, in order."""
    return LINK.findall(client.get("/llms.txt").text)


def test_every_link_in_llms_txt_is_served(client):
    links = llms_links(client)
    targets = {target for _, target in links}
    # Everything the index promises is there: the agent pages, the API, the schema and the documentation.
    for expected in ("/quickstart.md", "/agents.md", "/openapi.json", "/schema/packet.json", "/README.md"):
        assert expected in targets, expected
    assert {"/docs/api.md", "/docs/dashboard.md", "/docs/scopes.md", "/docs/architecture.md"} <= targets
    for _, target in links:
        assert target.startswith("/") and not target.startswith("//"), f"{target}: not a path on this server"
        response = client.get(target)
        assert response.status_code == 200, (target, response.status_code)
        assert response.content.strip(), target


def test_served_documentation_is_the_repository_files(client):
    repo = Path(__file__).resolve().parent.parent
    assert client.get("/README.md").content == (repo / "README.md").read_bytes()
    pages = sorted(p.stem for p in (repo / "docs").glob("*.md"))
    assert "dashboard" in pages and "api" in pages
    for name in pages:
        response = client.get(f"/docs/{name}.md")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "text/markdown; charset=utf-8"
        assert response.content == (repo / "docs" / f"{name}.md").read_bytes(), name
    for bad in ("nope", "API", "..%2Fpyproject", "%2E%2E", "a" * 100, "api.md"):
        answer = client.get(f"/docs/{bad}.md")
        assert answer.status_code == 404, bad
        assert answer.json()["ok"] is False
    assert client.get("/docs/../pyproject.toml").status_code == 404


def test_an_agent_runs_the_whole_loop_from_llms_txt_alone(client):
    """Signup, ingest, diagnose, handoff, a person's approval and verify, with every route found from /llms.txt."""
    links = dict(llms_links(client))
    spec = client.get(links["OpenAPI 3.1 description"]).json()
    quickstart = client.get(links["Quickstart"]).text
    operations = {
        operation["operationId"]: (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }

    def call(operation_id: str, key: str | None = None, body: dict | None = None, **params: str) -> httpx.Response:
        method, template, operation = operations[operation_id]
        path = template.format(**{k: v for k, v in params.items() if "{" + k + "}" in template})
        query = {k: v for k, v in params.items() if "{" + k + "}" not in template}
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            OAS31Validator({**schema, "components": spec["components"]}).validate(body)  # the body the spec asks for
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return client.request(method, path, json=body, params=query, headers=headers)

    # Which operation does what: the quickstart names the routes, the spec maps them to operations.
    by_route = {f"{method} {path}": op_id for op_id, (method, path, _) in operations.items()}
    for route in ("POST /v1/signup", "POST /v1/traces", "POST /v1/runs/diagnose", "POST /v1/runs/verify"):
        assert route.split(" ")[1] in quickstart, route
        assert route in by_route, route
    signup_op, ingest_op = by_route["POST /v1/signup"], by_route["POST /v1/traces"]
    diagnose_op, verify_op = by_route["POST /v1/runs/diagnose"], by_route["POST /v1/runs/verify"]
    handoff_op = by_route["GET /v1/packets/{packet_id}/handoff"]
    approve_op = by_route["POST /v1/packets/{packet_id}/approve"]
    assert [list(s) for s in operations[approve_op][2]["security"]] == [["dashboardKey"]]

    signed_up = call(signup_op, body={"project_name": "agent from llms"})
    assert signed_up.status_code == 201, signed_up.text
    keys = signed_up.json()
    for field in ("producer_key", "agent_key", "dashboard_key"):
        assert field in quickstart and keys[field]

    failing = [
        {"type": "error", "name": "POST /checkout", "service": "shop", "message": f"gateway timed out after {ms} ms"}
        for ms in (3001, 3002, 3003, 3004, 3005)
    ]
    healthy = [{"type": "event", "name": "POST /checkout", "service": "shop", "status": "ok"}] * 20
    sent = call(ingest_op, keys["producer_key"], {"records": failing + healthy})
    assert (sent.status_code, sent.json()["accepted"]) == (200, 25)

    ran = call(diagnose_op, keys["agent_key"], {"since_minutes": 60, "min_count": 3})
    assert ran.status_code == 200, ran.text
    packet = ran.json()["packet"]
    [issue] = packet["issues"]
    assert (issue["count"], packet["status"], packet["approval_required"]) == (5, "ready_for_issue_diagnosis", True)

    handoff = call(handoff_op, keys["agent_key"], packet_id=packet["packet_id"], format="markdown")
    assert handoff.status_code == 200
    assert "do not post" in handoff.text.lower() and all(rid in handoff.text for rid in issue["evidence"])

    # The boundary: the agent cannot approve; the person does, with the dashboard key.
    assert call(approve_op, keys["agent_key"], {"note": "self"}, packet_id=packet["packet_id"]).status_code == 403
    approved = call(approve_op, keys["dashboard_key"], {"note": "evidence checked"}, packet_id=packet["packet_id"])
    assert approved.status_code == 200 and approved.json()["approval"]["state"] == "approved"

    # The fix ships: 30 healthy calls, where the old rate (5 in 25) predicts 6 failures.
    after = call(ingest_op, keys["producer_key"], {"records": healthy + healthy[:10]})
    assert after.json()["accepted"] == 30
    verified = call(verify_op, keys["agent_key"], {"packet_id": packet["packet_id"]})
    assert verified.status_code == 200, verified.text
    [verdict] = verified.json()["verification"]["verdicts"]
    assert (verdict["issue_id"], verdict["verdict"]) == (issue["issue_id"], "held")
    assert (verdict["after"]["count"], verdict["after"]["calls"]) == (0, 30)


def test_llms_txt_names_this_servers_urls_not_the_defaults(client):
    # The test server listens on ports the OS chose: /llms.txt must name those, as /quickstart.md does.
    text = client.get("/llms.txt").text
    base = str(client.base_url).rstrip("/")
    assert "http://127.0.0.1:4318" not in text and "port 4317 (default)" not in text
    assert f"(on this server `{base}`)" in text
    assert f"This server: HTTP API and OTLP/HTTP at `{base}`" in text
    assert f"quickstart: {base}/quickstart.md" in text
