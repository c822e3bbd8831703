"""The user_signals diagnoser, issue impact and trajectory deltas, with the real OpenTelemetry SDK and exporters.

Spans go through the real OTLP/HTTP (protobuf) or OTLP/gRPC exporter into a real server on loopback
ports, and the packet is read through the HTTP API. Every expected number is computed here from the
generated traffic, independently of the diagnoser's code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import httpx
import pytest
from conftest import make_settings, new_project
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from loopkit_core.feedback import NegativeRule, negative_reason
from loopkit_core.server import in_thread

MINUTE = 60 * 10**9
MS = 10**6
SERVICE = "agent-app"


@dataclass
class Traffic:
    """What was sent, to compute expectations."""

    timeout_sessions: list[str] = field(default_factory=list)
    timeout_users: list[str] = field(default_factory=list)
    timeout_span_ids: dict[str, str] = field(default_factory=dict)  # session -> its search_flights span ID (hex)
    unhappy: list[str] = field(default_factory=list)


class App:
    """A small agent app on the real SDK: POST /chat with an LLM step and two tools; feedback spans."""

    def __init__(self, server, project, transport: str = "http") -> None:
        headers = {"authorization": f"Bearer {project.producer_key}"}
        if transport == "grpc":
            exporter = GrpcSpanExporter(endpoint=server.grpc_target, insecure=True, headers=headers, timeout=10)
        else:
            exporter = HttpSpanExporter(endpoint=f"{server.http_url}/v1/traces", headers=headers, timeout=10)
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}), sampler=ALWAYS_ON)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=256))
        self.tracer = self.provider.get_tracer("tests.user_signals")
        self.n = 0

    def chat(self, t: int, *, timeout: bool, traffic: Traffic | None = None) -> tuple[str, int]:
        """One POST /chat at t; returns (session, end)."""
        self.n += 1
        session, user = f"sess-{self.n:04d}", f"user-{self.n:04d}"
        root = self.tracer.start_span(
            "POST /chat",
            kind=SpanKind.SERVER,
            start_time=t,
            attributes={"http.route": "/chat", "session.id": session, "user.id": user},
        )
        context = trace.set_span_in_context(root)
        llm = self.tracer.start_span(
            "chat gpt-4o-mini",
            context=context,
            start_time=t + MS,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 500,
                "gen_ai.usage.output_tokens": 100,
            },
        )
        llm.end(end_time=t + 401 * MS)
        tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_flights"}
        flights = self.tracer.start_span(
            "execute_tool search_flights", context=context, start_time=t + 402 * MS, attributes=tool
        )
        flights_ms = 8000 if timeout else 200 + self.n % 50
        if timeout:
            error = TimeoutError("flights-api did not answer within 8000 ms")
            flights.record_exception(error, timestamp=t + 8402 * MS)
            flights.set_status(Status(StatusCode.ERROR, f"TimeoutError: {error}"))
        flights.end(end_time=t + (402 + flights_ms) * MS)
        weather = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"}
        self.tracer.start_span(
            "execute_tool get_weather", context=context, start_time=t + 403 * MS, attributes=weather
        ).end(end_time=t + 480 * MS)
        end = t + (405 + flights_ms) * MS
        root.end(end_time=end)
        if timeout and traffic is not None:
            traffic.timeout_sessions.append(session)
            traffic.timeout_users.append(user)
            traffic.timeout_span_ids[session] = format(flights.get_span_context().span_id, "016x")
        return session, end

    def chat_rated_inside(self, t: int, score: int) -> None:
        """A chat whose user rated the answer inside the same request: a user signal span in the chat's trace."""
        root = self.tracer.start_span("POST /chat", kind=SpanKind.SERVER, start_time=t, attributes={"user.id": "u"})
        context = trace.set_span_in_context(root)
        rating = {"loopkit.signal": "user_signal", "feedback.score": score}
        self.tracer.start_span("rate answer", context=context, start_time=t + MS, attributes=rating).end(
            end_time=t + 2 * MS
        )
        root.end(end_time=t + 300 * MS)

    def feedback(self, t: int, session: str | None, **attributes) -> None:
        """A user signal (its own trace), in a session or not."""
        attributes = {"loopkit.signal": "user_signal", **attributes}
        if session is not None:
            attributes["session.id"] = session
        self.tracer.start_span("feedback", start_time=t, attributes=attributes).end(end_time=t + MS)

    def flush(self) -> None:
        """Send everything; fail the test if the SDK could not."""
        assert self.provider.force_flush(30_000)
        self.provider.shutdown()


def spread(start: int, end: int, n: int) -> list[int]:
    """n instants evenly spread over [start, end)."""
    return [start + i * (end - start) // n for i in range(n)]


def diagnose(client, project, until_ns: int, **body) -> dict:
    """POST /v1/runs/diagnose over the 10 minutes before until_ns; the packet."""
    response = client.post(
        "/v1/runs/diagnose",
        json={"since_minutes": 10, "until": until_ns, "min_count": 3, **body},
        headers=project.auth("agent"),
    )
    assert response.status_code == 200, response.text
    return response.json()["packet"]


def p_value(x: int, b: int, calls_w: int, calls_b: int) -> float:
    """The exact conditional test of two rates, computed independently: P(X >= x), X ~ Bin(x + b, share)."""
    n, p = x + b, calls_w / (calls_w + calls_b)
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(x, n + 1))


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_timeout_causing_thumbs_down_gives_one_linked_user_signal_issue(server, project, client, transport):
    """10 of 40 chats time out, 6 of those users press thumbs-down: one user-signal issue linked to the timeout."""
    now = time.time_ns()
    until = now - 5 * MINUTE  # the packet's window: [now - 15 min, now - 5 min)
    app = App(server, project, transport)
    # Baseline, 45 to 17 minutes ago: 200 healthy chats, 2 thumbs-down (1%).
    for i, t in enumerate(spread(now - 45 * MINUTE, now - 17 * MINUTE, 200)):
        session, end = app.chat(t, timeout=False)
        if i in (10, 110):
            app.feedback(end + 10 * 10**9, session, feedback="thumbs_down")
    traffic = Traffic()
    for i, t in enumerate(spread(until - 9 * MINUTE, until - MINUTE, 40)):
        session, end = app.chat(t, timeout=i % 4 == 0, traffic=traffic)  # 10 timeouts
        if i % 4 == 0 and len(traffic.unhappy) < 6:
            traffic.unhappy.append(session)
            app.feedback(end + 15 * 10**9, session, feedback="thumbs-down", **{"feedback.comment": "no flights"})
        elif i % 4 == 0:
            # Wrong-typed signal attributes: stored, never read as negative (a score as text, a label as a number).
            app.feedback(end + 15 * 10**9, session, score="-1", feedback=0, rating=True)
    # Signals with no trace context and no session: counted, linked to nothing.
    for t in spread(until - 8 * MINUTE, until - 2 * MINUTE, 3):
        app.feedback(t, None, feedback="thumbs_down")
    app.flush()

    packet = diagnose(client, project, until, diagnosers=["signature_clusterer", "user_signals"])
    by_type = {i["signal_type"]: i for i in packet["issues"]}
    assert sorted(by_type) == ["tool_failure", "user_signal"]
    signal, timeout = by_type["user_signal"], by_type["tool_failure"]
    assert timeout["count"] == 10
    stats = signal["stats"]
    assert signal["diagnoser"] == "user_signals"
    assert signal["count"] == 6 and stats["negative_signals"] == 6
    assert (stats["operation"], stats["service"], stats["calls"]) == ("POST /chat", SERVICE, 40)
    assert (stats["baseline_negative_signals"], stats["baseline_calls"]) == (2, 200)
    assert stats["baseline"]["source"] == "preceding"
    assert stats["rate"] == 0.15 and stats["baseline_rate"] == 0.01 and stats["ratio"] == 15.0
    assert stats["p_value"] == float(f"{p_value(6, 2, 40, 200):.3g}")
    assert stats["attributed"] == {"session": 6}
    assert stats["unattributed_negative_signals"] == 3
    assert stats["label"] == "thumbs_down"
    assert signal["severity"] == "critical"  # ratio 15: >= 10
    assert signal["title"] == (
        f"negative user signals on POST /chat in {SERVICE}: 6 in 40 calls (15.0%) vs 1.0% before"
    )
    first = stats["co_occurring"][0]
    assert (first["kind"], first["operation"], first["exception_type"]) == (
        "tool_failure",
        "execute_tool search_flights",
        "TimeoutError",
    )
    assert (first["sessions"], first["of"]) == (6, 6)
    assert first["text"].startswith("6 of 6 sessions with a negative signal had a `execute_tool search_flights`")
    # Evidence IDs for both: the six thumbs-down, and the six timeouts they followed.
    records = {
        r["record_id"]: r
        for r in client.get(
            "/v1/telemetry", params={"limit": 1000, "since_minutes": 60}, headers=project.auth("agent")
        ).json()["records"]
    }
    timeout_ids = {
        rid for rid, r in records.items() if r["span_id"] in {traffic.timeout_span_ids[s] for s in traffic.unhappy}
    }
    assert set(first["evidence"]) == timeout_ids and len(timeout_ids) == 6
    signal_ids = {
        rid for rid, r in records.items() if r["type"] == "user_signal" and r["session_id"] in traffic.unhappy
    }
    assert len(signal_ids) == 6 and set(signal["evidence"][:6]) == signal_ids
    assert signal["selector"] == {"record_ids": sorted(signal_ids)}
    listed = client.get(signal["records_url"], headers=project.auth("agent")).json()["records"]
    assert {r["record_id"] for r in listed} == signal_ids
    # Wrong-typed attributes were stored as sent.
    odd = [r for r in records.values() if r["type"] == "user_signal" and "score" in r["attributes"]]
    assert len(odd) == 4 and all(r["attributes"]["score"] == "-1" for r in odd)

    # Impact, both issues linked through the six signals.
    assert signal["impact"]["linked_issues"] == [
        {"issue_id": timeout["issue_id"], "title": timeout["title"], "negative_signals": 6}
    ]
    assert timeout["impact"]["linked_issues"] == [
        {"issue_id": signal["issue_id"], "title": signal["title"], "negative_signals": 6}
    ]
    assert timeout["impact"]["sessions"] == 10 and timeout["impact"]["users"] == 10
    assert timeout["impact"]["negative_signals"] == 6
    assert set(timeout["impact"]["negative_signal_ids"]) == signal_ids
    assert signal["impact"]["sessions"] == 6 and signal["impact"]["users"] == 6
    levels = ["low", "medium", "high", "critical"]
    bumped = levels[min(levels.index(timeout["severity_diagnoser"]) + 1, 3)]
    assert timeout["severity"] == bumped
    assert timeout["severity_reason"] == (
        "6 negative user signals linked" if bumped != "critical" or timeout["severity_diagnoser"] != "critical" else ""
    )
    assert packet["impact"] == {
        "sessions": 10,
        "users": 10,
        "negative_signals": 9,
        "negative_signals_linked": 6,
        "negative_signals_unattributed": 3,
        "user_signals_read": 13,
        "user_signals_truncated": False,
    }


def test_steady_thumbs_down_rate_gives_no_issue(server, project, client):
    """10% thumbs-down before and in the window: nothing to flag, the signals are still counted."""
    now = time.time_ns()
    until = now - 5 * MINUTE
    app = App(server, project)
    for i, t in enumerate(spread(now - 45 * MINUTE, now - 17 * MINUTE, 100)):
        session, end = app.chat(t, timeout=False)
        if i % 10 == 0:
            app.feedback(end + 10 * 10**9, session, feedback="thumbs_down")
    for i, t in enumerate(spread(until - 9 * MINUTE, until - MINUTE, 60)):
        session, end = app.chat(t, timeout=False)
        if i % 10 == 0:
            app.feedback(end + 10 * 10**9, session, **{"feedback.score": -1})
    app.flush()
    packet = diagnose(client, project, until)
    assert [i for i in packet["issues"] if i["signal_type"] == "user_signal"] == []
    assert "user_signals" in packet["diagnosers"]
    assert packet["impact"]["negative_signals"] == 6
    assert packet["impact"]["negative_signals_linked"] == 0
    assert packet["impact"]["negative_signals_unattributed"] == 0


def test_verification_reports_trajectory_deltas_for_genai_operations(server, project, client):
    """After the fix: the verdict comes from the verifier; session-level numbers ride along."""
    now = time.time_ns()
    until = now - 5 * MINUTE
    app = App(server, project)
    for t in spread(now - 45 * MINUTE, now - 17 * MINUTE, 100):
        app.chat(t, timeout=False)
    traffic = Traffic()
    for i, t in enumerate(spread(until - 9 * MINUTE, until - MINUTE, 40)):
        session, end = app.chat(t, timeout=i % 4 == 0, traffic=traffic)
        if i % 4 == 0 and len(traffic.unhappy) < 6:
            traffic.unhappy.append(session)
            app.feedback(end + 15 * 10**9, session, feedback="thumbs_down")
    for t in spread(now - 4 * MINUTE, now - 30 * 10**9, 40):  # after the fix: healthy
        app.chat(t, timeout=False)
    app.flush()
    packet = diagnose(client, project, until, diagnosers=["signature_clusterer", "user_signals"])
    response = client.post(
        "/v1/runs/verify", json={"packet_id": packet["packet_id"], "since_minutes": 5}, headers=project.auth("agent")
    )
    assert response.status_code == 200, response.text
    verdicts = {v["signal_type"]: v for v in response.json()["verification"]["verdicts"]}
    signal = verdicts["user_signal"]
    assert signal["verifier"] == "user_signals_verifier" and signal["verdict"] == "held"
    assert signal["after"]["negative_signals"] == 0 and signal["after"]["calls"] == 40
    assert signal["trajectory"]["before"] == {
        "sessions": 40,
        "success_rate": 0.75,
        "tokens_per_session": 600.0,
        "input_tokens_per_session": 500.0,
        "output_tokens_per_session": 100.0,
        "steps_per_session": 1.0,
        "tool_calls_per_session": 2.0,
        "tool_failure_rate": 0.125,
    }
    assert signal["trajectory"]["after"]["success_rate"] == 1.0
    assert signal["trajectory"]["after"]["tool_failure_rate"] == 0.0
    assert signal["trajectory"]["delta"]["success_rate"] == 0.25
    assert signal["trajectory"]["delta"]["tool_failure_rate"] == -0.125
    assert signal["trajectory"]["delta"]["tokens_per_session"] == 0.0
    timeout = verdicts["tool_failure"]
    assert timeout["verdict"] == "held"
    # The timeout's operation is a GenAI tool span: its traces' sessions are the same chats.
    assert timeout["trajectory"]["before"]["sessions"] == 40
    assert timeout["trajectory"]["delta"]["success_rate"] == 0.25


def test_non_genai_operation_has_no_trajectory(server, project, client):
    """A plain HTTP route: no trajectory numbers."""
    now = time.time_ns()
    headers = project.auth("producer")
    body = {
        "records": [
            {
                "type": "error",
                "name": "GET /trips",
                "service": "web",
                "timestamp": now - MINUTE + i * MS,
                "message": "KeyError: 'hotel'",
                "attributes": {"exception.type": "KeyError"},
            }
            for i in range(5)
        ]
    }
    assert client.post("/v1/traces", json=body, headers=headers).status_code == 200
    packet = diagnose(client, project, now)
    response = client.post(
        "/v1/runs/verify", json={"packet_id": packet["packet_id"], "since_minutes": 1}, headers=project.auth("agent")
    )
    assert response.status_code == 200, response.text
    assert [v["trajectory"] for v in response.json()["verification"]["verdicts"]] == [None]


@pytest.mark.parametrize(
    ("attributes", "name", "negative"),
    [
        ({"feedback": "thumbs_down"}, "feedback", "feedback=thumbs_down"),
        ({"feedback": "Thumbs-Down"}, "feedback", "feedback=thumbs_down"),
        ({"feedback": "thumbs_up"}, "feedback", None),
        ({"feedback.score": -1}, "feedback", "feedback.score=-1"),
        ({"score": 0}, "feedback", "score=0"),
        ({"score": 1}, "feedback", None),
        ({"score": 0.5, "rating": 1}, "rate", None),
        ({"score": "-1"}, "feedback", None),  # wrong type: ignored
        ({"score": True, "feedback": 0}, "feedback", None),  # a bool is not a score, a number not a label
        ({"feedback": ["thumbs_down"]}, "feedback", None),
        ({}, "thumbs_down", "name=thumbs_down"),
        ({"loopkit.signal.label": "regenerate"}, "x", "loopkit.signal.label=regenerate"),
    ],
)
def test_negative_rule(attributes, name, negative):
    """The documented default rule, value by value."""
    record = {"type": "user_signal", "name": name, "attributes": attributes}
    assert negative_reason(record, NegativeRule()) == negative


def test_negative_rule_is_configurable(tmp_path):
    """negative_signal_* settings change the rule; a non-signal record is never negative."""
    settings = make_settings(tmp_path, negative_signal_labels="meh, awful", negative_signal_max_score=2)
    rule = NegativeRule.from_options(settings.negative_signals())
    assert rule.labels == ("meh", "awful") and rule.max_score == 2
    assert negative_reason({"type": "user_signal", "name": "x", "attributes": {"feedback": "awful"}}, rule)
    assert (
        negative_reason({"type": "user_signal", "name": "x", "attributes": {"feedback": "thumbs_down"}}, rule) is None
    )
    assert negative_reason({"type": "user_signal", "name": "x", "attributes": {"rating": 2}}, rule) == "rating=2"
    assert negative_reason({"type": "span", "name": "thumbs_down", "attributes": {"score": -1}}, rule) is None


def test_bad_signal_attributes_never_fail_diagnosis(server, project, client):
    """Signals with odd attribute types and no trace go through the records shape; diagnosis answers 200."""
    now = time.time_ns()
    odd = [{"score": "x"}, {"score": None}, {"feedback": ["thumbs_down"]}, {"rating": [1, 2]}, {"feedback": 1e308}]
    body = {
        "records": [
            {"type": "user_signal", "name": "feedback", "timestamp": now - MINUTE + i * MS, "attributes": a}
            for i, a in enumerate(odd * 3)
        ]
    }
    response = client.post("/v1/traces", json=body, headers=project.auth("producer"))
    assert response.status_code == 200 and response.json()["accepted"] == 15, response.text
    packet = diagnose(client, project, now)
    assert packet["impact"]["user_signals_read"] == 15
    assert packet["impact"]["negative_signals"] == 0
    assert packet["diagnoser_errors"] == []


def test_server_rejects_bad_negative_signal_setting(tmp_path):
    """A negative lookback is refused at start-up."""
    with pytest.raises(ValueError, match="negative_signal_lookback_seconds"):
        make_settings(tmp_path, negative_signal_lookback_seconds=-1)


def test_the_configured_rule_reaches_the_diagnosis(tmp_path):
    """A server with negative_signal_labels=meh counts `feedback: meh` as negative, and no longer thumbs_down."""
    with in_thread(make_settings(tmp_path / "data", negative_signal_labels="meh")) as running:
        project = new_project(running)
        now = time.time_ns()
        labels = ["meh"] * 4 + ["thumbs_down"] * 3
        body = {
            "records": [
                {"type": "user_signal", "name": "fb", "timestamp": now - MINUTE + i * MS, "attributes": {"feedback": x}}
                for i, x in enumerate(labels)
            ]
        }
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            assert client.post("/v1/traces", json=body, headers=project.auth("producer")).status_code == 200
            packet = diagnose(client, project, now)
    assert packet["impact"]["negative_signals"] == 4
    assert packet["impact"]["negative_signals_unattributed"] == 4


def test_a_signal_inside_the_request_is_attributed_to_its_own_trace(server, project, client):
    """No session at all: ratings sent inside the chat's trace rate that chat (via trace), 8 of 40 vs 2 of 200."""
    now = time.time_ns()
    until = now - 5 * MINUTE
    app = App(server, project)
    for i, t in enumerate(spread(now - 45 * MINUTE, now - 17 * MINUTE, 200)):
        app.chat_rated_inside(t, score=-1 if i in (5, 105) else 1)
    for i, t in enumerate(spread(until - 9 * MINUTE, until - MINUTE, 40)):
        app.chat_rated_inside(t, score=-1 if i % 5 == 0 else 1)
    app.flush()
    packet = diagnose(client, project, until, diagnosers=["user_signals"])
    [issue] = packet["issues"]
    stats = issue["stats"]
    assert (issue["count"], stats["calls"], stats["baseline_negative_signals"], stats["baseline_calls"]) == (
        8,
        40,
        2,
        200,
    )
    assert stats["attributed"] == {"trace": 8}
    assert stats["label"] == "-1"  # the score's value: feedback.score=-1
    assert stats["p_value"] == float(f"{p_value(8, 2, 40, 200):.3g}")
    assert stats["co_occurring"] == []  # nothing failed or was slow in those chats
    assert len(issue["traces"]) == 8
    assert packet["impact"]["negative_signals_unattributed"] == 0
