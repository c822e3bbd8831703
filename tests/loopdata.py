"""Deterministic traffic for the handoff, approval and verification tests: a settable clock and OTLP/JSON spans.

Every span has a fixed trace and span ID and start, so its record ID is `record_id_for_span(project_id, trace, span,
start)`; every
timestamp is explicit (unix ns), so a test sets the server's clock instead of sleeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from conftest import Project, make_settings, new_project

from loopkit_core.diagnose import issue_id
from loopkit_core.model import parse_rfc3339, record_id_for_span
from loopkit_core.server import Running, in_thread

MINUTE_NS = 60 * 10**9
HOUR_NS = 60 * MINUTE_NS
NOW_NS = parse_rfc3339("2026-03-02T10:00:00Z")  # whole seconds: exact as a float clock
SERVICE = "checkout"
VERSION = "2.4.1"
CHECKOUT = "POST /checkout"
SEARCH = "GET /search"
STACK = """Traceback (most recent call last):
  File "/srv/checkout/app/routes.py", line 88, in create_order
    charge = gateway.charge(order)
  File "/srv/checkout/app/payments/gateway.py", line 142, in charge
    raise TimeoutError(f"payment gateway timed out after {timeout} ms (order {order.id})")
TimeoutError: payment gateway timed out after 3000 ms (order {order})"""


class Clock:
    """A settable clock for `in_thread(settings, clock=...)`: seconds since the epoch, like time.time."""

    def __init__(self, now_ns: int = NOW_NS) -> None:
        self.now_ns = now_ns

    def __call__(self) -> float:
        return self.now_ns / 1e9

    def set(self, now_ns: int) -> None:
        """Jump to `now_ns` (whole seconds keep the float exact)."""
        assert now_ns % 10**9 == 0
        self.now_ns = now_ns


@dataclass
class Spans:
    """Spans to export, and a label for each record ID they will get (for goldens and assertions)."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)  # (trace_id, span_id) -> label
    starts: dict[tuple[str, str], int] = field(default_factory=dict)  # (trace_id, span_id) -> start (unix ns)
    counter: int = 0

    def add(
        self,
        label: str,
        name: str,
        ts_ns: int,
        duration_ms: float,
        *,
        error: str | None = None,
        order: int = 0,
        attributes: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """One span; with `error`, a failed checkout with an exception event and its stack trace."""
        self.counter += 1
        trace_id = f"{0x4B1D0000 + self.counter:032x}"
        span_id = f"{0x5EED0000 + self.counter:016x}"
        attrs = {"http.route": name.split(" ", 1)[1], "http.request.method": name.split(" ", 1)[0]}
        attrs.update(attributes or {})
        span: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": span_id,
            "name": name,
            "kind": 2,
            "startTimeUnixNano": str(ts_ns),
            "endTimeUnixNano": str(ts_ns + round(duration_ms * 1e6)),
            "attributes": [_kv(k, v) for k, v in attrs.items()],
            "status": {"code": 1},
        }
        if error:
            message = f"payment gateway timed out after 3000 ms (order {order})"
            span["status"] = {"code": 2, "message": message}
            span["events"] = [
                {
                    "name": "exception",
                    "timeUnixNano": str(ts_ns + round(duration_ms * 1e6)),
                    "attributes": [
                        _kv("exception.type", error),
                        _kv("exception.message", message),
                        _kv("exception.stacktrace", STACK.replace("{order}", str(order))),
                    ],
                }
            ]
        self.spans.append(span)
        self.labels[(trace_id, span_id)] = label
        self.starts[(trace_id, span_id)] = ts_ns
        return trace_id, span_id

    def record_ids(self, project_id: str) -> dict[str, str]:
        """record ID -> label, for the project the spans were sent to."""
        return {self.record_id(project_id, t, s): label for (t, s), label in self.labels.items()}

    def ids_of(self, project_id: str, prefix: str) -> list[str]:
        """Record IDs of the spans whose label starts with `prefix`, in the order they were added."""
        return [self.record_id(project_id, t, s) for (t, s), lab in self.labels.items() if lab.startswith(prefix)]

    def record_id(self, project_id: str, trace_id: str, span_id: str) -> str:
        """The record ID one added span gets in a project."""
        return record_id_for_span(project_id, trace_id, span_id, self.starts[(trace_id, span_id)])

    def send(self, client: httpx.Client, project: Project, version: str = VERSION) -> None:
        """Export every span added so far over OTLP/HTTP JSON (in batches, as `version`), then forget them."""
        for i in range(0, len(self.spans), 500):
            body = {
                "resourceSpans": [
                    {
                        "resource": {
                            "attributes": [
                                _kv("service.name", SERVICE),
                                _kv("service.version", version),
                                _kv("deployment.environment", "prod"),
                            ]
                        },
                        "scopeSpans": [{"scope": {"name": "checkout.http"}, "spans": self.spans[i : i + 500]}],
                    }
                ]
            }
            answer = client.post("/v1/traces", json=body, headers=project.auth("producer"))
            assert answer.status_code == 200 and answer.json() == {}, answer.text
        self.spans = []


def realistic_packet_traffic(spans: Spans) -> None:
    """The golden packet's traffic, for a diagnosis at NOW_NS over the last 60 minutes.

    POST /checkout: 60 calls in the window, 6 of them TimeoutErrors with an exception event and a Python stack
    trace (one signature issue). GET /search: 120 calls of about 50 ms in the 6 hours before the window, then 40
    of about 200 ms in it (one latency issue).
    """
    checkout_calls(spans, "checkout", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 60, 6)
    search_calls(spans, "search-baseline", NOW_NS - 7 * HOUR_NS, NOW_NS - HOUR_NS, 120, 50.0)
    search_calls(spans, "search", NOW_NS - 60 * MINUTE_NS, NOW_NS - 5 * MINUTE_NS, 40, 200.0)


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def checkout_calls(
    spans: Spans, tag: str, start_ns: int, end_ns: int, calls: int, errors: int, first_order: int = 10_000
) -> None:
    """`calls` POST /checkout spans spread evenly over [start_ns, end_ns), `errors` of them failing.

    The failures are spread evenly among the calls; every call's timestamp is distinct and whole-ms.
    """
    step = (end_ns - start_ns) // calls
    failing = {round(i * calls / errors) for i in range(errors)} if errors else set()
    for i in range(calls):
        ts = start_ns + i * step
        if i in failing:
            n = len([j for j in failing if j < i])
            spans.add(
                f"{tag}-err-{n}",
                CHECKOUT,
                ts,
                3001.5 + n,
                error="TimeoutError",
                order=first_order + 7 * n,
                attributes={"http.response.status_code": 504},
            )
        else:
            spans.add(f"{tag}-ok-{i}", CHECKOUT, ts, 80.0 + (i * 7) % 50, attributes={"http.response.status_code": 200})


def search_calls(spans: Spans, tag: str, start_ns: int, end_ns: int, calls: int, base_ms: float) -> list[float]:
    """`calls` GET /search spans spread evenly over [start_ns, end_ns), durations base_ms x (0.8 .. 1.2).

    Returns the durations (ms), in order, so a test computes expectations from the data.
    """
    step = (end_ns - start_ns) // calls
    durations = []
    for i in range(calls):
        ms = round(base_ms * (0.8 + 0.4 * ((i * 37) % calls) / calls), 3)
        durations.append(ms)
        spans.add(f"{tag}-{i}", SEARCH, start_ns + i * step, ms, attributes={"db.system": "postgresql"})
    return durations


@dataclass
class Loop:
    """A server with a settable clock, a project, the traffic sent to it, and its first diagnosis packet."""

    server: Running
    clock: Clock
    client: httpx.Client
    project: Project
    spans: Spans
    packet: dict

    def handoff(self, fmt: str | None, key: str = "agent", packet_id: str | None = None) -> httpx.Response:
        """GET the packet's handoff in a format (None: the default)."""
        params = {"format": fmt} if fmt is not None else {}
        path = f"/v1/packets/{packet_id or self.packet['packet_id']}/handoff"
        return self.client.get(path, params=params, headers=self.project.auth(key))

    def decide(self, decision: str, body: Any, key: str = "dashboard", packet_id: str | None = None) -> httpx.Response:
        """POST approve or reject (body: a JSON value, or bytes sent as they are)."""
        path = f"/v1/packets/{packet_id or self.packet['packet_id']}/{decision}"
        if isinstance(body, bytes):
            return self.client.post(path, content=body, headers=self.project.auth(key))
        return self.client.post(path, json=body, headers=self.project.auth(key))

    def verify(self, body: Any = None, key: str = "agent") -> httpx.Response:
        """POST /v1/runs/verify (default body: this packet)."""
        body = {"packet_id": self.packet["packet_id"]} if body is None else body
        return self.client.post("/v1/runs/verify", json=body, headers=self.project.auth(key))

    def diagnose(self, **body: Any) -> dict:
        """POST /v1/runs/diagnose with the agent key; the packet."""
        answer = self.client.post("/v1/runs/diagnose", json=body, headers=self.project.auth("agent"))
        assert answer.status_code == 200, answer.text
        return answer.json()["packet"]

    def packet_now(self, key: str = "agent", packet_id: str | None = None) -> dict:
        """GET /v1/packets/{id}: the packet as it stands now."""
        answer = self.client.get(f"/v1/packets/{packet_id or self.packet['packet_id']}", headers=self.project.auth(key))
        assert answer.status_code == 200, answer.text
        return answer.json()["packet"]

    def normalise(self, text: str) -> str:
        """Replace the per-run values with stable placeholders (record IDs by the label of their span)."""
        pid = self.project.project_id
        text = text.replace(self.packet["packet_id"], "pkt_PACKET")
        for record_id, label in self.spans.record_ids(pid).items():
            text = text.replace(record_id, f"rec_{label}")
        for issue in self.packet["issues"]:
            assert issue["issue_id"] == issue_id(pid, issue["fingerprint"])
            text = text.replace(issue["issue_id"], f"iss_{issue['fingerprint']}")
        for kind in ("agent", "dashboard"):
            key = getattr(self.project, f"{kind}_key")
            text = text.replace(key[: key.index("_", 3) + 5] + "…", f"KEY_{kind.upper()}…")
        return text.replace(pid, "PROJECT")


@contextlib.contextmanager
def running_loop(
    data_dir: Path, traffic: Callable[[Spans], None], diagnose: dict[str, Any] | None = None, **settings: Any
) -> Iterator[Loop]:
    """A server whose clock stands at NOW_NS, a project with `traffic` sent, and its diagnosis at NOW_NS."""
    clock = Clock(NOW_NS)
    with (
        in_thread(make_settings(data_dir, **settings), clock=clock) as server,
        httpx.Client(base_url=server.http_url, timeout=30) as client,
    ):
        project = new_project(server, "shop")
        spans = Spans()
        traffic(spans)
        spans.send(client, project)
        answer = client.post("/v1/runs/diagnose", json=diagnose or {}, headers=project.auth("agent"))
        assert answer.status_code == 200, answer.text
        yield Loop(server, clock, client, project, spans, answer.json()["packet"])
