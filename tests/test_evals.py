"""GET /v1/packets/{packet_id}/evals: eval specs rebuilt from evidence records, as JSON, a JSONL dataset and pytest.

The demo's packet (the sample agent app on the real OpenTelemetry SDK: a GenAI tool that times out, a route that
raises TypeError, a slow route) must give a pytest module that imports and collects, whose tests skip until wired
and fail clearly (assertions, not errors) when wired to the broken behaviour; its JSONL validates against
/schema/eval-example.json. The realistic packet of tests/loopdata.py checks the exact values.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from conftest import Project, make_settings, new_project
from loopdata import Loop, realistic_packet_traffic, running_loop

from loopkit_core import evals
from loopkit_core.demo.sample_app import WINDOW_MINUTES, TripPlanner
from loopkit_core.server import Running, in_thread


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[tuple[Running, httpx.Client, Project, dict]]:
    """A server with the demo's traffic (baseline and bad window) and its first diagnosis packet."""
    with (
        in_thread(make_settings(tmp_path_factory.mktemp("data"))) as server,
        httpx.Client(base_url=server.http_url, timeout=60) as client,
    ):
        project = new_project(server, "trip planner")
        app = TripPlanner(f"{server.http_url}/v1/traces", project.producer_key, lambda text: None)
        now = time.time_ns()
        app.baseline(now)
        app.bad_window(now)
        answer = client.post(
            "/v1/runs/diagnose", json={"since_minutes": WINDOW_MINUTES, "min_count": 3}, headers=project.auth("agent")
        )
        assert answer.status_code == 200, answer.text
        yield server, client, project, answer.json()["packet"]


def get_evals(client: httpx.Client, project: Project, packet_id: str, fmt: str | None, key: str = "agent"):
    params = {"format": fmt} if fmt else {}
    return client.get(f"/v1/packets/{packet_id}/evals", params=params, headers=project.auth(key))


def run_pytest(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args, path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_demo_packet_gives_a_pytest_module_that_collects_and_skips_until_wired(demo, tmp_path: Path):
    _, client, project, packet = demo
    spec = get_evals(client, project, packet["packet_id"], "json").json()
    with_candidates = [i for i in packet["issues"] if i.get("eval_candidate")]
    assert [e["eval_candidate"] for e in spec["evals"]] == [i["eval_candidate"] for i in with_candidates]
    examples = sum(len(e["examples"]) for e in spec["evals"])
    assert examples == sum(min(len(i["evidence"]), 20) for i in with_candidates) > 0

    answer = get_evals(client, project, packet["packet_id"], "pytest")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/x-python; charset=utf-8"
    module = tmp_path / "test_loopkit_evals.py"
    module.write_text(answer.text)

    collected = run_pytest(module, "--collect-only")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert f"{examples} tests collected" in collected.stdout
    run = run_pytest(module, "-rs")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{examples} skipped" in run.stdout
    assert "run_example is not wired to the code under test yet" in run.stdout

    # Wired to the behaviour the evidence recorded (the bug): every case fails on its assertion, none errors.
    broken = answer.text.replace(
        '    pytest.skip("run_example is not wired to the code under test yet (see its docstring)")',
        '    return dict(example["observed"])',
    )
    assert broken != answer.text
    module.write_text(broken)
    failed = run_pytest(module)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{examples} failed" in failed.stdout and "error" not in failed.stdout.splitlines()[-1]
    assert "still raises TimeoutError" in failed.stdout and "the bound is" in failed.stdout

    # Wired to a fixed behaviour: every case passes.
    fixed = answer.text.replace(
        '    pytest.skip("run_example is not wired to the code under test yet (see its docstring)")',
        '    return {"status": "ok", "exception_type": None, "duration_ms": 1.0, "output": None}',
    )
    module.write_text(fixed)
    passed = run_pytest(module)
    assert passed.returncode == 0 and f"{examples} passed" in passed.stdout, passed.stdout


def test_the_demo_jsonl_validates_against_the_documented_schema(demo):
    _, client, project, packet = demo
    schema = client.get("/schema/eval-example.json")
    assert schema.status_code == 200 and schema.headers["content-type"] == "application/schema+json"
    validator = jsonschema.Draft202012Validator(schema.json(), format_checker=jsonschema.FormatChecker())
    answer = get_evals(client, project, packet["packet_id"], "jsonl")
    assert answer.headers["content-type"] == "application/jsonl; charset=utf-8"
    lines = [json.loads(line) for line in answer.text.splitlines()]
    spec = get_evals(client, project, packet["packet_id"], None).json()  # json is the default
    assert len(lines) == sum(len(e["examples"]) for e in spec["evals"])
    for line in lines:
        validator.validate(line)
        assert line["output"] == line["expected_output"]
    assert len({line["id"] for line in lines}) == len(lines)
    # The GenAI tool call's real arguments, decoded from gen_ai.tool.call.arguments.
    # The tool-failure issue's examples (the user-signal issue also quotes some of these calls, as what its
    # sessions met: there they are context, not the failure to remove).
    [tool_issue] = [i for i in packet["issues"] if i["signal_type"] == "tool_failure"]
    tool = [
        line
        for line in lines
        if line["input"].get("gen_ai", {}).get("tool_name") == "search_flights"
        and line["id"].startswith(tool_issue["eval_candidate"] + "/")
    ]
    assert tool, [line["input"] for line in lines]
    for line in tool:
        arguments = line["input"]["gen_ai"]["tool_arguments"]
        assert set(arguments) == {"origin", "destination"} and all(len(v) == 3 for v in arguments.values())
        assert line["expected_output"]["kind"] == "no_failure"
        assert line["expected_output"]["exception_type"] == "TimeoutError"
        assert line["metadata"]["observed"]["exception_type"] == "TimeoutError"
    route = [line for line in lines if line["input"].get("http", {}).get("route") == "/trips/{trip_id}"]
    assert route and all(line["input"]["http"]["method"] == "GET" for line in route)
    assert all(line["expected_output"]["exception_type"] == "TypeError" for line in route)
    # Each latency issue's examples are calls of its own route (the demo has two: recommendations and chat).
    slow = [line for line in lines if line["expected_output"]["kind"] == "latency"]
    latency = {i["eval_candidate"]: i["stats"]["operation"] for i in packet["issues"] if i["signal_type"] == "latency"}
    assert slow and "GET /api/recommendations" in latency.values()
    for line in slow:
        operation = latency[line["id"].split("/", 1)[0]]
        assert line["input"]["operation"] == operation
        if operation == "GET /api/recommendations":
            assert (line["input"]["http"]["method"], line["input"]["http"]["route"]) == ("GET", "/api/recommendations")


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    with running_loop(tmp_path / "data", realistic_packet_traffic) as running:
        yield running


def test_the_spec_of_the_realistic_packet(loop: Loop):
    pid = loop.project.project_id
    answer = loop.client.get(f"/v1/packets/{loop.packet['packet_id']}/evals", headers=loop.project.auth("agent"))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    spec = answer.json()
    assert (spec["spec_version"], spec["packet_id"]) == ("loopkit.eval/1", loop.packet["packet_id"])
    assert spec["project_id"] == pid
    assert spec["approval"] == "pending"
    by_candidate = {e["eval_candidate"]: e for e in spec["evals"]}
    assert sorted(by_candidate) == ["checkout-get-search-latency-v1", "checkout-timeouterror-v1"]
    errors = by_candidate["checkout-timeouterror-v1"]
    assert errors["expected"] == {
        "kind": "no_failure",
        "exception_type": "TimeoutError",
        "message_template": "[http 504] payment gateway timed out after <DUR> (order <NUM>)",
        "text": "`/checkout` completes without `TimeoutError`; no record matches this issue's signature",
    }
    assert [x["record_id"] for x in errors["examples"]] == loop.spans.ids_of(pid, "checkout-err-")[::-1]
    assert errors["missing_records"] == []
    first = errors["examples"][0]
    assert first["input"]["http"] == {"method": "POST", "route": "/checkout"}
    assert first["input"]["operation"] == "POST /checkout" and first["release"] == "2.4.1"
    assert first["observed"]["exception_type"] == "TimeoutError" and first["observed"]["http_status_code"] == 504
    assert first["observed"]["message"] == "payment gateway timed out after 3000 ms (order 10035)"
    latency = by_candidate["checkout-get-search-latency-v1"]
    # The bound is the detector's own: the baseline p95 (58.841 ms) x 1.5 (docs/diagnosis.md).
    assert latency["expected"]["kind"] == "latency" and latency["expected"]["max_duration_ms"] == 88.261
    assert len(latency["examples"]) == 10
    assert all(x["observed"]["duration_ms"] > 58.841 for x in latency["examples"])


def test_formats_keys_and_packets(loop: Loop):
    path = f"/v1/packets/{loop.packet['packet_id']}/evals"
    bad = loop.client.get(path, params={"format": "yaml"}, headers=loop.project.auth("agent"))
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "unknown format 'yaml'; available: json, jsonl, pytest"
    assert loop.client.get(path, headers=loop.project.auth("producer")).status_code == 403
    assert loop.client.get(path, headers=loop.project.auth("dashboard")).status_code == 403
    assert loop.client.get(path).status_code == 401
    missing = loop.client.get("/v1/packets/pkt_0000/evals", headers=loop.project.auth("agent"))
    assert missing.status_code == 404


def test_telemetry_text_in_the_pytest_module_is_only_data():
    hostile = '"""\nimport os; os.system("echo pwned")  # \'\'\' {SPEC} \\'
    document = {
        "spec_version": evals.SPEC_VERSION,
        "packet_id": 'pkt_1"""; import os',
        "project_id": "p",
        "generated_at": "2026-03-02T10:00:00.000000Z",
        "approval": "pending",
        "evals": [
            {
                "eval_candidate": hostile,
                "issue_id": "iss_1",
                "title": hostile,
                "signal_type": "error",
                "expected": {"kind": "no_failure", "exception_type": hostile, "message_template": None, "text": None},
                "examples": [],
                "missing_records": [],
            }
        ],
    }
    text = evals.pytest_module(document)
    tree = ast.parse(text)
    top = [type(node).__name__ for node in tree.body]
    assert top == ["Expr", "ImportFrom", "Import", "ImportFrom", "Import", "Assign", "Assign"] + ["FunctionDef"] * 4
    assert ast.get_docstring(tree).startswith("LoopKit eval specs for packet pkt_1import")
    namespace: dict = {}
    exec(compile(tree, "generated", "exec"), namespace)  # noqa: S102 (the module only defines things)
    assert namespace["SPEC"] == document
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert names == ["run_example", "check", "cases", "test_import_os_os_system_echo_pwned_spec"]
