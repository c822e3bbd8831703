"""trip-planner: the demo's sample agent app, instrumented with the real OpenTelemetry SDK and OTLP/HTTP exporter.

Its traffic has four kinds of pain:

- the `search_flights` tool times out (tool failures, `gen_ai.operation.name = execute_tool`);
- the route `GET /trips/{trip_id}` throws a TypeError for trips without a hotel (errors);
- `GET /api/recommendations` got slow in version 1.4.0 (a new N+1 query): spans placed with explicit
  timestamps, fast ones 12-40 minutes ago (the latency detector's baseline: the hour before the window)
  and slow ones in the last 10 minutes;
- users press thumbs-down after the timeouts (spans with `loopkit.signal = user_signal`): 6 of 40 chats
  in the window against 2 of 200 healthy chats 12-40 minutes ago (the user_signals diagnoser's baseline).

Importing this module needs the OpenTelemetry SDK, its OTLP/HTTP exporter and requests (the `test` extra).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode
from requests import Session  # the OTLP/HTTP exporter's own HTTP client

SERVICE = "trip-planner"
WINDOW_MINUTES = 10  # the diagnosis window: the last 10 minutes
MINUTE_NS = 60 * 10**9
MS = 10**6
TOOL_TIMEOUT_MS = 8000
SEED = 20260101

# The window's traffic (the last 10 minutes, version 1.4.0).
LONG_HAUL = [("LHR", "JFK"), ("FRA", "SFO")]
SHORT_HAUL = [("CDG", "LIS"), ("AMS", "BCN")]
CHATS = 40  # POST /chat, each with an LLM call and two tool calls
TIMEOUTS = 10  # of them, search_flights timed out
THUMBS_DOWN = 6  # sessions with a timeout whose user pressed thumbs-down
TRIP_CALLS = 20  # GET /trips/{trip_id}
TRIP_FAILURES = 8  # of them, trips without a hotel: the route throws
SLOW_RECOMMENDATIONS = 40  # GET /api/recommendations, slow (the latency detector needs >= 30 in the window)
BASELINE_RECOMMENDATIONS = 120  # fast, 12-40 minutes ago (it needs >= 100 in the baseline)
BASELINE_CHATS = 200  # healthy POST /chat, 12-40 minutes ago (the user_signals diagnoser needs >= 30)
BASELINE_THUMBS_DOWN = 2  # of them rated thumbs-down: 1%, the operation's usual rate
# After the fix (version 1.4.1): enough calls that the old rates predict >= 5 occurrences.
FIXED_CHATS = 40  # 40 calls x 10/40 timeouts per call = 10 expected at the old rate
FIXED_RECOMMENDATIONS = 40


class ExportError(Exception):
    """The app's spans did not all reach LoopKit: an export failed, or the SDK did not flush or export them."""


class CountingExporter(SpanExporter):
    """An exporter that counts what the one it wraps sent and what failed (the SDK only logs a failed export)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.sent = self.failed = self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the wrapped exporter, counting the spans by outcome."""
        result = self.inner.export(spans)
        self.batches += 1
        if result == SpanExportResult.SUCCESS:
            self.sent += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing to flush: the wrapped exporter sends each batch as it is given."""
        return True


class TripPlanner:
    """A small travel agent app: POST /chat (an LLM and two tools), GET /trips/{trip_id}, GET /api/recommendations.

    Its code raises real exceptions; its spans are real OpenTelemetry SDK spans exported over OTLP/HTTP
    protobuf with the producer key. Timestamps are explicit so that an hour of traffic takes a second.
    """

    def __init__(self, endpoint: str, producer_key: str, say: Callable[[str], None]) -> None:
        self.endpoint = endpoint
        self.key = producer_key
        self.say = say
        self.rng = random.Random(SEED)
        self.latest_start_ns = 0
        self.spans = 0
        self.session = 0

    # -- phases --

    def baseline(self, now: int) -> None:
        """Version 1.3.0, 12-40 minutes ago: fast recommendations (the latency detector's baseline)."""
        start, end = now - 40 * MINUTE_NS, now - 12 * MINUTE_NS
        self.say(
            f"      v1.3.0, 40 to 12 min ago: {BASELINE_RECOMMENDATIONS} fast GET /api/recommendations, "
            f"{BASELINE_CHATS} healthy POST /chat ({BASELINE_THUMBS_DOWN} thumbs-down)\n"
            "        (the detectors' baseline: the hour before the window)"
        )
        unhappy = set(self.rng.sample(range(BASELINE_CHATS), BASELINE_THUMBS_DOWN))
        with self.phase("1.3.0") as tracer:
            for t in _spread(start, end, BASELINE_RECOMMENDATIONS):
                self.recommendations(tracer, t, slow=False)
            for i, t in enumerate(_spread(start + 2 * 10**9, end, BASELINE_CHATS)):
                session, ended = self.chat(tracer, t, flights_time_out=False)
                if i in unhappy:
                    self.thumbs_down(tracer, ended + 15 * 10**9, session)

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
        session = Session()
        session.trust_env = False  # loopback only: no proxy from the environment
        exporter = CountingExporter(
            OTLPSpanExporter(
                endpoint=self.endpoint, headers={"authorization": f"Bearer {self.key}"}, timeout=10, session=session
            )
        )
        resource = Resource.create(
            {"service.name": SERVICE, "service.version": version, "deployment.environment.name": "demo"}
        )
        # Explicit sampler: OTEL_TRACES_SAMPLER in the environment must not thin out the demo's traffic.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=4096, max_export_batch_size=256, schedule_delay_millis=200)
        )
        self.spans = 0
        try:
            yield provider.get_tracer("trip_planner", version)
            if not provider.force_flush(30_000):
                raise ExportError("the OpenTelemetry SDK did not flush its spans within 30 s")
        finally:
            provider.shutdown()
        if exporter.failed:
            raise ExportError(f"the OTLP/HTTP exporter failed to send {exporter.failed} span(s) to {self.endpoint}")
        if exporter.sent != self.spans:
            raise ExportError(
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
        # The flights API times out on long-haul searches only; most searches are short-haul.
        long_haul = flights_time_out or self.rng.random() < 1 / 6
        origin, destination = self.rng.choice(LONG_HAUL if long_haul else SHORT_HAUL)
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
        tool = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search_flights",
            "gen_ai.tool.call.arguments": json.dumps({"origin": origin, "destination": destination}),
            "flights.long_haul": long_haul,
        }
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
        if error is not None:
            # Without flights the agent cannot plan the trip: the chat fails too (a symptom of the tool's timeout).
            failed = RuntimeError("the trip could not be planned: search_flights failed")
            root.record_exception(failed, timestamp=end)
            root.set_status(Status(StatusCode.ERROR, f"RuntimeError: {failed}"))
        root.set_attribute("http.response.status_code", 502 if error is not None else 200)
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
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
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
        return tracer.start_span(name, kind=SpanKind[kind], attributes=attributes, start_time=t)

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
        context = trace.set_span_in_context(parent)
        span = tracer.start_span(name, context=context, kind=SpanKind[kind], attributes=attributes, start_time=t)
        end = t + int(duration_ms * MS)
        if error is not None:
            span.record_exception(error, timestamp=end)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
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


def _spread(start: int, end: int, n: int) -> list[int]:
    """n timestamps evenly spread over [start, end)."""
    step = (end - start) // n
    return [start + i * step for i in range(n)]
