"""The client CLI against a running server: `loopkit telemetry` and `loopkit diagnose`, tables and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m loopkit_core.cli ARGS` with LOOPKIT_* variables cleared (unless given)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", *args], capture_output=True, text=True, timeout=60, env=environ
    )


def seed(client, project) -> list[str]:
    """Four errors of one fault and two events; their record IDs."""
    records = [{"type": "error", "name": "POST /pay", "message": f"card declined for order {n}"} for n in range(4)]
    records += [{"type": "event", "name": "POST /pay"}] * 2
    answer = client.post("/v1/traces", json={"records": records}, headers=project.auth())
    assert answer.json()["accepted"] == 6
    return answer.json()["record_ids"]


def test_telemetry_prints_a_table_and_json(client, server, project):
    ids = seed(client, project)
    table = run_cli("telemetry", "--url", server.http_url, "--key", project.agent_key, "--type", "error")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["record_id", "timestamp", "type", "status"]
    assert sorted(line.split()[0] for line in lines[1:5]) == sorted(ids[:4])
    assert lines[-1].startswith("4 record(s) in ")
    as_json = run_cli(
        "telemetry", "--json", "--limit", "2", env={"LOOPKIT_URL": server.http_url, "LOOPKIT_KEY": project.agent_key}
    )
    page = json.loads(as_json.stdout)
    assert len(page["records"]) == 2 and page["next_cursor"]


def test_diagnose_prints_the_packet(client, server, project):
    seed(client, project)
    result = run_cli("diagnose", "--url", server.http_url, "--key", project.agent_key, "--min-count", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pkt_")
    assert "card declined for order <NUM>" in result.stdout
    packet = json.loads(run_cli("diagnose", "--url", server.http_url, "--key", project.agent_key, "--json").stdout)
    assert [i["count"] for i in packet["issues"]] == [4]


def test_client_errors_are_one_line_and_non_zero(server, project):
    wrong = run_cli("telemetry", "--url", server.http_url, "--key", project.producer_key)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().startswith("loopkit: error: 403: the producer key of this project")
    missing = run_cli("telemetry", "--url", server.http_url)
    assert (missing.returncode, missing.stderr.strip()) == (1, "loopkit: error: no key: pass --key or set LOOPKIT_KEY")


def test_rules_shows_and_sets_the_fingerprint_rules(server, project, tmp_path):
    url = ("--url", server.http_url)
    empty = run_cli("rules", *url, "--key", project.agent_key)
    assert (empty.returncode, empty.stdout) == (0, "version 0: 0 rule(s)\n")
    rules = [{"match": {"message": "*declined*"}, "fingerprint": "declines {name}", "title": "Declined on {name}"}]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": rules}))
    denied = run_cli("rules", "set", str(path), *url, "--key", project.agent_key)
    assert denied.returncode == 1 and "403" in denied.stderr
    saved = run_cli("rules", "set", str(path), *url, "--key", project.dashboard_key, "--version", "0", "--json")
    assert saved.returncode == 0, saved.stderr
    assert (json.loads(saved.stdout)["version"], json.loads(saved.stdout)["rules"]) == (1, rules)
    shown = run_cli("rules", *url, "--key", project.agent_key)
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("version 1: 1 rule(s), saved ")
    assert lines[0].endswith(f" by dashboard key {project.dashboard_key[:12]}…")
    assert lines[1].split() == ["rule", "match", "fingerprint", "title"]
    assert "declines {name}" in lines[2] and "Declined on {name}" in lines[2]
    # A bare list works too; a stale version and an invalid rule are one-line errors.
    path.write_text(json.dumps(rules))
    stale = run_cli("rules", "set", str(path), *url, "--key", project.dashboard_key, "--version", "0")
    assert stale.returncode == 1 and "409" in stale.stderr
    path.write_text(json.dumps([{"match": {}, "fingerprint": "x"}]))
    invalid = run_cli("rules", "set", str(path), *url, "--key", project.dashboard_key)
    assert invalid.returncode == 1 and "rules[0]: match needs at least one condition" in invalid.stderr
    path.write_text("{not json")
    unreadable = run_cli("rules", "set", str(path), *url, "--key", project.dashboard_key)
    assert unreadable.returncode == 1 and "cannot read rules from" in unreadable.stderr
