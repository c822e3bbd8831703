"""LoopKit's /mcp with the official MCP TypeScript SDK from npm (tests/mcp_ts: Client + StreamableHTTPClientTransport).

Without Node or the installed package (`npm ci --prefix tests/mcp_ts`) this skips locally, and fails when CI=true
(.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import make_settings, new_project
from loopdata import MINUTE_NS, NOW_NS, Clock, Spans, checkout_calls
from test_mcp import TOOLS

from loopkit_core.server import Running, in_thread

SCRIPT_DIR = Path(__file__).resolve().parent / "mcp_ts"
SDK = SCRIPT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"


def _node() -> str:
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node is not installed"
    elif not SDK.exists():
        reason = "@modelcontextprotocol/sdk is not installed (npm ci --prefix tests/mcp_ts)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the TypeScript MCP test needs Node and the npm package in CI (.ci/run): {reason}")
        pytest.skip(f"TypeScript MCP test skipped: {reason}")
    assert node is not None
    return node


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    with in_thread(make_settings(tmp_path / "data"), clock=Clock(NOW_NS)) as running:
        yield running


def test_the_typescript_sdk_lists_and_calls_tools(server: Running):
    node = _node()
    project = new_project(server, "shop")
    spans = Spans()
    checkout_calls(spans, "before", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10)
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        spans.send(http, project)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
        environ |= {"LOOPKIT_URL": server.http_url, "LOOPKIT_AGENT_KEY": project.agent_key}
        done = subprocess.run(
            [node, "check.mjs"], cwd=SCRIPT_DIR, env=environ, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        packet_id = out["diagnose"]["structured"]["packet"]["packet_id"]
        markdown = http.get(
            f"/v1/packets/{packet_id}/handoff", params={"format": "markdown"}, headers=project.auth("agent")
        ).text
        prompt = http.get(
            f"/v1/packets/{packet_id}/handoff", params={"format": "prompt"}, headers=project.auth("agent")
        ).text

    assert out["protocolVersion"] == "2025-11-25"  # the SDK of package-lock.json: the initialize-handshake era
    assert [t["name"] for t in out["tools"]] == TOOLS
    writers = {t["name"] for t in out["tools"] if not t["annotations"]["readOnlyHint"]}
    assert writers == {"loopkit_diagnose", "loopkit_improve", "loopkit_verify"}
    assert all(t["annotations"]["openWorldHint"] is False for t in out["tools"])
    assert all(t["annotations"]["destructiveHint"] is False for t in out["tools"])

    assert out["project"]["isError"] is False
    assert out["project"]["structured"]["project"]["records_accepted"] == 100
    diagnosed = out["diagnose"]["structured"]
    assert list(diagnosed) == ["ok", "memory", "packet"]
    assert diagnosed["memory"]["new_issues"] == 1
    assert [i["count"] for i in diagnosed["packet"]["issues"]] == [10]
    handoff = out["handoff"]["structured"]
    assert (handoff["text"], handoff["total_chars"]) == (markdown[:1000], len(markdown))
    assert handoff["next_offset"] == (1000 if len(markdown) > 1000 else None)
    assert out["promptChars"] == len(prompt)

    assert out["badLimit"]["isError"] is True
    assert out["badLimit"]["structured"] == {
        "ok": False,
        "error": {"code": "bad_request", "message": "limit must be between 1 and 1000"},
    }
    assert out["unknownArgument"]["structured"]["error"] == {
        "code": "bad_request",
        "message": "unknown field(s) bogus; allowed: limit",
    }
    assert out["afterErrors"]["isError"] is False
    assert [p["packet_id"] for p in out["afterErrors"]["structured"]["packets"]] == [packet_id]
