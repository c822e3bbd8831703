"""Agent discovery pages: /quickstart.md with this server's URLs, /agents.md, and their links in /llms.txt."""

from __future__ import annotations

import re
import subprocess


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
