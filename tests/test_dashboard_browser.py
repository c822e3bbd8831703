"""The dashboard in a real headless Chromium (Debian's), driven by Playwright: sign in, read, decide, sign out.

Chromium comes from `apt-get install chromium` (.ci/run does it); Playwright only drives it (no browser download).
Without Chromium or Playwright these tests skip locally, and fail when CI=true.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from loopkit_core.server import Running

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LOOPKIT_CHROMIUM", "/usr/bin/chromium")
# The flags a sandboxed, offline machine needs (no GPU, no sandbox as root, no calls home).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTE_LABEL = "Note (required: why you approve or reject)"
XSS = "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>"
TIMEOUT_MS = 15_000


def artifacts_dir() -> Path:
    """Where screenshots go: $LOOPKIT_TEST_ARTIFACTS, or tests/artifacts (git-ignored)."""
    path = Path(os.environ.get("LOOPKIT_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests need Chromium and Playwright in CI (.ci/run installs them): {reason}")
    pytest.skip(f"browser tests skipped: {reason} (install with: apt-get install chromium; pip install -e '.[test]')")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, launched by Playwright."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield launched
        launched.close()


def send_traffic(server: Running, producer_key: str) -> None:
    """A checkout service through the real OTLP/HTTP exporter: failing checkouts, a failing tool, healthy calls."""
    exporter = OTLPSpanExporter(
        endpoint=f"{server.http_url}/v1/traces", headers={"authorization": f"Bearer {producer_key}"}, timeout=10
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "service.version": "2.4.1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("loopkit.tests.dashboard")
    for i in range(6):
        with tracer.start_as_current_span(
            "POST /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout", "order.note": XSS}
        ) as span:
            span.record_exception(TimeoutError(f"payment gateway timed out after {3000 + i} ms (order {1000 + i})"))
            span.set_status(Status(StatusCode.ERROR, "gateway timeout"))
    for i in range(4):
        with tracer.start_as_current_span(
            "execute_tool search_flights",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_flights"},
        ) as span:
            span.record_exception(ConnectionError(f"flights API refused connection {i}"))
            span.set_status(Status(StatusCode.ERROR))
    for _ in range(20):
        with tracer.start_as_current_span(
            "POST /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}
        ):
            pass
    provider.shutdown()


@pytest.fixture
def world(server: Running, client: httpx.Client) -> dict[str, Any]:
    """A signed-up project with telemetry and one diagnosis packet."""
    signup = client.post("/v1/signup", json={"project_name": "browser shop"})
    assert signup.status_code == 201, signup.text
    keys = signup.json()
    send_traffic(server, keys["producer_key"])
    agent = {"authorization": f"Bearer {keys['agent_key']}"}
    ran = client.post("/v1/runs/diagnose", json={"min_count": 3}, headers=agent)
    assert ran.status_code == 200, ran.text
    packet = ran.json()["packet"]
    assert sorted(i["count"] for i in packet["issues"]) == [4, 6]
    return {"signup": keys, "packet": packet, "agent": agent}


def watch(page: Any) -> dict[str, list[str]]:
    """Collect what the page did: request URLs, dialogs (an XSS would open one), CSP complaints."""
    seen: dict[str, list[str]] = {"requests": [], "dialogs": [], "console": [], "posts": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("request", lambda r: seen["posts"].append(r.post_data or "") if r.method == "POST" else None)
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("console", lambda m: seen["console"].append(m.text) if m.type in ("error", "warning") else None)
    return seen


def test_sign_in_from_dashboard_url_read_a_packet_follow_evidence_and_approve(browser, server, client, world):
    base = server.http_url
    keys, packet = world["signup"], world["packet"]
    dash_key = keys["dashboard_key"]
    assert keys["dashboard_url"] == f"{base}/v1/dashboard#key={dash_key}"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = watch(page)

    # The signup's dashboard_url signs in by itself; the key leaves the address bar and the history.
    page.goto(keys["dashboard_url"])
    page.wait_for_url(f"{base}/v1/dashboard")
    assert page.get_by_role("heading", level=1).inner_text() == "Diagnosis packets of browser shop"
    assert dash_key not in page.url and "#" not in page.url
    assert any(dash_key in body for body in seen["posts"])  # it went to the login route, in a POST body
    assert not any(dash_key in url for url in seen["requests"])  # never in a URL a server saw
    assert page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    [cookie] = context.cookies()
    assert (cookie["name"], cookie["path"], cookie["httpOnly"], cookie["sameSite"]) == (
        "loopkit_dashboard",
        "/v1/dashboard",
        True,
        "Strict",
    )
    assert dash_key not in cookie["value"]
    for _ in range(5):  # every history entry is free of the key
        assert dash_key not in page.url
        if page.go_back() is None:
            break
    page.goto(f"{base}/v1/dashboard")

    # The packet list links the packet; its page has a chart per issue, evidence, the handoff and the form.
    page.get_by_role("link", name=packet["packet_id"]).click()
    page.wait_for_url(f"{base}/v1/dashboard/packets/{packet['packet_id']}")
    charts = page.locator("svg.chart")
    assert charts.count() == 2
    assert charts.first.get_attribute("role") == "img"
    assert page.locator("svg.chart > title").first.text_content().startswith("Occurrences over time: ")
    assert page.locator("svg.chart rect").count() >= 2
    assert page.locator("#approval-state").inner_text() == "pending"
    assert "# LoopKit diagnosis " + packet["packet_id"] in page.locator("#handoff").inner_text()
    shot = artifacts_dir() / "dashboard-packet.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot of the packet page: {shot}")

    # Follow an evidence link to the full record, then come back.
    first = page.locator("a.evidence").first
    record_id = first.inner_text()
    first.click()
    page.wait_for_url(f"{base}/v1/dashboard/records/{record_id}?packet={packet['packet_id']}")
    assert record_id in page.get_by_role("heading", level=1).inner_text()
    for heading in ("Attributes", "Resource", "Events (1)"):
        assert page.get_by_role("heading", name=heading).count() == 1, heading
    assert "service.name" in page.locator("pre").nth(1).inner_text()
    page.go_back()
    page.wait_for_url(f"{base}/v1/dashboard/packets/{packet['packet_id']}")

    # Approve with a note: the page shows the new state and the note.
    page.get_by_label(NOTE_LABEL).fill("Evidence checked: gateway timeouts. <b>ok</b>")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{base}/v1/dashboard/packets/{packet['packet_id']}#decision")
    assert page.locator("#approval-state").inner_text() == "approved"
    assert page.locator("#approval-note").inner_text() == "Evidence checked: gateway timeouts. <b>ok</b>"
    assert page.locator("#packet-status").inner_text() == "approved"
    stored = client.get(f"/v1/packets/{packet['packet_id']}", headers=world["agent"]).json()["packet"]["approval"]
    assert stored["state"] == "approved" and stored["decided_by"].startswith("dashboard key lk_dash_")
    page.screenshot(path=str(artifacts_dir() / "dashboard-packet-approved.png"), full_page=True)

    # Sign out: the session is gone.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/v1/dashboard?signed_out=1")
    assert page.get_by_role("status").inner_text() == "You are signed out."
    page.goto(f"{base}/v1/dashboard/packets/{packet['packet_id']}")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in to the LoopKit dashboard"
    assert context.cookies() == []

    assert seen["dialogs"] == []  # the <script> and onerror in the telemetry never ran
    assert page.evaluate("window.__pwned === undefined")
    assert not [m for m in seen["console"] if "Content Security Policy" in m], seen["console"]
    context.close()


def test_reject_with_the_form_and_the_agent_key_reads_but_cannot_decide(browser, server, client, world):
    base = server.http_url
    packet = world["packet"]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = watch(page)

    # Sign in through the form, starting from a packet's URL: it comes back there.
    page.goto(f"{base}/v1/dashboard/packets/{packet['packet_id']}")
    page.get_by_label("Dashboard key").fill(world["signup"]["dashboard_key"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/v1/dashboard/packets/{packet['packet_id']}")

    # A blank note is refused with a message; the decision is not recorded.
    page.get_by_label(NOTE_LABEL).fill("   ")
    page.get_by_role("button", name="Reject").click()
    assert page.locator("#form-error").inner_text() == "note is required: say why, in a few words"
    assert page.locator("#approval-state").inner_text() == "pending"

    page.get_by_label(NOTE_LABEL).fill("Not our bug: the gateway vendor's outage.")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_url(f"{base}/v1/dashboard/packets/{packet['packet_id']}#decision")
    assert page.locator("#approval-state").inner_text() == "rejected"
    assert page.locator("#approval-note").inner_text() == "Not our bug: the gateway vendor's outage."
    context.close()

    # The agent key opens the dashboard read-only: no form, and a forged POST with its session is a 403.
    agent_context = browser.new_context()
    agent_page = agent_context.new_page()
    agent_page.set_default_timeout(TIMEOUT_MS)
    agent_page.goto(f"{base}/v1/dashboard#key={world['signup']['agent_key']}")
    agent_page.wait_for_url(f"{base}/v1/dashboard")
    agent_page.goto(f"{base}/v1/dashboard/packets/{packet['packet_id']}")
    assert agent_page.locator("#decision-form").count() == 0
    assert "may read but not decide" in agent_page.locator("#decision").locator("..").inner_text()
    refused = agent_page.request.post(
        f"{base}/v1/dashboard/packets/{packet['packet_id']}/approve",
        form={"note": "an agent trying to approve itself"},
        headers={"origin": base},
    )
    assert refused.status == 403
    assert "may read the dashboard but not decide" in refused.text()
    state = client.get(f"/v1/packets/{packet['packet_id']}", headers=world["agent"]).json()["packet"]["approval"]
    assert state["state"] == "rejected" and len(state["trail"]) == 1
    agent_context.close()
    assert seen["dialogs"] == []


def test_the_packet_page_fits_a_phone(browser, server, world):
    base = server.http_url
    packet = world["packet"]
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/v1/dashboard#key={world['signup']['dashboard_key']}")
    page.wait_for_url(f"{base}/v1/dashboard")
    page.goto(f"{base}/v1/dashboard/packets/{packet['packet_id']}")
    # Nothing wider than the screen except inside the scrollable table wrappers.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.get_by_role("button", name="Approve").is_visible()
    page.screenshot(path=str(artifacts_dir() / "dashboard-packet-phone.png"), full_page=True)
    context.close()


def test_the_timeline_shows_stages_in_order_and_fits_a_phone(browser, server, client, world):
    """Stages an agent recorded show in the packet's timeline; their links are never fetched; a long one wraps."""
    base = server.http_url
    packet = world["packet"]
    dashboard = {"authorization": f"Bearer {world['signup']['dashboard_key']}"}
    path = f"/v1/packets/{packet['packet_id']}"
    assert client.post(f"{path}/approve", json={"note": "go"}, headers=dashboard).status_code == 200
    long_url = "https://github.com/acme/shop/pull/7?" + "x" * 300
    for body in (
        {"stage": "issue_opened", "url": "https://github.com/acme/shop/issues/6", "note": XSS},
        {"stage": "pr_opened", "url": long_url},
        {"stage": "merged"},
    ):
        assert client.post(f"{path}/stages", json=body, headers=world["agent"]).status_code == 201
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = watch(page)
    page.goto(f"{base}/v1/dashboard#key={world['signup']['dashboard_key']}")
    page.wait_for_url(f"{base}/v1/dashboard")
    page.goto(f"{base}/v1/dashboard/packets/{packet['packet_id']}")
    events = page.locator("#timeline > li strong").all_inner_texts()
    assert events == ["diagnosed", "approved", "issue opened", "pr opened", "merged"]
    assert page.locator("#timeline a.stage-url").nth(1).get_attribute("href") == long_url
    assert XSS in page.locator("#timeline blockquote").all_inner_texts()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    timeline = page.locator("section[aria-labelledby=timeline-h]")
    timeline.screenshot(path=str(artifacts_dir() / "dashboard-packet-timeline-phone.png"))
    assert not [url for url in seen["requests"] if "github.com" in url]  # shown, never fetched
    assert seen["dialogs"] == [] and page.evaluate("window.__pwned === undefined")
    context.close()
