"""The MCP server with the official MCP Python SDK's client: over streamable HTTP at /mcp and over stdio through
`loopkit mcp --url` (a subprocess). The whole loop runs through tools alone (a person approves over REST);
isolation, scopes and bad arguments answer as the REST API does.

Traffic: POST /checkout, 100 calls in the hour before NOW, 10 of them TimeoutErrors (one signature issue). After
the approval (NOW + 5 min) 100 clean calls; the loop is verified at NOW + 40 min.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from conftest import make_settings, new_project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopdata import CHECKOUT, MINUTE_NS, NOW_NS, Clock, Spans, checkout_calls
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from loopkit_core.model import rfc3339
from loopkit_core.server import Running, in_thread

APPROVED_NS = NOW_NS + 5 * MINUTE_NS
MERGED_NS = NOW_NS + 10 * MINUTE_NS
AFTER_END_NS = NOW_NS + 35 * MINUTE_NS
VERIFY_NS = NOW_NS + 40 * MINUTE_NS
TOOLS = [
    "loopkit_project",
    "loopkit_telemetry",
    "loopkit_diagnose",
    "loopkit_packets",
    "loopkit_packet",
    "loopkit_handoff",
    "loopkit_improve",
    "loopkit_verify",
    "loopkit_loops",
]
WRITERS = {"loopkit_diagnose", "loopkit_improve", "loopkit_verify"}
READ_TOOLS = ["loopkit_project", "loopkit_packets", "loopkit_packet", "loopkit_loops"]  # a dashboard key's


class World:
    """A server with a settable clock, two projects, and the first project's traffic sent over OTLP/HTTP."""

    def __init__(self, server: Running, clock: Clock, http: httpx.Client) -> None:
        self.server, self.clock, self.http = server, clock, http
        self.shop = new_project(server, "shop")
        self.other = new_project(server, "other")
        self.spans = Spans()
        checkout_calls(self.spans, "before", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 100, 10)
        self.first_trace = self.spans.spans[0]["traceId"]
        self.record_ids = self.spans.ids_of(self.shop.project_id, "before")
        self.spans.send(http, self.shop)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock(NOW_NS)
    with (
        in_thread(make_settings(tmp_path / "data"), clock=clock) as server,
        httpx.Client(base_url=server.http_url, timeout=30) as http,
    ):
        yield World(server, clock, http)


@contextlib.asynccontextmanager
async def connect(url: str, key: str, transport: str = "http", mode: str = "auto") -> AsyncIterator[Client]:
    """An MCP client session: streamable HTTP to URL/mcp, or stdio to `loopkit mcp --url URL` (key in the env)."""
    if transport == "stdio":
        script = Path(sys.executable).with_name("loopkit")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "loopkit_core.cli"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
        params = StdioServerParameters(
            command=command[0], args=[*command[1:], "mcp", "--url", url], env={**environ, "LOOPKIT_AGENT_KEY": key}
        )
        async with Client(params, mode=mode, cache=None) as client:
            yield client
        return
    async with (
        create_mcp_http_client(headers={"authorization": f"Bearer {key}"}) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode, cache=None) as client,
    ):
        yield client


async def call(client: Client, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful tool call's structured content (the REST JSON)."""
    result = await client.call_tool(name, arguments or {})
    assert result.is_error is False, result.content
    assert result.content[0].type == "text" and result.content[0].text
    return result.structured_content


async def refused(client: Client, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """A refused tool call's structured content: the REST error JSON; the code also leads the text."""
    result = await client.call_tool(name, arguments or {})
    assert result.is_error is True
    error = result.structured_content
    assert error["ok"] is False and set(error["error"]) == {"code", "message"}
    assert result.content[0].text.startswith(error["error"]["code"] + " (")
    return error


def run(coro_fn: Any, *args: Any) -> Any:
    return anyio.run(coro_fn, *args)


# --- the whole loop, through tools alone ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_the_whole_loop_through_tools(world: World, transport: str):
    shop = world.shop

    def approve() -> None:
        world.clock.set(APPROVED_NS)
        answer = world.http.post(
            f"/v1/packets/{packet_id}/approve", json={"note": "fix the gateway timeout"}, headers=shop.auth("dashboard")
        )
        assert answer.status_code == 200, answer.text

    def send_clean_traffic() -> None:
        checkout_calls(world.spans, "after", APPROVED_NS, AFTER_END_NS, 100, 0, first_order=20_000)
        world.spans.send(world.http, shop)

    async def loop() -> None:
        nonlocal packet_id
        async with connect(world.server.http_url, shop.agent_key, transport) as client:
            listed = (await client.list_tools()).tools
            assert [t.name for t in listed] == TOOLS
            for tool in listed:
                hints = tool.annotations
                assert (hints.read_only_hint, hints.destructive_hint, hints.open_world_hint) == (
                    tool.name not in WRITERS,
                    False,
                    False,
                ), tool.name
                assert tool.input_schema["additionalProperties"] is False

            project = (await call(client, "loopkit_project"))["project"]
            assert project["project_id"] == shop.project_id
            assert project["records_accepted"] == 100
            assert project["counts"] == {
                "records_accepted": 100,
                "issues_verified": 0,
                "issues_regressed": 0,
                "packets_approved_in_flight": 0,
                "packets_approved_in_flight_truncated": False,
            }
            assert project["dashboard_url"] == f"{world.server.http_url}/v1/dashboard"
            assert shop.agent_key not in str(project)

            # Telemetry: a page with a cursor, a trace, records by ID.
            # (telemetry windows end at the wall clock unless `until` says otherwise)
            page = await call(client, "loopkit_telemetry", {"limit": 30, "until": rfc3339(NOW_NS)})
            assert len(page["records"]) == 30 and page["next_cursor"]
            assert page["window"] == {"start": rfc3339(NOW_NS - 60 * MINUTE_NS), "end": rfc3339(NOW_NS)}
            rest = await call(client, "loopkit_telemetry", {"cursor": page["next_cursor"], "limit": 100})
            assert len(rest["records"]) == 70 and rest["next_cursor"] is None
            seen = {r["record_id"] for r in page["records"] + rest["records"]}
            assert seen == set(world.record_ids)
            trace = await call(client, "loopkit_telemetry", {"trace_id": world.first_trace.upper(), "until": NOW_NS})
            assert [r["record_id"] for r in trace["records"]] == [world.record_ids[0]]
            by_id = await call(client, "loopkit_telemetry", {"record_ids": [world.record_ids[0], "rec_nope"]})
            assert [r["record_id"] for r in by_id["records"]] == [world.record_ids[0]]
            assert by_id["missing"] == ["rec_nope"]

            # Diagnose: memory first, then the packet.
            diagnosed = await call(client, "loopkit_diagnose", {})
            assert list(diagnosed) == ["ok", "memory", "packet"]
            memory, packet = diagnosed["memory"], diagnosed["packet"]
            assert (memory["new_issues"], memory["verified_total"], memory["regressed_total"]) == (1, 0, 0)
            assert memory["in_flight"] == []
            [issue] = packet["issues"]
            assert (issue["diagnoser"], issue["count"], issue["stats"]["span_name"]) == (
                "signature_clusterer",
                10,
                CHECKOUT,
            )
            packet_id = packet["packet_id"]
            listed_packets = await call(client, "loopkit_packets", {"limit": 5})
            assert [p["packet_id"] for p in listed_packets["packets"]] == [packet_id]
            assert (await call(client, "loopkit_packet", {"packet_id": packet_id}))["packet"]["issues"] == [issue]

            # The handoff, a page at a time, is the REST handoff; the prompt and the resources are too.
            rest_handoff = world.http.get(
                f"/v1/packets/{packet_id}/handoff", params={"format": "markdown"}, headers=shop.auth("agent")
            ).text
            pieces, offset = [], 0
            while offset is not None:
                args = {"packet_id": packet_id, "format": "markdown", "offset": offset, "max_chars": 1000}
                page = await call(client, "loopkit_handoff", args)
                assert page["total_chars"] == len(rest_handoff)
                pieces.append(page["text"])
                offset = page["next_offset"]
            assert "".join(pieces) == rest_handoff and len(pieces) == -(-len(rest_handoff) // 1000)
            prompt_text = world.http.get(
                f"/v1/packets/{packet_id}/handoff", params={"format": "prompt"}, headers=shop.auth("agent")
            ).text
            prompt = await client.get_prompt("fix_packet", {"packet_id": packet_id})
            assert [m.content.text for m in prompt.messages] == [prompt_text]
            resources = (await client.list_resources()).resources
            assert [str(r.uri) for r in resources] == [f"loopkit://packets/{packet_id}"]
            read = await client.read_resource(f"loopkit://packets/{packet_id}/handoff/markdown")
            assert read.contents[0].text == rest_handoff

            # Before approval, no stage can be recorded.
            early = await refused(client, "loopkit_improve", {"packet_id": packet_id, "stage": "pr_opened"})
            assert early["error"]["code"] == "approval_required"

        approve()  # a person, over REST with the dashboard key

        async with connect(world.server.http_url, shop.agent_key, transport) as client:
            pr = "https://git.example/shop/pull/7"
            opened = await call(client, "loopkit_improve", {"packet_id": packet_id, "stage": "pr_opened", "url": pr})
            assert (opened["stage"]["stage"], opened["stage"]["url"]) == ("pr_opened", pr)
            world.clock.set(MERGED_NS)
            await call(client, "loopkit_improve", {"packet_id": packet_id, "stage": "merged", "note": "deployed too"})
            send_clean_traffic()
            world.clock.set(VERIFY_NS)
            verification = (await call(client, "loopkit_verify", {"packet_id": packet_id, "record": True}))[
                "verification"
            ]
            assert [v["verdict"] for v in verification["verdicts"]] == ["held"]
            assert verification["window_after"] == {"start": rfc3339(APPROVED_NS), "end": rfc3339(VERIFY_NS)}

            counts = (await call(client, "loopkit_project"))["project"]["counts"]
            assert (counts["issues_verified"], counts["packets_approved_in_flight"]) == (1, 0)
            loops = await call(client, "loopkit_loops", {})
            [one] = loops["loops"]
            assert [s["stage"] for s in one["stages"]] == ["pr_opened", "merged"]
            assert [i["status"] for i in one["issues"]] == ["verified"]
            funnel = loops["funnel"]
            assert funnel["loops"] == 1
            assert funnel["to_approval"] == {"median_seconds": 300.0, "count": 1}
            assert funnel["to_merge"] == {"median_seconds": 600.0, "count": 1}
            assert funnel["to_first_held"] == {"median_seconds": 2400.0, "count": 1}
            rest_loops = world.http.get("/v1/loops", headers=shop.auth("agent")).json()
            assert loops == rest_loops

    packet_id = ""
    run(loop)


# --- isolation, scopes, bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_another_projects_packet_and_records_are_not_found(world: World, transport: str):
    async def check() -> None:
        async with connect(world.server.http_url, world.shop.agent_key) as client:
            packet_id = (await call(client, "loopkit_diagnose", {}))["packet"]["packet_id"]
        async with connect(world.server.http_url, world.other.agent_key, transport) as client:
            for tool, args in [
                ("loopkit_packet", {"packet_id": packet_id}),
                ("loopkit_handoff", {"packet_id": packet_id}),
                ("loopkit_verify", {"packet_id": packet_id}),
                ("loopkit_telemetry", {"record_ids": [world.record_ids[0]]}),
            ]:
                error = await refused(client, tool, args)
                assert error["error"]["code"] == "not_found", (tool, error)
            what = {"packet_id": packet_id}
            assert (await refused(client, "loopkit_packet", what))["error"]["message"] == (
                f"no packet {packet_id!r} in this project"
            )
            assert (await call(client, "loopkit_telemetry", {"trace_id": world.first_trace, "until": NOW_NS}))[
                "records"
            ] == []
            assert (await call(client, "loopkit_packets"))["packets"] == []
            with pytest.raises(Exception, match=f"not_found: no packet {packet_id!r} in this project"):
                await client.read_resource(f"loopkit://packets/{packet_id}")

    run(check)


def test_a_producer_key_gets_no_tools(world: World):
    for key, status, code in [
        (world.shop.producer_key, 403, "forbidden"),
        ("lk_not_a_key", 401, "unauthenticated"),
        (None, 401, "unauthenticated"),
    ]:
        headers = {"accept": "application/json, text/event-stream"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        answer = world.http.post("/mcp", json=body, headers=headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    message = "the producer key of this project does not have the dashboard:read scope"
    assert answer.json()["ok"] is False
    producer = world.http.post("/mcp", json={}, headers=world.shop.auth("producer"))
    assert producer.json()["error"]["message"] == message

    async def connect_as_producer() -> None:
        async with connect(world.server.http_url, world.shop.producer_key) as client:
            await client.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 (the SDK reports the 403 inside an ExceptionGroup)
        run(connect_as_producer)


def test_a_dashboard_key_reads_only(world: World):
    async def check() -> None:
        async with connect(world.server.http_url, world.shop.agent_key) as client:
            packet_id = (await call(client, "loopkit_diagnose", {}))["packet"]["packet_id"]
        async with connect(world.server.http_url, world.shop.dashboard_key) as client:
            listed = (await client.list_tools()).tools
            assert [t.name for t in listed] == READ_TOOLS
            assert all(t.annotations.read_only_hint for t in listed)
            assert (await call(client, "loopkit_packet", {"packet_id": packet_id}))["packet"]["packet_id"] == packet_id
            assert (await call(client, "loopkit_project"))["project"]["key_kind"] == "dashboard"
            for tool, scope in [
                ("loopkit_diagnose", "runs:write"),
                ("loopkit_verify", "runs:write"),
                ("loopkit_improve", "runs:write"),
                ("loopkit_telemetry", "telemetry:read"),
                ("loopkit_handoff", "reports:read"),
            ]:
                error = await refused(client, tool, {"packet_id": packet_id})
                assert error["error"] == {
                    "code": "forbidden",
                    "message": f"the dashboard key of this project does not have the {scope} scope",
                }
            assert [p["packet_id"] for p in (await call(client, "loopkit_packets"))["packets"]] == [packet_id]

    run(check)


# (tool, arguments) -> the REST request that takes the same values; both must refuse with the same error JSON.
BAD = [
    ("loopkit_telemetry", {"bogus": 1}, ("GET", "/v1/telemetry", {"bogus": "1"})),
    ("loopkit_telemetry", {"limit": "ten"}, ("GET", "/v1/telemetry", {"limit": "ten"})),
    ("loopkit_telemetry", {"limit": 1001}, ("GET", "/v1/telemetry", {"limit": "1001"})),
    ("loopkit_telemetry", {"limit": 0}, ("GET", "/v1/telemetry", {"limit": "0"})),
    ("loopkit_telemetry", {"since_minutes": -1}, ("GET", "/v1/telemetry", {"since_minutes": "-1"})),
    ("loopkit_telemetry", {"until": "yesterday"}, ("GET", "/v1/telemetry", {"until": "yesterday"})),
    ("loopkit_telemetry", {"cursor": "nope"}, ("GET", "/v1/telemetry", {"cursor": "nope"})),
    ("loopkit_packets", {"limit": 101}, ("GET", "/v1/packets", {"limit": "101"})),
    ("loopkit_packets", {"limit": True}, ("GET", "/v1/packets", {"limit": "true"})),
    ("loopkit_loops", {"limit": 0}, ("GET", "/v1/loops", {"limit": "0"})),
    ("loopkit_diagnose", {"bogus": 1}, ("POST", "/v1/runs/diagnose", {"bogus": 1})),
    ("loopkit_diagnose", {"min_count": "3"}, ("POST", "/v1/runs/diagnose", {"min_count": "3"})),
    ("loopkit_diagnose", {"max_issues": 1001}, ("POST", "/v1/runs/diagnose", {"max_issues": 1001})),
    ("loopkit_diagnose", {"diagnosers": ["nope"]}, ("POST", "/v1/runs/diagnose", {"diagnosers": ["nope"]})),
    ("loopkit_verify", {"packet_id": 7}, ("POST", "/v1/runs/verify", {"packet_id": 7})),
    ("loopkit_verify", {"packet_id": "pkt_x", "x": 1}, ("POST", "/v1/runs/verify", {"packet_id": "pkt_x", "x": 1})),
    ("loopkit_verify", {"packet_id": "pkt_nope"}, ("POST", "/v1/runs/verify", {"packet_id": "pkt_nope"})),
    ("loopkit_packet", {"packet_id": "pkt_nope"}, ("GET", "/v1/packets/pkt_nope", {})),
    ("loopkit_handoff", {"packet_id": "pkt_nope"}, ("GET", "/v1/packets/pkt_nope/handoff", {})),
    ("loopkit_improve", {"packet_id": "pkt_nope", "stage": "shipped"}, ("POST", "/v1/packets/pkt_nope/stages", {})),
]


def test_bad_arguments_are_tool_errors_with_the_rest_code_and_message(world: World):
    agent = world.shop.auth("agent")
    expected = []
    for _, _, (method, path, values) in BAD:
        if path.endswith("/stages"):
            values = {"stage": "shipped"}
        if method == "GET":
            answer = world.http.get(path, params=values, headers=agent)
        else:
            answer = world.http.post(path, json=values, headers=agent)
        assert 400 <= answer.status_code < 500, answer.text
        expected.append(answer.json())

    async def check() -> None:
        async with connect(world.server.http_url, world.shop.agent_key) as client:
            got = [await refused(client, tool, args) for tool, args, _ in BAD]
            assert got == expected
            # MCP-only arguments get the same wording; the session still answers afterwards.
            assert (await refused(client, "loopkit_packet", {"packet_id": "pkt_x", "issue_limit": 101}))["error"] == {
                "code": "bad_request",
                "message": "issue_limit must be an integer from 1 to 100",
            }
            assert (await refused(client, "loopkit_handoff", {"packet_id": "pkt_x", "max_chars": "9"}))["error"] == {
                "code": "bad_request",
                "message": "max_chars must be an integer from 1000 to 100000",
            }
            assert (await refused(client, "loopkit_verify", {"packet_id": "pkt_x", "record": False}))["error"] == {
                "code": "bad_request",
                "message": "record: false is not supported: every verification is recorded (docs/mcp.md)",
            }
            assert (await refused(client, "loopkit_nope"))["error"]["code"] == "not_found"
            assert (await call(client, "loopkit_project"))["project"]["project_id"] == world.shop.project_id

    run(check)


def test_the_handshake_era_protocol_works_too(world: World):
    """Clients on the 2025 protocol (initialize handshake), like most agents today, get the same tools."""

    async def check() -> None:
        async with connect(world.server.http_url, world.shop.agent_key, mode="legacy") as client:
            assert [t.name for t in (await client.list_tools()).tools] == TOOLS
            assert (await call(client, "loopkit_project"))["project"]["records_accepted"] == 100
            error = await refused(client, "loopkit_telemetry", {"limit": 1001})
            assert error["error"]["message"] == "limit must be between 1 and 1000"

    run(check)


def test_loopkit_mcp_says_what_is_missing_or_refused(world: World):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    command = [sys.executable, "-m", "loopkit_core.cli", "mcp"]

    def loopkit_mcp(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [*command, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=environ
        )
        return done.returncode, done.stderr.strip()

    code, stderr = loopkit_mcp()
    assert code == 2 and stderr.startswith("loopkit: error: --url (or LOOPKIT_URL) is required")
    assert loopkit_mcp("--url", world.server.http_url) == (
        2,
        "loopkit: error: an agent key is required: set LOOPKIT_AGENT_KEY (or pass --key)",
    )
    endpoint = f"{world.server.http_url}/mcp"
    assert loopkit_mcp("--url", world.server.http_url, "--key", world.shop.producer_key) == (
        1,
        f"loopkit: error: MCP at {endpoint}: PermissionError: 403: "
        "the producer key of this project does not have the dashboard:read scope",
    )
    assert loopkit_mcp("--url", world.server.http_url, "--key", "lk_nope") == (
        1,
        f"loopkit: error: MCP at {endpoint}: PermissionError: 401: unknown or revoked key",
    )


def test_a_page_too_big_for_one_answer_is_cut_and_the_cursor_goes_on(world: World):
    """20 records of ~12 KB each: more than one answer holds (100,000 characters of JSON); the page is cut where the
    next record would not fit, and next_cursor continues right after the last record shown."""
    big = Spans()
    for i in range(20):
        big.add(f"big-{i}", "GET /report", NOW_NS - (i + 1) * MINUTE_NS, 5.0, attributes={"report.body": "x" * 12_000})
    big.send(world.http, world.other)
    window = {"limit": "20", "until": rfc3339(NOW_NS), "name": "GET /report"}
    rest = world.http.get("/v1/telemetry", params=window, headers=world.other.auth("agent")).json()["records"]
    assert len(rest) == 20
    sizes = [len(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode()) + 1 for r in rest]
    fits = next(n for n in range(21) if n == 20 or sum(sizes[: n + 1]) > 100_000)
    assert 1 < fits < 20

    async def check() -> None:
        async with connect(world.server.http_url, world.other.agent_key) as client:
            args = {"limit": 20, "until": rfc3339(NOW_NS), "name": "GET /report"}
            first = await call(client, "loopkit_telemetry", args)
            assert first["records"] == rest[:fits]
            assert first["records_cut"] == {
                "returned": fits,
                "asked_for": 20,
                "rest": "call loopkit_telemetry with cursor=next_cursor (and the same filters) for the next records",
            }
            seen = list(first["records"])
            cursor = first["next_cursor"]
            while cursor:
                page = await call(client, "loopkit_telemetry", {"cursor": cursor, "limit": 20, "name": "GET /report"})
                seen += page["records"]
                cursor = page["next_cursor"]
            assert seen == rest

    run(check)


def test_an_mcp_request_body_over_64_kib_is_413(world: World):
    headers = {**world.shop.auth("agent"), "accept": "application/json, text/event-stream"}
    call_body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "loopkit_project"}}
    padded = {**call_body, "params": {**call_body["params"], "arguments": {"pad": "x" * 65_536}}}
    answer = world.http.post("/mcp", json=padded, headers=headers)
    assert answer.status_code == 413
    assert world.http.post("/mcp", json=call_body, headers=headers).status_code == 200


PLAUSIBLE = ["json", "markdown", "prompt", "pr_opened", "merged", "https://git.example/pull/1", "pkt_x", "60"]
FUZZ_EXAMPLES = int(os.environ.get("LOOPKIT_FUZZ_EXAMPLES", "60"))
fuzz_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def test_any_tool_arguments_get_an_answer_or_a_4xx_tool_error_and_the_session_goes_on(world: World):
    """Hypothesis: every tool with arguments made of its own names and random ones, any JSON values. Each call
    answers `ok` or a tool error with a 4xx code; never a JSON-RPC error, never a crashed session."""
    from loopkit_core.mcp.tools import TOOLS as DEFINED

    names = {tool.name: sorted(tool.properties) for tool in DEFINED}
    tool_calls = st.sampled_from(sorted(names)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.dictionaries(
                st.one_of(*[st.sampled_from(names[name] or ["x"])] * 4, st.text(max_size=8)),
                st.one_of(fuzz_values, st.integers(-5, 1500), st.sampled_from(PLAUSIBLE)),
                max_size=4,
            ),
        )
    )
    seen: dict[str, int] = {}
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(connect(world.server.http_url, world.shop.agent_key)) as client,
    ):

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(tool_calls)
        def check(call: tuple[str, dict[str, Any]]) -> None:
            name, arguments = call
            result = portal.call(client.call_tool, name, arguments)
            body = result.structured_content
            if result.is_error:
                assert re.fullmatch(r"[a-z_]+ \(4\d\d\): .+", result.content[0].text, re.S), result.content
                assert body["ok"] is False and body["error"]["code"] in result.content[0].text
                seen[body["error"]["code"]] = seen.get(body["error"]["code"], 0) + 1
            else:
                assert body["ok"] is True
                seen["ok"] = seen.get("ok", 0) + 1

        check()
        assert portal.call(call, client, "loopkit_project")["project"]["project_id"] == world.shop.project_id
    assert sum(seen.values()) == FUZZ_EXAMPLES and seen.get("bad_request", 0) > 0
