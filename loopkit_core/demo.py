"""`loopkit demo`: the whole loop on a temporary embedded store, driven by a small sample agent app.

The demo starts a real LoopKit (HTTP and OTLP/gRPC on 127.0.0.1) over SQLite files in a temporary
directory, signs up a sandbox project, and runs "trip-planner", a small agent app instrumented with the
real OpenTelemetry SDK and OTLP/HTTP exporter. The app's traffic has four kinds of pain:

- the `search_flights` tool times out (tool failures, `gen_ai.operation.name = execute_tool`);
- the route `GET /trips/{trip_id}` throws a TypeError for trips without a hotel (errors);
- `GET /api/recommendations` got slow in version 1.4.0 (a new N+1 query): spans placed with explicit
  timestamps, fast ones 12-40 minutes ago (the latency detector's baseline: the hour before the window)
  and slow ones in the last 10 minutes;
- users press thumbs-down after the timeouts (spans with `loopkit.signal = user_signal`).

Then it diagnoses the last 10 minutes, prints the packet and the Markdown handoff, approves with the
dashboard key, "ships the fix" (version 1.4.1: healthy traffic for the fixed operations only), verifies
(`held`), brings one timeout back and verifies again (`regressed`), and diagnoses once more (the issue's
status is `regressed`). It exits 0 when every expected verdict appeared, 1 otherwise (saying what
differed), and 2 when the OpenTelemetry SDK is not installed.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVICE = "trip-planner"
WINDOW_MINUTES = 10  # the diagnosis window: the last 10 minutes
MINUTE_NS = 60 * 10**9
MS = 10**6
TOOL_TIMEOUT_MS = 8000
SEED = 20260101

# The window's traffic (the last 10 minutes, version 1.4.0).
CHATS = 40  # POST /chat, each with an LLM call and two tool calls
TIMEOUTS = 10  # of them, search_flights timed out
THUMBS_DOWN = 6  # sessions with a timeout whose user pressed thumbs-down
TRIP_CALLS = 20  # GET /trips/{trip_id}
TRIP_FAILURES = 8  # of them, trips without a hotel: the route throws
SLOW_RECOMMENDATIONS = 40  # GET /api/recommendations, slow (the latency detector needs >= 30 in the window)
BASELINE_RECOMMENDATIONS = 120  # fast, 12-40 minutes ago (it needs >= 100 in the baseline)
# After the fix (version 1.4.1): enough calls that the old rates predict >= 5 occurrences.
FIXED_CHATS = 40  # 40 calls x 10/40 timeouts per call = 10 expected at the old rate
FIXED_RECOMMENDATIONS = 40

INSTALL_HINT = (
    "loopkit demo needs the OpenTelemetry SDK and OTLP/HTTP exporter (its sample app uses them).\n"
    'Install them with:  pip install -e ".[test]"\n'
    "or:                 pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
)
STEPS = 8


class DemoError(Exception):
    """A step of the demo could not run (the server answered an error, an export failed)."""


def run(http_port: int = 0, grpc_port: int = 0, keep_serving: bool = False) -> int:
    """Run the demo; 0 when every expected verdict appeared, 1 otherwise, 2 without the OpenTelemetry SDK."""
    try:
        otel = _import_otel()
    except ImportError as exc:
        _print(f"loopkit: error: {INSTALL_HINT}\n(import failed: {exc})", err=True)
        return 2

    from loopkit_core.server import in_thread
    from loopkit_core.settings import Settings

    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-demo-"))
    previous_term = _exit_on_sigterm()
    try:
        settings = Settings.from_env(
            {},  # the demo is self-contained: LOOPKIT_* variables of a real installation do not apply
            data_dir=data_dir,
            host="127.0.0.1",
            http_port=http_port,
            grpc_port=grpc_port,
            log_level="warning",
            shutdown_grace_seconds=5.0,
        )
        _print(f"[1/{STEPS}] starting LoopKit on a temporary embedded store: {data_dir}")
        with in_thread(settings) as running:
            _print(f"      HTTP {running.http_url}   OTLP/gRPC {running.grpc_target}   (127.0.0.1 only)")
            demo = _Demo(running.http_url, running.grpc_target, otel, started)
            problems = demo.run()
            elapsed = time.monotonic() - started
            demo.summary(problems, keep_serving)
            if keep_serving:
                # Ctrl-C is caught from before the line that invites it: a signal sent as soon as the line is read
                # must not land between the print and the wait (seen under load).
                with contextlib.suppress(KeyboardInterrupt):
                    _print(f"\nServing {running.http_url} until Ctrl-C (then the temporary data dir is removed) ...")
                    while True:
                        threading.Event().wait(3600)
        _print("LoopKit stopped.")
    except DemoError as exc:
        _print(f"\nloopkit demo FAILED: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        _print("\nloopkit demo interrupted.", err=True)
        return 130
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        _print(f"Removed the temporary data dir {data_dir}")
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        _print(f"loopkit demo FAILED: {len(problems)} expectation(s) differed:\n{lines}", err=True)
        return 1
    _print(f"loopkit demo OK: the loop ran in {elapsed:.1f} s and every expected verdict appeared.")
    return 0


def _print(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _exit_on_sigterm() -> Any:
    """SIGTERM exits through the finally blocks (server stopped, temporary data removed)."""

    def handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set signal handlers
    return signal.signal(signal.SIGTERM, handle)


def _import_otel() -> dict[str, Any]:
    """The OpenTelemetry pieces the sample app uses, imported only when the demo runs."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from requests import Session  # the OTLP/HTTP exporter's own HTTP client

    return {
        "trace": trace,
        "OTLPSpanExporter": OTLPSpanExporter,
        "Resource": Resource,
        "TracerProvider": TracerProvider,
        "BatchSpanProcessor": BatchSpanProcessor,
        "SpanExporter": SpanExporter,
        "SpanExportResult": SpanExportResult,
        "SpanKind": SpanKind,
        "Status": Status,
        "StatusCode": StatusCode,
        "ALWAYS_ON": ALWAYS_ON,
        "Session": Session,
    }


# --- the loop, step by step ---------------------------------------------------------------------


class _Demo:
    """The loop against the demo server, over plain HTTP with the project's keys."""

    def __init__(self, base: str, grpc_target: str, otel: dict[str, Any], started: float) -> None:
        self.base = base
        self.grpc_target = grpc_target
        self.otel = otel
        self.say = _print
        self.started = started
        self.keys: dict[str, str] = {}
        self.project_id = ""
        self.packet_id = ""

    def step(self, n: int, text: str) -> None:
        """A progress line."""
        self.say(f"\n[{n}/{STEPS}] {text}  (t+{time.monotonic() - self.started:.1f} s)")

    def run(self) -> list[str]:
        """Every step after the server started; the expectations that were not met."""
        problems: list[str] = []
        self.step(2, "signing up a sandbox project (POST /v1/signup)")
        created = self.api("POST", "/v1/signup", None, {"project_name": "trip planner demo"}, expect=201)
        self.project_id = created["project_id"]
        self.keys = {k: created[k] for k in ("producer_key", "agent_key", "dashboard_key")}
        self.say(f"      project {self.project_id}: producer, agent and dashboard keys minted (printed at the end)")

        self.step(3, f"running the sample agent app '{SERVICE}' through the real OTLP/HTTP exporter")
        app = TripPlanner(self.otel, f"{self.base}/v1/traces", self.keys["producer_key"])
        now = time.time_ns()
        app.baseline(now)
        app.bad_window(now)

        self.step(4, f"diagnosing the last {WINDOW_MINUTES} minutes (POST /v1/runs/diagnose, min_count 3)")
        packet = self.api("POST", "/v1/runs/diagnose", "agent", {"since_minutes": WINDOW_MINUTES, "min_count": 3})[
            "packet"
        ]
        self.packet_id = packet["packet_id"]
        signals = self.api("GET", f"/v1/telemetry?type=user_signal&since_minutes={WINDOW_MINUTES}&limit=1000", "agent")[
            "records"
        ]
        self.print_packet(packet, len(signals))
        issues = _find_issues(packet)
        for label in ("tool", "route", "latency"):
            if label not in issues:
                problems.append(f"the first diagnosis has no {_LABELS[label]} issue")
        if not issues:
            raise DemoError("the diagnosis found none of the expected issues: " + "; ".join(problems))

        self.step(5, f"the Markdown handoff for a coding agent (GET /v1/packets/{self.packet_id}/handoff)")
        markdown = self.api("GET", f"/v1/packets/{self.packet_id}/handoff?format=markdown", "agent", raw=True)
        self.say("----- 8< ----- handoff (Markdown) " + "-" * 40)
        self.say(markdown.rstrip("\n"))
        self.say("----- >8 ----- end of handoff " + "-" * 44)

        self.step(6, "a person approves with the dashboard key (POST /v1/packets/{id}/approve)")
        note = "Evidence checked: the flight search timeouts and the N+1 reviews query are ours. Fix in 1.4.1."
        approved = self.api("POST", f"/v1/packets/{self.packet_id}/approve", "dashboard", {"note": note})
        approval = approved["approval"]
        self.say(f"      {approved['status']} by {approval['decided_by']} at {approval['decided_at']}")
        self.say(f'      note: "{approval["note"]}"')
        self.say("      LoopKit posted nothing and changed nothing: the decision is recorded, that is all.")

        self.step(7, "shipping the fix (version 1.4.1: flights search with a retry, reviews in one query)")
        self.say("      the route GET /trips/{trip_id} is not part of this fix and gets no traffic")
        app.fixed_traffic()
        verification = self.verify()
        expected = {"tool": "held", "latency": "held", "route": "insufficient_data"}
        problems += _compare(verification, issues, expected, "the first verification")

        self.step(8, "a regression: one search_flights timeout comes back, then verify and diagnose again")
        app.regression()
        verification = self.verify()
        problems += _compare(verification, issues, {"tool": "regressed", "latency": "held"}, "the second verification")
        again = self.api("POST", "/v1/runs/diagnose", "agent", {"since_minutes": WINDOW_MINUTES, "min_count": 3})[
            "packet"
        ]
        self.say(f"      next diagnosis {again['packet_id']}:")
        for issue in again["issues"]:
            flag = "  regression: true" if issue.get("regression") else ""
            self.say(f"        {issue['issue_id']}  status {issue['status']:<10} {_short(issue['title'], 64)}{flag}")
        tool = issues.get("tool")
        if tool:
            seen = next((i for i in again["issues"] if i["issue_id"] == tool["issue_id"]), None)
            if seen is None:
                problems.append(f"the next diagnosis lost issue {tool['issue_id']}")
            elif seen.get("status") != "regressed" or not seen.get("regression"):
                problems.append(f"the next diagnosis shows {tool['issue_id']} as {seen.get('status')}, not regressed")
        return problems

    def verify(self) -> dict[str, Any]:
        """POST /v1/runs/verify for the packet, printed."""
        verification = self.api("POST", "/v1/runs/verify", "agent", {"packet_id": self.packet_id})["verification"]
        after = verification["window_after"]
        self.say(f"      {verification['verification_id']}: after-window {after['start']} → {after['end']}")
        for v in verification["verdicts"]:
            self.say(f"        {v['verdict']:<17} {v['issue_id']}  {_short(v['title'], 72)}")
            self.say(f"        {'':<17} {v['reason']}")
        return verification

    def print_packet(self, packet: dict[str, Any], user_signals: int) -> None:
        """A compact summary of the packet: its window, counts and issues with their evidence."""
        window = packet["window"]
        self.say(f"      packet {packet['packet_id']}   status {packet['status']}")
        self.say(
            f"      window {window['start']} → {window['end']}   records read {packet['telemetry_read']}   "
            f"failures {packet['failures']}   diagnosers {', '.join(packet['diagnosers'])}"
        )
        required = "required" if packet["approval_required"] else "not required"
        self.say(f"      approval {required}, now {packet['approval']['state']}")
        for n, issue in enumerate(packet["issues"], 1):
            self.say(f"      {n}. {issue['title']}")
            self.say(
                f"         {issue['issue_id']}  {issue['signal_type']}  count {issue['count']}  "
                f"severity {issue['severity']}  eval {issue['eval_candidate']}"
            )
            shown = ", ".join(issue["evidence"][:3])
            more = f" (+{len(issue['evidence']) - 3} more)" if len(issue["evidence"]) > 3 else ""
            self.say(f"         evidence {shown}{more}")
        self.say(
            f"      + {user_signals} thumbs-down user_signal records in the window, stored and readable with "
            "GET /v1/telemetry?type=user_signal;\n        the built-in diagnosers do not make issues of user signals "
            "(docs/writing_plugins.md shows a diagnoser plugin that does)"
        )

    def summary(self, problems: list[str], keep_serving: bool) -> None:
        """Where to look next: the URLs and the keys of the demo project."""
        dashboard = self.probe_dashboard()
        self.say(f"\nDone in {time.monotonic() - self.started:.1f} s" + (" with problems." if problems else "."))
        if not keep_serving:
            self.say("The server stops now; `loopkit demo --keep-serving` keeps it up, to try these:")
        # The key rides in the fragment: browsers never send it, and the page drops it from the address bar.
        self.say(f"  dashboard  {self.base}/v1/dashboard#key={self.keys.get('dashboard_key', '')}  {dashboard}")
        self.say(f"  packets    {self.base}/v1/packets  (agent or dashboard key)")
        self.say(f"  handoff    {self.base}/v1/packets/{self.packet_id}/handoff?format=markdown  (agent key)")
        self.say(f"  ingest     {self.base}/v1/traces  and OTLP/gRPC {self.grpc_target}  (producer key)")
        self.say(f"  project    {self.project_id}  (a sandbox on a temporary store)")
        for kind in ("producer", "agent", "dashboard"):
            self.say(f"  {kind + ' key':<14} {self.keys.get(kind + '_key', '-')}")
        self.say(f'  e.g.       curl -s {self.base}/v1/packets -H "authorization: Bearer {self.keys.get("agent_key")}"')

    def probe_dashboard(self) -> str:
        """Say honestly whether /v1/dashboard exists in this version."""
        request = urllib.request.Request(
            f"{self.base}/v1/dashboard", headers={"authorization": f"Bearer {self.keys.get('dashboard_key', '')}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (our own loopback server)
                return "(open it in a browser: it signs in with the dashboard key)"
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return "(not built in this version yet: read the packets and approve over HTTP, as above)"
            return f"(answered {exc.code})"
        except urllib.error.URLError as exc:
            return f"(unreachable: {exc.reason})"

    def api(
        self,
        method: str,
        path: str,
        key: str | None,
        body: dict[str, Any] | None = None,
        expect: int = 200,
        raw: bool = False,
    ) -> Any:
        """Call the demo server; DemoError on anything but the expected status."""
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {self.keys[key + '_key']}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our own loopback server)
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            raise DemoError(
                f"{method} {path} answered {exc.code}: {exc.read().decode(errors='replace')[:500]}"
            ) from None
        except urllib.error.URLError as exc:
            raise DemoError(f"{method} {path}: cannot reach {self.base}: {exc.reason}") from None
        if status != expect:
            raise DemoError(f"{method} {path} answered {status}, expected {expect}: {text[:500]}")
        return text if raw else json.loads(text)


_LABELS = {
    "tool": "search_flights tool-timeout",
    "route": "GET /trips/{trip_id} error",
    "latency": "GET /api/recommendations latency",
}


def _find_issues(packet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The packet's issues the demo expects, by label."""
    found: dict[str, dict[str, Any]] = {}
    for issue in packet["issues"]:
        stats = issue.get("stats") or {}
        operation = stats.get("operation")
        if issue["signal_type"] == "tool_failure" and operation == "search_flights":
            found.setdefault("tool", issue)
        elif issue["signal_type"] == "error" and operation == "/trips/{trip_id}":
            found.setdefault("route", issue)
        elif issue["signal_type"] == "latency" and operation == "GET /api/recommendations":
            found.setdefault("latency", issue)
    return found


def _compare(
    verification: dict[str, Any], issues: dict[str, dict[str, Any]], expected: dict[str, str], what: str
) -> list[str]:
    verdicts = {v["issue_id"]: v["verdict"] for v in verification["verdicts"]}
    problems = []
    for label, want in expected.items():
        issue = issues.get(label)
        if issue is None:
            continue  # already reported: the diagnosis did not find it
        got = verdicts.get(issue["issue_id"])
        if got != want:
            problems.append(f"{what}: the {_LABELS[label]} issue ({issue['issue_id']}) is {got}, expected {want}")
    return problems


# --- the sample agent app -----------------------------------------------------------------------


class TripPlanner:
    """A small travel agent app: POST /chat (an LLM and two tools), GET /trips/{trip_id}, GET /api/recommendations.

    Its code raises real exceptions; its spans are real OpenTelemetry SDK spans exported over OTLP/HTTP
    protobuf with the producer key. Timestamps are explicit so that an hour of traffic takes a second.
    """

    def __init__(self, otel: dict[str, Any], endpoint: str, producer_key: str) -> None:
        self.otel = otel
        self.endpoint = endpoint
        self.key = producer_key
        self.say = _print
        self.rng = random.Random(SEED)
        self.latest_start_ns = 0
        self.spans = 0
        self.session = 0

    # -- phases --

    def baseline(self, now: int) -> None:
        """Version 1.3.0, 12-40 minutes ago: fast recommendations (the latency detector's baseline)."""
        start, end = now - 40 * MINUTE_NS, now - 12 * MINUTE_NS
        self.say(
            f"      v1.3.0, 40 to 12 min ago: {BASELINE_RECOMMENDATIONS} fast GET /api/recommendations "
            "(the latency detector's baseline: the hour before the window)"
        )
        with self.phase("1.3.0") as tracer:
            for t in _spread(start, end, BASELINE_RECOMMENDATIONS):
                self.recommendations(tracer, t, slow=False)

    def bad_window(self, now: int) -> None:
        """Version 1.4.0, the last 10 minutes: timeouts, a throwing route, slow recommendations, thumbs-down."""
        start, end = now - (WINDOW_MINUTES - 1) * MINUTE_NS, now - 30 * 10**9
        timeouts = set(self.rng.sample(range(CHATS), TIMEOUTS))
        unhappy = set(self.rng.sample(sorted(timeouts), THUMBS_DOWN))
        failing_trips = set(self.rng.sample(range(TRIP_CALLS), TRIP_FAILURES))
        self.say(
            f"      v1.4.0, the last {WINDOW_MINUTES} min: {CHATS} POST /chat ({TIMEOUTS} search_flights tool calls "
            f"time out; {THUMBS_DOWN} of those users press thumbs-down),\n        {TRIP_CALLS} GET /trips/{{trip_id}} "
            f"({TRIP_FAILURES} throw TypeError), {SLOW_RECOMMENDATIONS} slow GET /api/recommendations "
            "(a new N+1 query)"
        )
        with self.phase("1.4.0") as tracer:
            for i, t in enumerate(_spread(start, end, CHATS)):
                session, ended = self.chat(tracer, t, flights_time_out=i in timeouts)
                if i in unhappy:
                    self.thumbs_down(tracer, ended + 15 * 10**9, session)
            for i, t in enumerate(_spread(start + 7 * 10**9, end, TRIP_CALLS)):
                self.trip(tracer, t, hotel_missing=i in failing_trips)
            for t in _spread(start + 3 * 10**9, end, SLOW_RECOMMENDATIONS):
                self.recommendations(tracer, t, slow=True)

    def fixed_traffic(self) -> None:
        """Version 1.4.1, now: healthy calls of the fixed operations only."""
        self.say(
            f"      v1.4.1, now: {FIXED_CHATS} POST /chat (every search_flights answers), "
            f"{FIXED_RECOMMENDATIONS} fast GET /api/recommendations"
        )
        with self.phase("1.4.1") as tracer:
            for _ in range(FIXED_CHATS):
                self.chat(tracer, time.time_ns(), flights_time_out=False)
            for _ in range(FIXED_RECOMMENDATIONS):
                self.recommendations(tracer, time.time_ns(), slow=False)
        self.wait_for_spans()

    def regression(self) -> None:
        """Version 1.4.2, now: one chat whose flight search times out again."""
        self.say("      v1.4.2, now: 1 POST /chat whose search_flights call times out again")
        with self.phase("1.4.2") as tracer:
            self.chat(tracer, time.time_ns(), flights_time_out=True)
        self.wait_for_spans()

    @contextlib.contextmanager
    def phase(self, version: str) -> Iterator[Any]:
        """A tracer of the app at one version; its spans are flushed (and checked) when the phase ends."""
        o = self.otel
        session = o["Session"]()
        session.trust_env = False  # loopback only: no proxy from the environment
        inner = o["OTLPSpanExporter"](
            endpoint=self.endpoint, headers={"authorization": f"Bearer {self.key}"}, timeout=10, session=session
        )
        exporter = _counting(o, inner)
        resource = o["Resource"].create(
            {"service.name": SERVICE, "service.version": version, "deployment.environment.name": "demo"}
        )
        # Explicit sampler: OTEL_TRACES_SAMPLER in the environment must not thin out the demo's traffic.
        provider = o["TracerProvider"](resource=resource, sampler=o["ALWAYS_ON"])
        provider.add_span_processor(
            o["BatchSpanProcessor"](exporter, max_queue_size=4096, max_export_batch_size=256, schedule_delay_millis=200)
        )
        self.spans = 0
        try:
            yield provider.get_tracer("trip_planner", version)
            if not provider.force_flush(30_000):
                raise DemoError("the OpenTelemetry SDK did not flush its spans within 30 s")
        finally:
            provider.shutdown()
        if exporter.failed:
            raise DemoError(f"the OTLP/HTTP exporter failed to send {exporter.failed} span(s) to {self.endpoint}")
        if exporter.sent != self.spans:
            raise DemoError(
                f"the OpenTelemetry SDK exported {exporter.sent} of {self.spans} spans (is OTEL_SDK_DISABLED set?)"
            )
        self.say(f"      exported {exporter.sent} spans over OTLP/HTTP protobuf in {exporter.batches} request(s)")

    def wait_for_spans(self) -> None:
        """Spans start in real time but children start later; wait until every one has started."""
        delay = (self.latest_start_ns - time.time_ns()) / 1e9 + 0.01
        if delay > 0:
            time.sleep(delay)

    # -- requests --

    def chat(self, tracer: Any, t: int, *, flights_time_out: bool) -> tuple[str, int]:
        """One POST /chat: the LLM plans, then calls search_flights and get_weather; returns (session, end)."""
        self.session += 1
        session = f"sess-{self.session:04d}"
        origin, destination = self.rng.choice([("LHR", "JFK"), ("CDG", "LIS"), ("FRA", "SFO"), ("AMS", "BCN")])
        root = self.start(
            tracer,
            "POST /chat",
            t,
            kind="SERVER",
            attributes={
                "http.request.method": "POST",
                "http.route": "/chat",
                "session.id": session,
                "user.id": f"user-{self.rng.randint(1, 30)}",
            },
        )
        cursor = t + self.rng.randint(2, 6) * MS
        llm_ms = self.rng.uniform(300, 700)
        self.child(
            tracer,
            root,
            "chat gpt-4o-mini",
            cursor,
            llm_ms,
            kind="CLIENT",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": self.rng.randint(400, 1200),
                "gen_ai.usage.output_tokens": self.rng.randint(40, 200),
            },
        )
        cursor += int(llm_ms * MS)
        # The model asked for both tools at once: they run in parallel, and the answer waits for both.
        tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_flights"}
        error = None
        try:
            search_flights(origin, destination, times_out=flights_time_out)
        except TimeoutError as exc:
            error = exc
        flights_ms = TOOL_TIMEOUT_MS if error else self.rng.uniform(150, 400)
        self.child(tracer, root, "execute_tool search_flights", cursor, flights_ms, attributes=tool, error=error)
        weather_ms = self.rng.uniform(40, 120)
        weather = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"}
        self.child(tracer, root, "execute_tool get_weather", cursor + MS, weather_ms, attributes=weather)
        end = cursor + int(max(flights_ms, weather_ms + 1) * MS) + self.rng.randint(1, 5) * MS
        root.set_attribute("http.response.status_code", 200)  # the agent apologises; the request itself succeeds
        root.end(end_time=end)
        return session, end

    def thumbs_down(self, tracer: Any, t: int, session: str) -> None:
        """The user of a session rates the answer: a user_signal span named after the operation rated."""
        attributes = {
            "loopkit.signal": "user_signal",
            "feedback": "thumbs_down",
            "feedback.comment": "it said it could not search flights right now",
            "session.id": session,
        }
        self.start(tracer, "POST /chat", t, attributes=attributes).end(end_time=t + MS)

    def trip(self, tracer: Any, t: int, *, hotel_missing: bool) -> None:
        """GET /trips/{trip_id}: throws TypeError for trips without a hotel."""
        trip_id = f"trp_{self.rng.randint(1000, 9999)}"
        span = self.start(
            tracer,
            "GET /trips/{trip_id}",
            t,
            kind="SERVER",
            attributes={
                "http.request.method": "GET",
                "http.route": "/trips/{trip_id}",
                "url.path": f"/trips/{trip_id}",
            },
        )
        trip = {"trip_id": trip_id, "city": "Lisbon", "hotel": None if hotel_missing else {"name": "Casa do Mar"}}
        duration = self.rng.uniform(8, 25)
        try:
            trip_summary(trip)
        except TypeError as exc:
            span.record_exception(exc, timestamp=t + int(duration * MS))
            span.set_status(self.otel["Status"](self.otel["StatusCode"].ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute("http.response.status_code", 500)
        else:
            span.set_attribute("http.response.status_code", 200)
        span.end(end_time=t + int(duration * MS))

    def recommendations(self, tracer: Any, t: int, *, slow: bool) -> None:
        """GET /api/recommendations; 1.4.0 added a reviews query per hotel (N+1) that made it slow."""
        root = self.start(
            tracer,
            "GET /api/recommendations",
            t,
            kind="SERVER",
            attributes={"http.request.method": "GET", "http.route": "/api/recommendations"},
        )
        cursor = t + self.rng.randint(1, 4) * MS
        hotels_ms = self.rng.uniform(15, 35)
        db = {"db.system": "postgresql", "db.operation.name": "SELECT"}
        self.child(tracer, root, "SELECT hotels", cursor, hotels_ms, kind="CLIENT", attributes=db)
        cursor += int(hotels_ms * MS)
        if slow:
            reviews_ms = self.rng.uniform(350, 800)
            self.child(tracer, root, "SELECT reviews", cursor, reviews_ms, kind="CLIENT", attributes=db)
            cursor += int(reviews_ms * MS)
        else:
            cursor += int(self.rng.uniform(15, 45) * MS)  # ranking in memory
        root.set_attribute("http.response.status_code", 200)
        root.end(end_time=cursor + self.rng.randint(1, 5) * MS)

    # -- span helpers --

    def start(self, tracer: Any, name: str, t: int, kind: str = "INTERNAL", attributes: dict | None = None) -> Any:
        """Start a root span at t (unix ns); the caller ends it."""
        self.latest_start_ns = max(self.latest_start_ns, t)
        self.spans += 1
        return tracer.start_span(name, kind=getattr(self.otel["SpanKind"], kind), attributes=attributes, start_time=t)

    def child(
        self,
        tracer: Any,
        parent: Any,
        name: str,
        t: int,
        duration_ms: float,
        kind: str = "INTERNAL",
        attributes: dict | None = None,
        error: BaseException | None = None,
    ) -> None:
        """A child span of parent from t for duration_ms, failed with error (an exception event) if given."""
        self.latest_start_ns = max(self.latest_start_ns, t)
        self.spans += 1
        context = self.otel["trace"].set_span_in_context(parent)
        span = tracer.start_span(
            name, context=context, kind=getattr(self.otel["SpanKind"], kind), attributes=attributes, start_time=t
        )
        end = t + int(duration_ms * MS)
        if error is not None:
            span.record_exception(error, timestamp=end)
            span.set_status(self.otel["Status"](self.otel["StatusCode"].ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=end)


def search_flights(origin: str, destination: str, *, times_out: bool) -> list[dict[str, Any]]:
    """The sample app's flight search tool (the upstream API sometimes never answers)."""
    if times_out:
        raise TimeoutError(
            f"flights-api did not answer within {TOOL_TIMEOUT_MS} ms: "
            f"GET https://flights.example.com/v2/search?from={origin}&to={destination}"
        )
    return [{"from": origin, "to": destination, "price_eur": 420}]


def trip_summary(trip: dict[str, Any]) -> str:
    """The sample app's bug: trips without a hotel have hotel None."""
    return f"{trip['city']}: {trip['hotel']['name']}"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _spread(start: int, end: int, n: int) -> list[int]:
    """n timestamps evenly spread over [start, end)."""
    step = (end - start) // n
    return [start + i * step for i in range(n)]


def _counting(otel: dict[str, Any], inner: Any) -> Any:
    """The OTLP exporter, counting what it sent and what failed (the SDK only logs a failed export)."""
    success = otel["SpanExportResult"].SUCCESS

    class Counting(otel["SpanExporter"]):  # type: ignore[misc]
        def __init__(self) -> None:
            self.sent = self.failed = self.batches = 0

        def export(self, spans):  # noqa: ANN001, ANN202
            result = inner.export(spans)
            self.batches += 1
            if result == success:
                self.sent += len(spans)
            else:
                self.failed += len(spans)
            return result

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return Counting()
