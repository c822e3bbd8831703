"""The Issues page, the session pages and the trace page, in headless Chromium (as test_dashboard_browser.py).

Telemetry goes through the real OTLP/HTTP exporter with explicit times, so the waterfall's rows, the critical path
and the scorecards have exact values. Screenshots land in tests/artifacts (or $LOOPKIT_TEST_ARTIFACTS).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import httpx
import pytest
import test_dashboard_browser as shared
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from test_dashboard_browser import TIMEOUT_MS, artifacts_dir, watch

from loopkit_core.server import Running

MS = 1_000_000
FAILING = 4  # sessions whose search_flights tool call fails, each followed by a thumbs-down
HEALTHY = 2
browser = shared.browser  # the same Chromium fixture
SESSION_XSS = "<img src=x onerror=alert(1)>"  # session IDs with a slash have no page (see docs/api.md)


def finished(tracer, base, common, name, start, end, parent=None, error=False, **attributes):
    """A finished span from `start` to `end` ms after `base`, a child of `parent` when given."""
    context = trace.set_span_in_context(parent) if parent is not None else None
    s = tracer.start_span(name, context=context, start_time=base + start * MS, attributes={**common, **attributes})
    if error:
        s.record_exception(TimeoutError("search_flights timed out after 30 s"))
        s.set_status(Status(StatusCode.ERROR, "timeout"))
    s.end(end_time=base + end * MS)
    return s


def send_sessions(server: Running, producer_key: str) -> dict[str, str]:
    """Six chat sessions: four with a failing search_flights tool call and a thumbs-down, two healthy."""
    exporter = OTLPSpanExporter(
        endpoint=f"{server.http_url}/v1/traces", headers={"authorization": f"Bearer {producer_key}"}, timeout=10
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "travel-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("loopkit.tests.context")
    t0 = (time.time_ns() // 10**9 - 300) * 10**9
    traces = {}
    for i in range(FAILING + HEALTHY):
        failing = i < FAILING
        session = SESSION_XSS if i == 0 else f"sess-{i}"
        base = t0 + i * 10_000 * MS
        common = {"session.id": session, "user.id": f"user-{i}"}

        root = tracer.start_span("POST /chat", start_time=base, attributes=common)
        span = functools.partial(finished, tracer, base, common)
        span("chat", 0, 300, root, **{"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 200,
                                      "gen_ai.usage.output_tokens": 40})  # fmt: skip
        span("tool search_flights", 300, 3300 if failing else 800, root, error=failing,
             **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_flights"})  # fmt: skip
        span("load profile", 350, 500, root)
        span("chat", 3300 if failing else 800, 3600 if failing else 1100, root, **{"gen_ai.operation.name": "chat"})
        root.end(end_time=base + (3600 if failing else 1100) * MS)
        traces[session] = format(root.get_span_context().trace_id, "032x")
        if failing:
            span("POST /feedback", 4000, 4001, **{"loopkit.signal": "user_signal", "feedback": "thumbs_down"})
    provider.shutdown()
    return traces


@pytest.fixture
def world(server: Running, client: httpx.Client) -> dict[str, Any]:
    """A signed-up project with six sessions and two diagnosis packets."""
    signup = client.post("/v1/signup", json={"project_name": "travel agent"})
    assert signup.status_code == 201, signup.text
    keys = signup.json()
    traces = send_sessions(server, keys["producer_key"])
    agent = {"authorization": f"Bearer {keys['agent_key']}"}
    packets = []
    for _ in range(2):
        ran = client.post("/v1/runs/diagnose", json={"min_count": 3}, headers=agent)
        assert ran.status_code == 200, ran.text
        packets.append(ran.json()["packet"])
    return {"signup": keys, "packets": packets, "agent": agent, "traces": traces}


def test_issues_page_lists_each_issue_once_with_counts_per_packet(server, client, world):
    dash = {"authorization": f"Bearer {world['signup']['dashboard_key']}", "accept": "application/json"}
    body = client.get("/v1/dashboard/issues", headers=dash).json()
    tool = [i for i in body["issues"] if "search_flights" in i["title"]]
    assert len(tool) == 1, [i["title"] for i in body["issues"]]
    [issue] = tool
    newest, first = world["packets"][1]["packet_id"], world["packets"][0]["packet_id"]
    assert [(p["packet_id"], p["count"]) for p in issue["packets"]] == [(newest, FAILING), (first, FAILING)]
    assert issue["status"] == "new" and issue["regressed"] is False and issue["last_packet_id"] == newest
    assert body["packets_read"] == 2
    assert client.get("/v1/dashboard/issues", params={"limit": "0"}, headers=dash).status_code == 400


def test_issues_session_and_trace_pages_in_chromium(browser, server, client, world):
    base = server.http_url
    keys = world["signup"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = watch(page)
    page.goto(keys["dashboard_url"])
    page.wait_for_url(f"{base}/v1/dashboard")

    # Issues: one row per fingerprint, its counts in both packets, linked to its packet.
    page.get_by_role("link", name="Issues").click()
    page.wait_for_url(f"{base}/v1/dashboard/issues")
    rows = page.locator("#issues tr.issue-row")
    titles = rows.locator("th a").all_inner_texts()
    assert sum("search_flights" in t for t in titles) == 1, titles
    row = rows.filter(has_text="search_flights")
    assert row.locator("td").nth(2).inner_text() == f"{FAILING} · {FAILING}"
    assert row.locator(".badge").first.inner_text() == "new"
    page.screenshot(path=str(artifacts_dir() / "dashboard-issues.png"), full_page=True)

    # The issue's packet: every evidence row links its trace and its session.
    row.locator("th a").click()
    page.wait_for_url(f"{base}/v1/dashboard/packets/{world['packets'][1]['packet_id']}")
    article = page.locator("article").filter(has_text="search_flights").first
    assert article.locator("a.trace-link").count() == FAILING
    assert article.locator("a.session-link").count() == FAILING

    # A trace: the waterfall, the critical path (not the profile load beside the tool call), shares of the root.
    article.locator("a.trace-link").first.click()
    page.wait_for_url(f"{base}/v1/dashboard/traces/*")
    trace_id = page.url.rsplit("/", 1)[1]
    assert trace_id in world["traces"].values()
    spans = page.locator("#waterfall tr.span-row")
    assert spans.count() == 5
    names = [n.strip(" ·\n") for n in spans.locator("th a").all_inner_texts()]
    assert names == ["POST /chat", "chat", "tool search_flights", "load profile", "chat"]
    critical = [spans.nth(i).get_attribute("class") == "span-row critical" for i in range(5)]
    assert critical == [True, True, True, False, True]
    assert spans.nth(2).locator("td").nth(1).inner_text() == "83.3%"  # 3000 of 3600 ms
    assert page.locator("svg.bar").count() == 5
    page.screenshot(path=str(artifacts_dir() / "dashboard-trace.png"), full_page=True)

    # Its session: scorecard and timeline, the telemetry's markup shown as text.
    page.locator("nav a[href*='/sessions/']").first.click()
    page.wait_for_url(f"{base}/v1/dashboard/sessions/*")
    heading = page.get_by_role("heading", level=1).inner_text()
    assert heading.startswith("Session ")
    session_id = heading.removeprefix("Session ")
    assert world["traces"][session_id] == trace_id
    terms, values = page.locator(".scorecard dt").all_inner_texts(), page.locator(".scorecard dd").all_inner_texts()
    facts = dict(zip(terms, values, strict=True))
    # 100 x mean(success: 1 of 2 traces (the feedback is its own), tools: 0 of 1, latency: 4 of 6 calls not over
    # 2000 ms (the root's 3600 ms and the tool's 3000 ms are), satisfaction: 0) = 29.2
    assert facts["Score"] == "29.2"
    assert facts["User signals"] == "1 (1 negative)"
    assert facts["Tokens in · out"] == "200 · 40"
    assert page.locator("#timeline tr.timeline-row").count() == 6
    assert page.locator("#timeline tr.timeline-row.user_signal").count() == 1
    page.screenshot(path=str(artifacts_dir() / "dashboard-session.png"), full_page=True)

    # Sessions, worst score first: the four unhappy ones lead.
    page.goto(f"{base}/v1/dashboard/sessions")
    scores = [float(s) for s in page.locator("#sessions tr.session-row td.num:nth-of-type(1)").all_inner_texts()]
    assert len(scores) == FAILING + HEALTHY and scores == sorted(scores) and scores[-1] == 100.0
    page.screenshot(path=str(artifacts_dir() / "dashboard-sessions.png"), full_page=True)

    assert seen["dialogs"] == [] and page.evaluate("window.__pwned === undefined")
    assert all(url.startswith(base) for url in seen["requests"]), [
        u for u in seen["requests"] if not u.startswith(base)
    ]
    assert not [m for m in seen["console"] if "Content Security Policy" in m], seen["console"]
    context.close()


def test_trace_page_fits_a_phone(browser, server, world):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(world["signup"]["dashboard_url"])
    page.wait_for_url(f"{server.http_url}/v1/dashboard")
    trace_id = world["traces"]["sess-1"]
    page.goto(f"{server.http_url}/v1/dashboard/traces/{trace_id}")
    assert page.get_by_role("heading", level=1).inner_text() == f"Trace {trace_id}"
    assert page.locator("#waterfall tr.span-row").count() == 5
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(artifacts_dir() / "dashboard-trace-phone.png"), full_page=True)
    context.close()
