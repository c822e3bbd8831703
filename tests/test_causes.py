"""Root causes across traces, with the real OpenTelemetry SDK and OTLP/HTTP exporter against the real server.

A fault shows up in every caller up the trace: the issues stay separate (each with its own exact count), are
linked caller -> callee, and the deepest one is the probable cause of one group, which the handoffs present as one
task.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from conftest import Project
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from loopkit_core import overlap
from loopkit_core.server import Running

MINUTE_NS = 60 * 10**9


def provider_for(server: Running, project: Project, service: str = "shop") -> TracerProvider:
    """A TracerProvider exporting to the server over OTLP/HTTP protobuf with the producer key."""
    exporter = OTLPSpanExporter(endpoint=f"{server.http_url}/v1/traces", headers=project.auth(), timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.4.0"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=256, schedule_delay_millis=50))
    return provider


def checkout_traffic(provider: TracerProvider, failing: int = 20, passing: int = 30) -> None:
    """Checkouts whose payment tool times out in `failing` of them: the tool span and the route span both fail."""
    tracer = provider.get_tracer("shop.checkout")
    for n in range(failing + passing):
        fails = n < failing
        try:
            with tracer.start_as_current_span(
                "POST /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}
            ):
                with tracer.start_as_current_span(
                    "execute_tool charge_card",
                    attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "charge_card"},
                ) as tool:
                    if fails:
                        tool.set_status(Status(StatusCode.ERROR, "payment tool timed out after 30s"))
                if fails:
                    raise RuntimeError("checkout failed: payment unavailable")
        except RuntimeError:
            pass
    provider.force_flush()


def diagnose(client: httpx.Client, project: Project, **body: object) -> dict:
    answer = client.post("/v1/runs/diagnose", json={"since_minutes": 60, **body}, headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return answer.json()["packet"]


def handoff(client: httpx.Client, project: Project, packet_id: str, fmt: str) -> str:
    answer = client.get(f"/v1/packets/{packet_id}/handoff?format={fmt}", headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    return answer.text


def test_a_tool_timeout_under_a_checkout_is_one_cause_with_a_linked_symptom(
    server: Running, project: Project, client: httpx.Client
) -> None:
    checkout_traffic(provider_for(server, project))
    packet = diagnose(client, project)
    by_type = {i["signal_type"]: i for i in packet["issues"]}
    assert sorted(by_type) == ["error", "tool_failure"]
    tool, route = by_type["tool_failure"], by_type["error"]
    # Each issue keeps its own exact count and selector.
    assert (tool["count"], route["count"]) == (20, 20)
    assert tool["stats"]["operation"] == "charge_card" and route["stats"]["operation"] == "/checkout"
    # Linked both ways, over the same 20 traces, caller -> callee.
    assert [(r["issue_id"], r["shared_traces"], r["role"]) for r in route["related"]] == [
        (tool["issue_id"], 20, "callee")
    ]
    assert [(r["issue_id"], r["shared_traces"], r["role"]) for r in tool["related"]] == [
        (route["issue_id"], 20, "caller")
    ]
    assert re.fullmatch("[0-9a-f]{32}", route["related"][0]["example_trace_id"])
    # The tool (the deepest failing span) is the probable cause; the route is its symptom.
    assert (tool["probable_cause"], tool["cause_issue_id"], tool["symptoms"]) == (True, None, [route["issue_id"]])
    assert (route["probable_cause"], route["cause_issue_id"], route["symptoms"]) == (False, tool["issue_id"], [])
    assert packet["groups"] == [
        {
            "cause_issue_id": tool["issue_id"],
            "issue_ids": [tool["issue_id"], route["issue_id"]],
            "symptom_issue_ids": [route["issue_id"]],
            "shared_traces": 20,
        }
    ]
    # The handoffs present one task for the one cause, and still name both issues.
    prompt = handoff(client, project, packet["packet_id"], "prompt")
    assert [line.split(":")[0] for line in prompt.splitlines() if line.startswith("TASK")] == ["TASK 1"]
    assert "TASK 1: probable cause" in prompt
    assert f"Symptom 1.1 (issue {route['issue_id']})" in prompt
    markdown = handoff(client, project, packet["packet_id"], "markdown")
    assert "**Summary:** 1 task (2 issues) in this window:" in markdown
    assert [line for line in markdown.splitlines() if line.startswith(("## Task", "## 1", "## 2"))] == [
        f"## Task 1. Probable cause: {tool_title(tool)}"
    ]
    assert f"### Symptom 1.1: {tool_title(route)}" in markdown


def tool_title(issue: dict) -> str:
    """How the Markdown shows an issue title: a code span."""
    return f"`{issue['title']}`"


def test_a_slow_query_under_a_slow_route_is_one_cause(server: Running, project: Project, client: httpx.Client) -> None:
    provider = provider_for(server, project, service="orders")
    tracer = provider.get_tracer("orders.api")
    now = time.time_ns()
    # 120 calls in the window's first half (the baseline the detector falls back to), 40 slow ones in its second.
    durations: dict[str, list[float]] = {"GET /orders": [], "SELECT orders": []}
    for n in range(160):
        slow = n >= 120
        start = now - 55 * MINUTE_NS + n * 10 * 10**9 if not slow else now - 25 * MINUTE_NS + (n - 120) * 30 * 10**9
        query_ms = (200 + n % 7) if slow else (10 + n % 40 / 10)
        durations["SELECT orders"].append(query_ms)
        durations["GET /orders"].append(query_ms + 3)
        route = tracer.start_span("GET /orders", kind=SpanKind.SERVER, start_time=start)
        route.set_attribute("http.route", "/orders")
        with otel_trace.use_span(route, end_on_exit=False):
            query = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, start_time=start + 10**6)
            query.set_attribute("db.system", "postgresql")
            query.end(end_time=start + 10**6 + int(query_ms * 10**6))
        route.end(end_time=start + int((query_ms + 3) * 10**6))
    provider.force_flush()
    packet = diagnose(client, project)
    by_name = {i["stats"]["operation"]: i for i in packet["issues"]}
    assert sorted(by_name) == ["GET /orders", "SELECT orders"]
    route, query = by_name["GET /orders"], by_name["SELECT orders"]
    # Each keeps its exact count: the window's calls at or over its own threshold (the 40 slow ones and the
    # few baseline calls at the baseline's p95), and the two sets are the same calls, so the same traces.
    thresholds = {name: issue["stats"]["threshold_ms"] for name, issue in by_name.items()}
    expected = {name: sum(1 for d in values if d >= thresholds[name]) for name, values in durations.items()}
    assert (route["count"], query["count"]) == (expected["GET /orders"], expected["SELECT orders"])
    assert 40 < query["count"] < 50
    assert [(r["issue_id"], r["shared_traces"], r["role"]) for r in route["related"]] == [
        (query["issue_id"], query["count"], "callee")
    ]
    assert (query["probable_cause"], query["symptoms"]) == (True, [route["issue_id"]])
    assert route["cause_issue_id"] == query["issue_id"]
    assert [g["cause_issue_id"] for g in packet["groups"]] == [query["issue_id"]]
    prompt = handoff(client, project, packet["packet_id"], "prompt")
    assert [line.split(":")[0] for line in prompt.splitlines() if line.startswith("TASK")] == ["TASK 1"]
    # The dashboard shows the link and the eval's expectation as text, never as a Python dict.
    page = client.get(f"/v1/dashboard/packets/{packet['packet_id']}", headers=project.auth("dashboard")).text
    assert "probable cause of 1 symptom" in page and f"symptom of {query['issue_id']}" in page
    assert "{&#39;" not in page and "{'" not in page
    assert "answers like its baseline again: p95 over at least 100 calls at most" in page


def test_unrelated_issues_stay_separate_groups(server: Running, project: Project, client: httpx.Client) -> None:
    provider = provider_for(server, project)
    tracer = provider.get_tracer("shop")
    for n in range(10):
        for name in ("GET /a", "GET /b"):
            try:
                with tracer.start_as_current_span(name, kind=SpanKind.SERVER, attributes={"http.route": name[4:]}):
                    raise ValueError(f"bad input {n}")
            except ValueError:
                pass
    provider.force_flush()
    packet = diagnose(client, project)
    assert len(packet["issues"]) == 2
    assert all(i["related"] == [] and not i["probable_cause"] and i["symptoms"] == [] for i in packet["issues"])
    assert [g["issue_ids"] for g in packet["groups"]] == [[i["issue_id"]] for i in packet["issues"]]
    prompt = handoff(client, project, packet["packet_id"], "prompt")
    assert [line.split(":")[0] for line in prompt.splitlines() if line.startswith("TASK")] == ["TASK 1", "TASK 2"]


def test_a_too_short_baseline_gives_a_reason_and_what_more_data_would_decide(
    server: Running, project: Project, client: httpx.Client
) -> None:
    provider = provider_for(server, project, service="orders")
    tracer = provider.get_tracer("orders.api")
    now = time.time_ns()
    # 40 calls over the last 40 minutes, nothing before: 20 in the window's first half (100 needed).
    for n in range(40):
        start = now - 40 * MINUTE_NS + n * MINUTE_NS + MINUTE_NS // 2
        span = tracer.start_span("GET /orders", kind=SpanKind.SERVER, start_time=start)
        span.end(end_time=start + 20 * 10**6)
    provider.force_flush()
    packet = diagnose(client, project)
    assert packet["status"] == "observe_more" and packet["issues"] == []
    assert packet["diagnoser_notes"] == [
        {
            "diagnoser": "latency_outliers",
            "where": "GET /orders",
            "reason": "not judged: 0 baseline call(s) in the 360 min before the window and 10 in the window's "
            "first half, 100 needed",
            "needs": "100 more call(s) of `GET /orders` in the 360 min before the window, or 100 in the window's "
            "first half",
        },
        {
            "diagnoser": "signature_clusterer",
            "where": None,
            "reason": "no error or tool failure record in the window",
            "needs": None,
        },
    ]
    assert packet["observe_more"] == {
        "reason": "3 diagnoser(s) ran (latency_outliers, signature_clusterer, user_signals); none raised an issue. "
        "2 note(s) say why.",
        "needs": [
            "100 more call(s) of `GET /orders` in the 360 min before the window, or 100 in the window's first half"
        ],
    }
    for fmt in ("markdown", "prompt"):
        text = handoff(client, project, packet["packet_id"], fmt)
        assert "0 baseline call(s) in the 360 min before the window and 10 in the window's first half" in text
    page = client.get(f"/v1/dashboard/packets/{packet['packet_id']}", headers=project.auth("dashboard")).text
    assert "0 baseline call(s) in the 360 min before the window and 10 in the window&#39;s first half" in page


def test_a_keyerror_on_a_constant_key_keeps_the_key_and_the_span_name_in_the_title(
    server: Running, project: Project, client: httpx.Client
) -> None:
    provider = provider_for(server, project)
    tracer = provider.get_tracer("shop.products")
    for n in range(28):
        try:
            with tracer.start_as_current_span(
                "GET /products/{id}",
                kind=SpanKind.SERVER,
                attributes={"http.route": "/products/{id}", "product.id": f"p-{n % 8}"},
            ):
                raise KeyError("price")
        except KeyError:
            pass
    # A second fault whose quoted value varies stays masked.
    for n in range(12):
        try:
            with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={"http.route": "/cart"}):
                raise KeyError(f"item-{n}-x")
        except KeyError:
            pass
    provider.force_flush()
    packet = diagnose(client, project)
    titles = {i["stats"]["operation"]: i for i in packet["issues"]}
    products, cart = titles["/products/{id}"], titles["/cart"]
    assert products["count"] == 28 and products["title"] == "KeyError on GET /products/{id}: 'price'"
    assert products["template"] == "<QUOTED>"  # the signature (and so the issue's identity) is unchanged
    assert products["stats"]["constant_slots"] == [{"slot": "<QUOTED>", "position": 0, "values": {"'price'": 28}}]
    assert "Every one of them has `'price'` where the template has `<QUOTED>`." in products["patch_plan"][0]["text"]
    # The failure eval names the exact exception and the message it must no longer produce.
    assert (products["eval"]["input"]["exception_type"], products["eval"]["input"]["message_template"]) == (
        "KeyError",
        "'price'",
    )
    assert cart["count"] == 12 and cart["title"] == "KeyError on GET /cart: <QUOTED>"
    assert cart["stats"]["constant_slots"] == []


def test_a_failure_concentrated_on_one_attribute_value_names_it_with_both_shares(
    server: Running, project: Project, client: httpx.Client
) -> None:
    provider = provider_for(server, project)
    tracer = provider.get_tracer("shop.payments")
    # 20 failed charges, all with 3-D Secure; 60 good ones, 10 of them with 3-D Secure.
    for n in range(80):
        fails, three_ds = n < 20, n < 30
        with tracer.start_as_current_span(
            "execute_tool charge_card",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "charge_card",
                "payment.card_3ds": three_ds,
                "payment.provider": "acme",
                "order.id": f"o-{n}",
            },
        ) as span:
            if fails:
                span.set_status(Status(StatusCode.ERROR, "card declined by issuer"))
    provider.force_flush()
    packet = diagnose(client, project)
    [issue] = packet["issues"]
    assert issue["count"] == 20
    telling = issue["stats"]["telling_attributes"]
    assert [(t["key"], t["value"]) for t in telling] == [("payment.card_3ds", "true")]
    [found] = telling
    assert (found["issue_records"], found["issue_sampled"], found["issue_share"]) == (20, 20, 1.0)
    assert (found["other_calls"], found["other_sampled"], found["other_share"]) == (10, 60, 0.1667)
    assert found["baseline_share"] is None and found["baseline_sampled"] == 0
    # The same p-value as the textbook one-sided Fisher test of [[20, 0], [10, 50]].
    from scipy.stats import fisher_exact

    assert issue["eval"]["input"]["telling_attributes"] == {"payment.card_3ds": "true"}
    assert found["p_value"] == float(f"{fisher_exact([[20, 0], [10, 50]], alternative='greater').pvalue:.3g}")
    assert (
        "payment.card_3ds = `true` is on 20 of 20 of these records (100%) but on 10 of 60 other calls"
        in (issue["patch_plan"][0]["text"])
    )
    where = next(s for s in issue["patch_plan"] if s["kind"] == "where_to_look")
    assert where["text"].endswith(
        "Compare the calls with payment.card_3ds = `true` (100% of this issue's records, 17% of the other calls) "
        "with those without it."
    )
    for fmt in ("markdown", "prompt"):
        assert "payment.card_3ds = `true` is on 20 of 20" in handoff(client, project, packet["packet_id"], fmt)


def test_few_product_ids_behind_a_failure_are_listed(server: Running, project: Project, client: httpx.Client) -> None:
    provider = provider_for(server, project)
    tracer = provider.get_tracer("shop.products")
    for n in range(28):
        try:
            with tracer.start_as_current_span(
                "GET /products/{id}", kind=SpanKind.SERVER, attributes={"product.id": f"p-{n % 8}"}
            ):
                raise KeyError("price")
        except KeyError:
            pass
    provider.force_flush()
    [issue] = diagnose(client, project)["issues"]
    assert len(issue["stats"]["identifiers"]) == 1, issue["stats"]["identifiers"]
    [ids] = issue["stats"]["identifiers"]
    assert (ids["key"], ids["records"], len(ids["values"])) == ("product.id", 28, 8)
    assert ids["counts"] == {"p-0": 4, "p-1": 4, "p-2": 4, "p-3": 4, "p-4": 3, "p-5": 3, "p-6": 3, "p-7": 3}
    assert "the 28 sampled records come from only 8 product.id value(s)" in issue["patch_plan"][0]["text"]


def test_a_regressed_handoff_says_so_and_links_the_earlier_packet(
    server: Running, project: Project, client: httpx.Client
) -> None:
    def checkouts(version: str, failing: int, passing: int) -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": "shop", "service.version": version}))
        exporter = OTLPSpanExporter(endpoint=f"{server.http_url}/v1/traces", headers=project.auth(), timeout=10)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        checkout_traffic(provider, failing=failing, passing=passing)
        provider.shutdown()

    checkouts("1.4.0", failing=10, passing=10)
    first = diagnose(client, project)
    tool = next(i for i in first["issues"] if i["signal_type"] == "tool_failure")
    assert tool["regression_context"] is None
    approved = client.post(
        f"/v1/packets/{first['packet_id']}/approve", json={"note": "fix it"}, headers=project.auth("dashboard")
    )
    assert approved.status_code == 200, approved.text
    time.sleep(0.01)
    checkouts("1.4.1", failing=0, passing=40)
    verified = client.post("/v1/runs/verify", json={"packet_id": first["packet_id"]}, headers=project.auth("agent"))
    assert verified.status_code == 200, verified.text
    verification = verified.json()["verification"]
    held = {v["issue_id"]: v["verdict"] for v in verification["verdicts"]}
    assert held[tool["issue_id"]] == "held"
    time.sleep(0.01)
    checkouts("1.4.2", failing=3, passing=0)
    again = diagnose(client, project, min_count=1)
    back = next(i for i in again["issues"] if i["issue_id"] == tool["issue_id"])
    assert back["regression"] is True and back["status"] == "regressed"
    context = back["regression_context"]
    assert context["earlier_packet_id"] == first["packet_id"]
    assert context["earlier_approval"]["state"] == "approved"
    assert context["held_verdict"]["verification_id"] == verification["verification_id"]
    assert (context["held_release"], context["release_now"]) == ("1.4.1", "1.4.2")
    assert len(context["new_evidence_ids"]) == 3
    page = client.get(f"/v1/dashboard/packets/{again['packet_id']}", headers=project.auth("dashboard")).text
    assert "<strong>Regression:</strong> REGRESSION: this issue came back after a fix that held." in page
    for fmt in ("markdown", "prompt"):
        text = handoff(client, project, again["packet_id"], fmt)
        assert "REGRESSION: this issue came back after a fix that held." in text
        assert f"Earlier packet {first['packet_id']} (approved by" in text
        assert f"verdict held in verification {verification['verification_id']}" in text
        assert "on release `1.4.1`; it recurs on release `1.4.2`" in text


def test_session_and_user_counts_are_the_issues_not_the_samples(
    server: Running, project: Project, client: httpx.Client
) -> None:
    provider = provider_for(server, project)
    tracer = provider.get_tracer("shop")
    # 30 failures from 15 sessions of 6 users: the evidence sample (10 records) sees fewer of each.
    for n in range(30):
        try:
            with tracer.start_as_current_span(
                "GET /cart",
                kind=SpanKind.SERVER,
                attributes={"http.route": "/cart", "session.id": f"s-{n % 15}", "user.id": f"u-{n % 6}"},
            ):
                raise ValueError("cart is empty")
        except ValueError:
            pass
    provider.force_flush()
    [issue] = diagnose(client, project)["issues"]
    assert (issue["count"], len(issue["evidence"])) == (30, 10)
    assert (issue["stats"]["session_count"], issue["stats"]["user_count"]) == (15, 6)
    assert "(10 of 30 records; the issue's records come from 15 session(s))" in issue["next_action"]


def test_reads_at_once_make_the_same_packet_as_one_after_another(
    server: Running, project: Project, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Impact, causes and telling attributes are read at once on PostgreSQL (overlap.overlaps): the packet must be
    # the one a diagnosis reading them in turn makes, to the order of its keys, on either backend.
    provider = provider_for(server, project)
    checkout_traffic(provider)
    tracer = provider.get_tracer("shop")
    for n in range(30):
        try:
            with tracer.start_as_current_span(
                "GET /cart", attributes={"session.id": f"s-{n % 15}", "user.id": f"u-{n % 6}", "cart.size": n % 2}
            ):
                raise ValueError("cart is empty")
        except ValueError:
            pass
    provider.force_flush()
    until = time.time_ns()
    packets = []
    for at_once in (True, False):
        monkeypatch.setattr(overlap, "overlaps", lambda _window, at_once=at_once: at_once)
        packet = diagnose(client, project, until=until)
        own = ("packet_id", "created_at", "created_ns")  # each packet's own
        packets.append(json.dumps({k: v for k, v in packet.items() if k not in own}))
    assert packets[0] == packets[1]
    packet = json.loads(packets[0])
    assert len(packet["issues"]) == 3 and len(packet["groups"]) == 2  # the checkout's cause and symptom; the cart
    cart = next(i for i in packet["issues"] if i["title"].startswith("ValueError"))
    assert (cart["impact"]["sessions"], cart["impact"]["users"]) == (15, 6)
    assert cart["severity"] in ("low", "medium", "high", "critical") and cart["stats"]["session_count"] == 15
