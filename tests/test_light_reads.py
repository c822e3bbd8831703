"""The diagnosis's lighter reads answer exactly what the reads they replace answered (issue 19).

Spans go in through the real OpenTelemetry SDK and OTLP/HTTP exporter into the real store (SQLite, or PostgreSQL
when the run is): `Window.attribute_sample` is compared with `Window.sample`, and root causes' one member read per
issue with the per-pair reads it replaces.
"""

from __future__ import annotations

import copy
import time

import httpx
import pytest
from conftest import Project
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from loopkit_core import causes
from loopkit_core.server import Running
from loopkit_core.window import Window


def provider_for(server: Running, project: Project, version: str) -> TracerProvider:
    """A TracerProvider of service `shop` at `version`, exporting to the server over OTLP/HTTP protobuf."""
    exporter = OTLPSpanExporter(endpoint=f"{server.http_url}/v1/traces", headers=project.auth(), timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "service.version": version}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=256, schedule_delay_millis=50))
    return provider


def checkouts(provider: TracerProvider, failing: int, passing: int) -> None:
    """Checkouts whose payment tool fails in the first `failing`: attributes of every kind, events on some."""
    tracer = provider.get_tracer("shop.checkout")
    for n in range(failing + passing):
        fails = n < failing
        attributes = {"http.route": "/checkout", "cart.items": n % 4, "cart.gift": n % 2 == 0, "region": f"r{n % 3}"}
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, attributes=attributes) as route:
            with tracer.start_as_current_span(
                "execute_tool charge_card",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "charge_card"},
            ) as tool:
                if n % 3 == 0:
                    tool.add_event("retry", {"attempt": 2, "backoff.ms": 1.5, "card.id": f"c{n % 2}"})
                if fails:
                    tool.set_status(Status(StatusCode.ERROR, "payment tool timed out after 30s"))
            if fails:
                route.record_exception(RuntimeError("checkout failed: payment unavailable"))
                route.set_status(Status(StatusCode.ERROR, "checkout failed"))
    provider.force_flush()


def window_of(server: Running, project: Project) -> Window:
    now = time.time_ns()
    return Window(project.project_id, now - 10 * 60 * 10**9, now + 10**9, server.app.store.project(project.project_id))


def test_attribute_sample_reads_what_sample_reads(server: Running, project: Project, client: httpx.Client) -> None:
    checkouts(provider_for(server, project, "1.4.0"), failing=9, passing=6)
    checkouts(provider_for(server, project, "1.5.0"), failing=4, passing=5)
    window = window_of(server, project)
    route = {"name": "POST /checkout", "service": "shop"}
    cases = [
        ({"type": "error"}, None),
        ({"type": "tool_failure"}, None),
        (route, None),
        (route, {"type": "error"}),  # the route's calls that did not fail
        ({"name": "execute_tool charge_card"}, {"type": "tool_failure"}),
    ]
    for selector, exclude in cases:
        for limit in (1, 5, 13, 200):
            full = window.sample(selector, limit, exclude=exclude)
            light = window.attribute_sample(selector, limit, exclude=exclude)
            assert [(r.name, r.service, r.attributes, r.resource, r.events) for r in light] == [
                (r["name"], r["service"], r["attributes"], r["resource"], r["events"]) for r in full
            ], (selector, exclude, limit)
            assert all(r.resource_key for r in light)  # OTLP resources are stored apart, one per release
    # What the cases saw: 24 calls of each operation, 13 failed; both releases; events where they were added.
    assert len(window.attribute_sample(route, 200)) == 24
    assert len(window.attribute_sample(route, 200, exclude={"type": "error"})) == 11
    tools = window.attribute_sample({"name": "execute_tool charge_card"}, 200)
    assert sorted({r.resource["service.version"] for r in tools}) == ["1.4.0", "1.5.0"]
    assert sum(1 for r in tools if r.events) == 8  # n % 3 == 0: 5 of the first 15 checkouts, 3 of the next 9
    assert all(e["name"] == "retry" and e["attributes"]["attempt"] == 2 for r in tools for e in r.events)


@pytest.mark.parametrize(("member_rows", "tree_rows"), [(causes.MEMBER_ROWS, causes.TREE_ROWS), (0, 0)])
def test_one_member_read_per_issue_links_like_the_per_pair_reads(
    server: Running,
    project: Project,
    client: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    member_rows: int,
    tree_rows: int,
) -> None:
    checkouts(provider_for(server, project, "1.4.0"), failing=20, passing=10)
    window = window_of(server, project)
    issues = [
        {"issue_id": "iss_route", "title": "route", "selector": {"type": "error", "name": "POST /checkout"}},
        {"issue_id": "iss_tool", "title": "tool", "selector": {"type": "tool_failure"}},
    ]
    reads: list[int] = []
    members = Window.trace_members

    def counted(self: Window, selector: dict, trace_ids: list[str], limit: int = 1000) -> list:
        reads.append(limit)
        return members(self, selector, trace_ids, limit)

    trees: list[int] = []
    span_tree = Window.span_tree

    def counted_trees(self: Window, trace_ids: list[str], limit: int = 5000) -> list:
        trees.append(limit)
        return span_tree(self, trace_ids, limit)

    monkeypatch.setattr(Window, "trace_members", counted)
    monkeypatch.setattr(Window, "span_tree", counted_trees)
    monkeypatch.setattr(causes, "MEMBER_ROWS", member_rows)
    monkeypatch.setattr(causes, "TREE_ROWS", tree_rows)
    linked = copy.deepcopy(issues)
    groups = causes.link(window, linked)
    route, tool = linked
    assert [(r["issue_id"], r["shared_traces"], r["role"]) for r in route["related"]] == [("iss_tool", 20, "callee")]
    assert [(r["issue_id"], r["shared_traces"], r["role"]) for r in tool["related"]] == [("iss_route", 20, "caller")]
    assert route["related"][0]["example_trace_id"] == tool["related"][0]["example_trace_id"]
    assert groups == [
        {
            "cause_issue_id": "iss_tool",
            "issue_ids": ["iss_tool", "iss_route"],
            "symptom_issue_ids": ["iss_route"],
            "shared_traces": 20,
        }
    ]
    if member_rows:  # one read per issue, of all its pairs' shared traces
        assert reads == [member_rows + 1, member_rows + 1]
        assert trees == [tree_rows + 1]  # one read of every pair's trees
    else:  # each issue has more members than that: the one pair reads its own, as before
        assert reads == [1, 1, 1000, 1000]
        assert trees == [1, causes.TREE_LIMIT]
