"""GET /v1/sessions, /v1/sessions/{id}, /v1/traces/{id}: scorecards, sorting, span trees, bounds and bad input.

Spans go through the real OpenTelemetry SDK and its OTLP/HTTP exporter, with explicit start and end times so
that every duration, share and score below is exact.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest
from conftest import Project, make_settings, new_project
from openapi_schema_validator import OAS31Validator
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from loopkit_core.server import Running, in_thread

MS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One LoopKit for the module; each test uses its own project."""
    with in_thread(make_settings(tmp_path_factory.mktemp("journeys") / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with httpx.Client(base_url=server.http_url, timeout=120) as c:
        yield c


class Spans:
    """A private tracer whose finished spans are sent in one export by the real OTLP/HTTP exporter."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("loopkit.tests.journeys")

    def span(self, name: str, start_ms: float, end_ms: float, parent=None, error: bool = False, **attributes):
        """A finished span from start_ms to end_ms after T0 (a child of `parent` when given)."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(name, context=context, start_time=T0 + int(start_ms * MS), attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "timed out after 30s"))
        span.end(end_time=T0 + int(end_ms * MS))
        return span

    def send(self, server: Running, project: Project) -> None:
        """Export every finished span through the real exporter, and wait until the server has them."""
        exporter = OTLPSpanExporter(
            endpoint=f"{server.http_url}/v1/traces", headers=project.auth("producer"), timeout=30
        )
        assert exporter.export(self.memory.get_finished_spans()) == SpanExportResult.SUCCESS
        exporter.shutdown()
        self.provider.shutdown()


T0 = (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000  # ten minutes ago, on a whole second


def trace_id_of(span) -> str:
    """The 32-hex trace ID of an SDK span."""
    return format(span.get_span_context().trace_id, "032x")


@pytest.fixture(scope="module")
def scenario(server: Running, client: httpx.Client) -> dict:
    """Two sessions: `sess-a` (a failed tool call, a thumbs-down) and `sess-b` (all fine, a thumbs-up)."""
    project = new_project(server, "journeys")
    s = Spans()
    genai = "gen_ai.operation.name"
    root_a = s.span("POST /chat", 0, 1000, **{"session.id": "sess-a", "user.id": "u1", "http.route": "/chat"})
    s.span("chat", 0, 200, root_a, **{genai: "chat", "gen_ai.usage.input_tokens": 100,
                                          "gen_ai.usage.output_tokens": 20, "session.id": "sess-a"})  # fmt: skip
    s.span("tool search_flights", 200, 900, root_a, error=True,
           **{genai: "execute_tool", "gen_ai.tool.name": "search_flights", "session.id": "sess-a"})  # fmt: skip
    s.span("fetch profile", 250, 400, root_a, **{"session.id": "sess-a"})
    s.span("chat", 900, 1000, root_a, **{genai: "chat", "gen_ai.usage.input_tokens": 50,
                                             "gen_ai.usage.output_tokens": 10, "session.id": "sess-a",
                                             "gen_ai.usage.cached_tokens": "x"})  # fmt: skip
    s.span("POST /feedback", 1100, 1101, **{"loopkit.signal": "user_signal", "feedback": "thumbs_down",
                                            "session.id": "sess-a", "user.id": "u1"})  # fmt: skip
    root_b = s.span("POST /chat", 2000, 2300, **{"session.id": "sess-b", "user.id": "u2"})
    s.span("chat", 2000, 2100, root_b, **{genai: "chat", "gen_ai.usage.input_tokens": 10,
                                          "gen_ai.usage.output_tokens": 5, "session.id": "sess-b"})  # fmt: skip
    s.span("tool get_weather", 2100, 2250, root_b,
           **{genai: "execute_tool", "gen_ai.tool.name": "get_weather", "session.id": "sess-b"})  # fmt: skip
    s.span("POST /feedback", 2400, 2401, **{"loopkit.signal": "user_signal", "score": 1, "session.id": "sess-b",
                                            "user.id": "u2"})  # fmt: skip
    s.send(server, project)
    # A signal with neither trace nor session (the records shape): stored, in no session.
    posted = client.post(
        "/v1/traces",
        json={
            "records": [
                {
                    "type": "user_signal",
                    "name": "rating",
                    "attributes": {"feedback": "thumbs_down"},
                    "timestamp": T0 + 3000 * MS,
                }
            ]
        },  # fmt: skip
        headers=project.auth("producer"),
    )
    assert posted.status_code == 200 and posted.json()["accepted"] == 1
    return {"project": project, "trace_a": trace_id_of(root_a), "trace_b": trace_id_of(root_b)}


def get(client: httpx.Client, project: Project, path: str, **params) -> httpx.Response:
    """GET with the project's agent key."""
    return client.get(path, params=params, headers=project.auth("agent"))


def test_sessions_list_scorecards(client, scenario) -> None:
    project = scenario["project"]
    response = get(client, project, "/v1/sessions", since_minutes=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["complete"] is True and body["sessions_considered"] == 2 and body["sort"] == "-start"
    assert [s["session_id"] for s in body["sessions"]] == ["sess-b", "sess-a"]
    b, a = body["sessions"]
    assert a["records"] == 6 and a["traces"] == 2 and a["failures"] == 1
    assert a["user_signals"] == 1 and a["negative_signals"] == 1
    assert a["users"] == ["u1"] and a["services"] == ["agent"]
    assert a["duration_ms"] == 1101.0
    assert a["scorecard"] == {
        "score": 37.5,  # 100 x mean(success 0.5, tool health 0, latency 1, satisfaction 0)
        "success": 0.5,
        "tool_health": 0.0,
        "latency": 1.0,
        "satisfaction": 0.0,
        "slow_calls": 0,
        "slowest_ms": 1000.0,
        "tool_calls": 1,
        "tool_failures": 1,
        "genai": {"steps": 2, "tool_calls": 1, "input_tokens": 150, "output_tokens": 30},
    }
    assert b["records"] == 4 and b["failures"] == 0 and b["negative_signals"] == 0 and b["user_signals"] == 1
    assert b["scorecard"]["score"] == 100.0 and b["scorecard"]["satisfaction"] == 1.0
    assert b["scorecard"]["genai"] == {"steps": 1, "tool_calls": 1, "input_tokens": 10, "output_tokens": 5}


def test_sessions_sorted_by_score_and_slow_threshold(client, scenario) -> None:
    project = scenario["project"]
    worst_first = get(client, project, "/v1/sessions", sort="score").json()["sessions"]
    assert [s["session_id"] for s in worst_first] == ["sess-a", "sess-b"]
    best_first = get(client, project, "/v1/sessions", sort="-score").json()["sessions"]
    assert [s["session_id"] for s in best_first] == ["sess-b", "sess-a"]
    one = get(client, project, "/v1/sessions", sort="score", limit=1).json()
    assert [s["session_id"] for s in one["sessions"]] == ["sess-a"] and one["sessions_considered"] == 2
    slow = get(client, project, "/v1/sessions", slow_ms=500).json()["sessions"]
    a = next(s for s in slow if s["session_id"] == "sess-a")
    # 1000 ms and 700 ms of 6 timed records are over 500 ms: latency 4/6.
    assert a["scorecard"]["slow_calls"] == 2 and a["scorecard"]["latency"] == 0.6667
    assert a["scorecard"]["score"] == 29.2


def test_sessions_window_excludes_older_sessions(client, scenario) -> None:
    project = scenario["project"]
    until = T0 + 2000 * MS  # sess-b starts at 2000 ms: outside [until - 1 min, until)
    body = get(client, project, "/v1/sessions", until=str(until), since_minutes=1).json()
    assert [s["session_id"] for s in body["sessions"]] == ["sess-a"]


def test_session_records_in_time_order(client, scenario) -> None:
    project = scenario["project"]
    body = get(client, project, "/v1/sessions/sess-a").json()
    assert body["records_total"] == 6 and body["truncated"] is False
    times = [r["timestamp_unix_nano"] for r in body["records"]]
    assert times == sorted(times) and len(times) == 6
    assert [r["name"] for r in body["records"]][:2] == ["POST /chat", "chat"]
    assert body["records"][-1]["type"] == "user_signal"
    assert body["traces"] == sorted({scenario["trace_a"], body["records"][-1]["trace_id"]})
    assert body["session"]["scorecard"]["score"] == 37.5
    cut = get(client, project, "/v1/sessions/sess-a", limit=2).json()
    assert len(cut["records"]) == 2 and cut["records_total"] == 6 and cut["truncated"] is True


def test_trace_tree_critical_path_and_shares(client, scenario) -> None:
    project = scenario["project"]
    body = get(client, project, f"/v1/traces/{scenario['trace_a'].upper()}").json()
    assert body["trace_id"] == scenario["trace_a"]
    assert body["spans_total"] == 5 and body["spans_returned"] == 5 and body["truncated"] is False
    assert body["roots"] == 1 and body["duration_ms"] == 1000.0 and body["sessions"] == ["sess-a"]
    rows = [(s["name"], s["depth"], s["share_of_root"], s["critical"], s["offset_ms"]) for s in body["spans"]]
    assert rows == [
        ("POST /chat", 0, 1.0, True, 0.0),
        ("chat", 1, 0.2, True, 0.0),
        ("tool search_flights", 1, 0.7, True, 200.0),
        ("fetch profile", 1, 0.15, False, 250.0),  # runs beside the tool call: not what the root waited for
        ("chat", 1, 0.1, True, 900.0),
    ]
    assert body["spans"][0]["children"] == 4 and body["spans"][2]["type"] == "tool_failure"
    by_id = {s["record_id"]: s["name"] for s in body["spans"]}
    assert [by_id[r] for r in body["critical_path"]] == ["POST /chat", "chat", "tool search_flights", "chat"]
    assert body["root"] == body["spans"][0]["record_id"]


def test_unknown_and_malformed_ids_are_404(client, server, scenario) -> None:
    project = scenario["project"]
    for path in ("/v1/sessions/nope", "/v1/sessions/a%00b", f"/v1/sessions/{'x' * 1300}",
                 "/v1/traces/" + "ab" * 16, "/v1/traces/xyz", "/v1/traces/" + "0" * 33):  # fmt: skip
        response = get(client, project, path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["ok"] is False
    other = new_project(server, "other")
    assert get(client, other, f"/v1/traces/{scenario['trace_a']}").status_code == 404
    assert get(client, other, "/v1/sessions/sess-a").status_code == 404
    assert get(client, other, "/v1/sessions").json()["sessions"] == []


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/sessions", {"limit": "0"}, "limit must be an integer from 1 to 200"),
        ("/v1/sessions", {"limit": "201"}, "limit must be an integer from 1 to 200"),
        ("/v1/sessions", {"limit": "٥"}, "limit must be an integer"),
        (
            "/v1/sessions",
            {"sort": "name"},
            "sort must be one of -start, start, score, -score, -failures, -records, -negative_signals",
        ),  # fmt: skip
        ("/v1/sessions", {"slow_ms": "0"}, "slow_ms must be greater than 0 and at most 3600000"),
        ("/v1/sessions", {"slow_ms": "nan"}, "slow_ms must be a finite number"),
        ("/v1/sessions", {"slow_ms": ""}, "slow_ms must be a number"),  # an empty value is not the default
        ("/v1/sessions", {"since_minutes": ""}, "since_minutes must be a number"),
        (
            "/v1/sessions",
            {"sort": ""},
            "sort must be one of -start, start, score, -score, -failures, -records, -negative_signals",
        ),  # fmt: skip
        ("/v1/sessions", {"since_minutes": "0"}, "since_minutes must be greater than 0 and at most 5270400"),
        (
            "/v1/sessions",
            {"session": "x"},
            "unknown parameter(s) session; allowed: limit, since_minutes, slow_ms, sort, until",
        ),  # fmt: skip
        ("/v1/sessions/sess-a", {"limit": "1001"}, "limit must be an integer from 1 to 1000"),
        ("/v1/sessions/sess-a", {"cursor": "x"}, "unknown parameter(s) cursor; allowed: limit"),
        ("/v1/traces/" + "ab" * 16, {"limit": "10001"}, "limit must be an integer from 1 to 10000"),
    ],
)
def test_bad_parameters_are_400(client, scenario, path, params, reason) -> None:
    response = client.get(path, params=params, headers=scenario["project"].auth("agent"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == reason


def test_scopes(client, scenario) -> None:
    project = scenario["project"]
    for path in ("/v1/sessions", "/v1/sessions/sess-a", f"/v1/traces/{scenario['trace_a']}"):
        assert client.get(path, headers=project.auth("producer")).status_code == 403
        assert client.get(path).status_code == 401
        assert client.get(path, headers=project.auth("dashboard")).status_code == 403  # as /v1/telemetry: agents read


def big_trace(trace_id: bytes, spans: int, first: int) -> bytes:
    """An OTLP protobuf request with spans `first`..`first + spans - 1` of one trace: a root and its children."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for i in range(first, first + spans):
        span = scope_spans.spans.add()
        span.trace_id = trace_id
        span.span_id = (i + 1).to_bytes(8, "big")
        if i:
            span.parent_span_id = (1).to_bytes(8, "big")
        span.name = "root" if i == 0 else f"step {i % 50}"
        span.start_time_unix_nano = T0 + i * 1000
        span.end_time_unix_nano = T0 + (10**9 if i == 0 else i * 1000 + 500)
    return request.SerializeToString()


def test_hundred_thousand_span_trace_is_bounded(client, server) -> None:
    project = new_project(server, "big trace")
    trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    for first in range(0, 100_000, 20_000):
        response = client.post(
            "/v1/traces",
            content=big_trace(trace_id, 20_000, first),
            headers={**project.auth("producer"), "content-type": "application/x-protobuf"},
        )
        assert response.status_code == 200, response.text
    tracemalloc.start()
    try:
        response = get(client, project, f"/v1/traces/{trace_id.hex()}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    body = response.json()
    assert body["spans_total"] == 100_000 and body["spans_returned"] == 10_000 and body["truncated"] is True
    assert body["spans"][0]["name"] == "root" and body["spans"][0]["children"] == 9_999
    assert all(s["depth"] == 1 for s in body["spans"][1:])
    # Measured: about 20 MiB of Python allocations (server and client in this process) for the 10,000-span answer;
    # only the first 10,000 spans by start time are ever read from the database.
    assert peak < 64 * 2**20, peak
    page = client.get(f"/v1/dashboard/traces/{trace_id.hex()}", headers=project.auth("dashboard"))
    assert page.status_code == 200
    assert "This trace has 100000 spans; the page draws the earliest 2000." in page.text
    assert page.text.count('class="span-row') == 2000
    small = get(client, project, f"/v1/traces/{trace_id.hex()}", limit=10).json()
    assert small["spans_returned"] == 10 and len(small["spans"]) == 10 and small["truncated"] is True


def test_answers_match_the_openapi_schemas(client, scenario) -> None:
    spec = client.get("/openapi.json").json()

    def check(name: str, body: dict) -> None:
        OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]}).validate(body)

    project = scenario["project"]
    check("SessionsPage", get(client, project, "/v1/sessions").json())
    check("SessionResponse", get(client, project, "/v1/sessions/sess-a").json())
    check("TraceResponse", get(client, project, f"/v1/traces/{scenario['trace_a']}").json())
    dash = {**project.auth("dashboard"), "accept": "application/json"}
    issues = client.get("/v1/dashboard/issues", headers=dash)
    assert issues.status_code == 200
    check("DashboardIssues", issues.json())
