"""Realistic, pre-built OTLP trace payloads for the ingest benchmark.

One deterministic stream of spans (web requests with database and HTTP client calls, and agent runs
with chat and tool-call spans carrying `gen_ai.*` attributes; about 10% errors with `exception`
events and stack traces; long-tailed durations; trace and span IDs unique across the run; traces
starting in time order, give or take two seconds, as exporters send them) is cut into batches and
serialised once per wire format, before any timing starts:

- `proto`: a binary `ExportTraceServiceRequest` (OTLP/HTTP protobuf and OTLP/gRPC send these bytes);
- `json`: OTLP/JSON (hex IDs, 64-bit integers as decimal strings, integer enums, lowerCamelCase);
- `records`: LoopKit's plain records shape `{"records": [...]}` with the same content;
- `logs-proto` / `logs-json`: the application's logs for the same work, one log record per span, as an
  `ExportLogsServiceRequest` (protobuf or OTLP/JSON): what a service's `logging` bridge exports beside its
  traces. Each log is correlated with its span (trace and span ID), from the service's own logger; an access
  or completion line at INFO, a slow call at WARN, a failure at ERROR with the exception's type, message and
  stack trace as `exception.*` attributes, and a few of the span's attributes (route, status, model, tool).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

Attr = str | int | float | bool | list[str]
Attrs = list[tuple[str, Attr]]
FORMATS = ("proto", "json", "records", "logs-proto", "logs-json")

_M64 = (1 << 64) - 1
JITTER_NS = 2 * 10**9  # how far a trace's start strays from the stream's clock
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_UNSET, STATUS_ERROR = 0, 2


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijection on 64-bit integers, so distinct inputs give distinct IDs."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass(slots=True)
class SpanSpec:
    """One span, independent of the wire format."""

    resource: int
    scope: int
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: Attrs
    events: list[tuple[str, int, Attrs]] = field(default_factory=list)
    record_type: str = "latency"  # the records shape has no plain "span" type
    message: str = ""


@dataclass(frozen=True)
class SampleSpan:
    """What the API must give back for one sent span (for the read-back check)."""

    span_id: str
    service: str
    name: str
    error: bool


@dataclass
class Payloads:
    """Serialised batches per format, plus facts about what they contain."""

    batches: dict[str, list[bytes]]
    spans: int
    batch_spans: int
    error_spans: int
    tool_spans: int
    sample: dict[str, list[SampleSpan]]  # trace ID (hex) -> its spans
    build_seconds: float

    def total_bytes(self, fmt: str) -> int:
        """Bytes of all batches of one format."""
        return sum(len(b) for b in self.batches[fmt])


# --------------------------------------------------------------------------------------------
# What the synthetic system looks like
# --------------------------------------------------------------------------------------------

WEB_SERVICES: dict[str, list[tuple[str, str, str]]] = {
    # service -> (method, route, concrete path template)
    "checkout-api": [
        ("POST", "/api/checkout", "/api/checkout"),
        ("GET", "/api/orders/{order_id}", "/api/orders/{id}"),
        ("POST", "/api/orders/{order_id}/refund", "/api/orders/{id}/refund"),
        ("GET", "/api/shipping/quote", "/api/shipping/quote"),
    ],
    "cart-service": [
        ("GET", "/cart/{cart_id}", "/cart/{id}"),
        ("POST", "/cart/{cart_id}/items", "/cart/{id}/items"),
        ("DELETE", "/cart/{cart_id}/items/{item_id}", "/cart/{id}/items/{id2}"),
    ],
    "search-api": [
        ("GET", "/search", "/search"),
        ("GET", "/products/{product_id}", "/products/{id}"),
        ("GET", "/suggest", "/suggest"),
    ],
    "payments": [
        ("POST", "/v2/payments", "/v2/payments"),
        ("POST", "/v2/payments/{payment_id}/capture", "/v2/payments/{id}/capture"),
    ],
    "auth-gateway": [
        ("POST", "/oauth/token", "/oauth/token"),
        ("GET", "/session", "/session"),
    ],
}
AGENT_SERVICES: dict[str, list[str]] = {
    # service -> tools its agent calls
    "support-agent": ["search_orders", "get_order_status", "issue_refund", "lookup_customer", "send_email"],
    "research-agent": ["web_search", "fetch_url", "summarise_document", "run_sql", "python_exec"],
}
MODELS = ["gpt-4o-2024-08-06", "gpt-4o-mini", "claude-sonnet-4", "llama-3.1-70b-instruct"]
TABLES = ["orders", "order_items", "customers", "carts", "products", "payments", "sessions", "inventory"]
HOSTS_PER_SERVICE = 2
QUERIES = {
    "SELECT": "SELECT id, tenant_id, status, payload FROM {table} WHERE id = $1 AND tenant_id = $2 LIMIT 50",
    "INSERT": "INSERT INTO {table} (id, tenant_id, status, payload) VALUES ($1, $2, $3, $4) RETURNING id",
    "UPDATE": "UPDATE {table} SET status = $1, updated_at = now() WHERE id = $2 AND tenant_id = $3",
}

# Faults: (exception type, message template, innermost frames). `{n}`, `{hex}`, `{id}` vary.
WEB_FAULTS = [
    ("TimeoutError", "upstream payments timed out after {n}ms (request_id={hex})", "payments_client.py"),
    ("ConnectionRefusedError", "[Errno 111] Connection refused: inventory:{n}", "inventory_client.py"),
    ("KeyError", "'shipping_address' missing for order {id}", "checkout.py"),
    ("ValueError", "invalid coupon code {hex} for cart {id}", "coupons.py"),
    (
        "sqlalchemy.exc.OperationalError",
        "(psycopg.errors.QueryCanceled) canceling statement due to statement "
        "timeout [SQL: SELECT * FROM orders WHERE id = {n}]",
        "repository.py",
    ),
]
DB_FAULTS = [
    ("psycopg.errors.QueryCanceled", "canceling statement due to statement timeout", "cursor.py"),
    (
        "psycopg.errors.UniqueViolation",
        'duplicate key value violates unique constraint "orders_pkey" DETAIL: Key (id)=({n}) already exists.',
        "cursor.py",
    ),
    (
        "psycopg.OperationalError",
        'connection to server at "10.0.3.{n}", port 5432 failed: timeout expired',
        "connection.py",
    ),
]
TOOL_FAULTS = [
    ("TimeoutError", "tool {tool} timed out after {n}s (call_id=call_{hex})", "tools.py"),
    ("httpx.HTTPStatusError", "Server error '502 Bad Gateway' for url 'https://internal/{tool}/{id}'", "_models.py"),
    ("PermissionError", "user {id} is not allowed to call {tool}", "policy.py"),
    ("json.decoder.JSONDecodeError", "Expecting value: line 1 column {n} (char {n})", "decoder.py"),
]
CHAT_FAULTS = [
    (
        "openai.RateLimitError",
        "Error code: 429 - Rate limit reached for requests (request id: req_{hex})",
        "_base_client.py",
    ),
    ("openai.APITimeoutError", "Request timed out after {n}s.", "_base_client.py"),
    ("anthropic.InternalServerError", "Error code: 529 - overloaded_error (request_id: req_{hex})", "_base_client.py"),
]


def _stacktrace(rng: random.Random, exc_type: str, message: str, leaf_file: str, service: str) -> str:
    pkg = service.replace("-", "_")
    frames = [
        ("/usr/local/lib/python3.12/site-packages/starlette/routing.py", 74, "app"),
        ("/usr/local/lib/python3.12/site-packages/starlette/_exception_handler.py", 42, "wrapped_app"),
        (f"/srv/{pkg}/{pkg}/api/handlers.py", rng.randint(40, 400), "handle"),
        (f"/srv/{pkg}/{pkg}/service.py", rng.randint(20, 300), "process"),
        (f"/srv/{pkg}/{pkg}/domain/workflow.py", rng.randint(10, 250), "run_step"),
        (f"/srv/{pkg}/{pkg}/clients/base.py", rng.randint(10, 120), "call"),
        (f"/usr/local/lib/python3.12/site-packages/lib/{leaf_file}", rng.randint(100, 1800), "_request"),
    ]
    lines = ["Traceback (most recent call last):"]
    for path, line, func in frames[: rng.randint(4, len(frames))]:
        lines.append(f'  File "{path}", line {line}, in {func}')
        lines.append(f"    result = {func}(ctx, *args, **kwargs)")
    lines.append(f"{exc_type}: {message}")
    return "\n".join(lines)


class SpanStream:
    """A deterministic stream of spans with IDs unique across the whole stream."""

    def __init__(self, seed: int, now_ns: int, history_seconds: float = 600.0, spans: int = 100_000) -> None:
        self.rng = random.Random(seed)
        self._trace_salt = self.rng.getrandbits(64)
        self._trace_salt2 = self.rng.getrandbits(64)
        self._span_salt = self.rng.getrandbits(64)
        self._traces = 0
        self._spans = 0
        # Traces start in time order across the stream, as exporters send what just finished: the clock walks
        # from `history_seconds` ago to now over `spans` spans, and each trace starts within a few seconds of it
        # (hosts' clocks and export delays differ). A batch therefore covers a few seconds, not the whole history.
        self._clock_ns = now_ns - int(history_seconds * 1e9) - 120 * 10**9
        self._step_ns = int(history_seconds * 1e9 / max(spans, 1))
        self.resources: list[Attrs] = []
        self.resource_service: list[str] = []
        self._resource_index: dict[tuple[str, int], int] = {}
        for service in [*WEB_SERVICES, *AGENT_SERVICES]:
            for host in range(HOSTS_PER_SERVICE):
                self._resource_index[(service, host)] = len(self.resources)
                self.resource_service.append(service)
                self.resources.append(self._resource(service, host))
        self.scopes: list[tuple[str, str]] = [
            ("opentelemetry.instrumentation.fastapi", "0.66b2"),
            ("opentelemetry.instrumentation.sqlalchemy", "0.66b2"),
            ("opentelemetry.instrumentation.httpx", "0.66b2"),
            ("opentelemetry.instrumentation.openai_v2", "2.1b0"),
            ("agents.tracing", "0.4.2"),
        ]

    def _resource(self, service: str, host: int) -> Attrs:
        rng = self.rng
        return [
            ("service.name", service),
            ("service.version", f"1.{rng.randint(0, 30)}.{rng.randint(0, 9)}"),
            ("service.namespace", "shop"),
            ("service.instance.id", f"{service}-{rng.getrandbits(40):010x}"),
            ("deployment.environment.name", "production"),
            ("host.name", f"ip-10-0-{rng.randint(0, 255)}-{rng.randint(0, 255)}"),
            ("cloud.provider", "aws"),
            ("cloud.region", "eu-west-1"),
            ("k8s.pod.name", f"{service}-{rng.getrandbits(32):08x}-{host}"),
            ("process.runtime.name", "cpython"),
            ("telemetry.sdk.name", "opentelemetry"),
            ("telemetry.sdk.language", "python"),
            ("telemetry.sdk.version", "1.45.2"),
        ]

    # ---- IDs -----------------------------------------------------------------------------
    def _trace_id(self) -> bytes:
        self._traces += 1
        high = mix64(self._trace_salt + self._traces)  # unique: mix64 is a bijection
        low = mix64(self._trace_salt2 ^ self._traces) or 1
        return high.to_bytes(8, "big") + low.to_bytes(8, "big")

    def _span_id(self) -> bytes:
        while True:
            self._spans += 1
            value = mix64(self._span_salt + self._spans)
            if value:
                return value.to_bytes(8, "big")

    # ---- helpers ---------------------------------------------------------------------------
    def _duration_ms(self, median_ms: float, sigma: float) -> float:
        """Log-normal with an extra 1% of very slow calls: a long tail like production."""
        rng = self.rng
        ms = rng.lognormvariate(math.log(median_ms), sigma)
        if rng.random() < 0.01:
            ms *= rng.uniform(10, 60)
        return ms

    def _fault(self, faults: list[tuple[str, str, str]], service: str, **extra: str) -> tuple[str, str, str]:
        rng = self.rng
        exc_type, template, leaf = rng.choice(faults)
        message = template.format(
            n=rng.randint(1, 60000), hex=f"{rng.getrandbits(48):012x}", id=rng.randint(10_000, 9_999_999), **extra
        )
        return exc_type, message, _stacktrace(rng, exc_type, message, leaf, service)

    def _fail(self, span: SpanSpec, exc_type: str, message: str, stack: str, record_type: str = "error") -> None:
        span.status_code = STATUS_ERROR
        span.status_message = f"{exc_type}: {message}"
        span.attributes.append(("error.type", exc_type))
        span.events.append(
            (
                "exception",
                span.end_ns - 1000,
                [
                    ("exception.type", exc_type),
                    ("exception.message", message),
                    ("exception.stacktrace", stack),
                    ("exception.escaped", True),
                ],
            )
        )
        span.record_type = record_type
        span.message = message

    def _span(self, resource: int, scope: int, trace_id: bytes, parent: bytes, name: str, kind: int,
              start_ns: int, duration_ms: float, attributes: Attrs) -> SpanSpec:  # fmt: skip
        return SpanSpec(
            resource=resource,
            scope=scope,
            trace_id=trace_id,
            span_id=self._span_id(),
            parent_id=parent,
            name=name,
            kind=kind,
            start_ns=start_ns,
            end_ns=start_ns + int(duration_ms * 1e6),
            status_code=STATUS_UNSET,
            status_message="",
            attributes=attributes,
        )

    # ---- traces ----------------------------------------------------------------------------
    def traces(self) -> Iterable[list[SpanSpec]]:
        """Endless traces: 70% web requests, 30% agent runs."""
        while True:
            trace = self._web_trace() if self.rng.random() < 0.7 else self._agent_trace()
            self._clock_ns += len(trace) * self._step_ns
            yield trace

    def _start_ns(self) -> int:
        return self._clock_ns + self.rng.randint(-JITTER_NS, JITTER_NS)

    def _web_trace(self) -> list[SpanSpec]:
        rng = self.rng
        service = rng.choice(list(WEB_SERVICES))
        resource = self._resource_index[(service, rng.randrange(HOSTS_PER_SERVICE))]
        method, route, template = rng.choice(WEB_SERVICES[service])
        path = template.format(id=rng.randint(1000, 999_999), id2=rng.randint(1, 500))
        trace_id = self._trace_id()
        user = f"user-{rng.randint(1, 50_000)}"
        session = f"{rng.getrandbits(64):016x}"
        start = self._start_ns()
        root = self._span(resource, 0, trace_id, b"", f"{method} {route}", KIND_SERVER, start, 0.0, [
            ("http.request.method", method),
            ("http.route", route),
            ("url.path", path),
            ("url.scheme", "https"),
            ("http.response.status_code", 200),
            ("server.address", f"{service}.shop.internal"),
            ("server.port", 8080),
            ("network.protocol.version", "1.1"),
            ("client.address", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
            ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"),
            ("user.id", user),
            ("session.id", session),
        ])  # fmt: skip
        spans = [root]
        cursor = start + int(rng.uniform(0.2, 2.0) * 1e6)
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.7:
                table = rng.choice(TABLES)
                op = rng.choice(["SELECT", "SELECT", "SELECT", "INSERT", "UPDATE"])
                child = self._span(resource, 1, trace_id, root.span_id, f"{op} {table}", KIND_CLIENT, cursor,
                                   self._duration_ms(2.5, 1.0), [
                    ("db.system.name", "postgresql"),
                    ("db.namespace", "shop"),
                    ("db.operation.name", op),
                    ("db.collection.name", table),
                    ("db.query.text", QUERIES[op].format(table=table)),
                    ("server.address", "pg-primary.shop.internal"),
                    ("server.port", 5432),
                    ("network.peer.address", f"10.0.3.{rng.randint(1, 254)}"),
                    ("db.response.returned_rows", rng.randint(0, 50)),
                    ("db.client.connection.pool.name", "default"),
                    ("thread.name", f"worker-{rng.randint(0, 15)}"),
                    ("code.function.name", f"repository.{op.lower()}_{table}"),
                ])  # fmt: skip
                if rng.random() < 0.05:
                    self._fail(child, *self._fault(DB_FAULTS, service))
            else:
                target = rng.choice(list(WEB_SERVICES))
                t_method, t_route, t_template = rng.choice(WEB_SERVICES[target])
                url = f"https://{target}.shop.internal{t_template.format(id=rng.randint(1, 99999), id2=1)}"
                child = self._span(resource, 2, trace_id, root.span_id, t_method, KIND_CLIENT, cursor,
                                   self._duration_ms(12.0, 0.9), [
                    ("http.request.method", t_method),
                    ("url.full", url),
                    ("server.address", f"{target}.shop.internal"),
                    ("server.port", 443),
                    ("http.response.status_code", 200),
                    ("network.protocol.version", "2"),
                    ("http.request.resend_count", 0),
                    ("peer.service", target),
                    ("http.request.body.size", rng.randint(0, 4096)),
                    ("http.response.body.size", rng.randint(100, 65536)),
                    ("user.id", user),
                    ("session.id", session),
                ])  # fmt: skip
                if rng.random() < 0.05:
                    child.attributes[4] = ("http.response.status_code", rng.choice([500, 502, 503, 504]))
                    self._fail(child, *self._fault(WEB_FAULTS, service))
            spans.append(child)
            cursor = child.end_ns + int(rng.uniform(0.05, 1.0) * 1e6)
        root.end_ns = cursor + int(self._duration_ms(3.0, 0.8) * 1e6)
        # Root errors: together with the child rates this keeps about 10% of all spans in error.
        if rng.random() < 0.17 or any(s.status_code == STATUS_ERROR for s in spans[1:]) and rng.random() < 0.5:
            root.attributes[4] = ("http.response.status_code", rng.choice([500, 500, 502, 503]))
            self._fail(root, *self._fault(WEB_FAULTS, service))
        return spans

    def _agent_trace(self) -> list[SpanSpec]:
        rng = self.rng
        service = rng.choice(list(AGENT_SERVICES))
        resource = self._resource_index[(service, rng.randrange(HOSTS_PER_SERVICE))]
        trace_id = self._trace_id()
        model = rng.choice(MODELS)
        conversation = f"conv_{rng.getrandbits(64):016x}"
        user = f"user-{rng.randint(1, 50_000)}"
        start = self._start_ns()
        agent_name = service.removesuffix("-agent")
        total_in = total_out = 0
        root = self._span(resource, 4, trace_id, b"", f"invoke_agent {agent_name}", KIND_INTERNAL, start, 0.0, [
            ("gen_ai.operation.name", "invoke_agent"),
            ("gen_ai.agent.name", agent_name),
            ("gen_ai.agent.id", f"asst_{rng.getrandbits(48):012x}"),
            ("gen_ai.provider.name", "openai" if model.startswith("gpt") else "anthropic"),
            ("gen_ai.request.model", model),
            ("gen_ai.conversation.id", conversation),
            ("session.id", conversation),
            ("user.id", user),
            ("gen_ai.usage.input_tokens", 0),
            ("gen_ai.usage.output_tokens", 0),
            ("app.turn", rng.randint(1, 12)),
            ("app.feature_flags", ["new-planner", "tool-retries"]),
        ])  # fmt: skip
        spans = [root]
        cursor = start + int(rng.uniform(1, 5) * 1e6)
        for step in range(rng.randint(1, 4)):
            in_tokens, out_tokens = rng.randint(200, 12_000), rng.randint(10, 900)
            total_in += in_tokens
            total_out += out_tokens
            chat = self._span(resource, 3, trace_id, root.span_id, f"chat {model}", KIND_CLIENT, cursor,
                              self._duration_ms(850.0, 0.6), [
                ("gen_ai.operation.name", "chat"),
                ("gen_ai.provider.name", "openai" if model.startswith("gpt") else "anthropic"),
                ("gen_ai.request.model", model),
                ("gen_ai.response.model", model),
                ("gen_ai.request.temperature", round(rng.uniform(0, 1), 2)),
                ("gen_ai.request.max_tokens", 4096),
                ("gen_ai.usage.input_tokens", in_tokens),
                ("gen_ai.usage.output_tokens", out_tokens),
                ("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(96):024x}"),
                ("gen_ai.response.finish_reasons", ["tool_calls" if step else "stop"]),
                ("gen_ai.conversation.id", conversation),
                ("server.address", "api.openai.com" if model.startswith("gpt") else "api.anthropic.com"),
            ])  # fmt: skip
            if rng.random() < 0.06:
                self._fail(chat, *self._fault(CHAT_FAULTS, service))
            spans.append(chat)
            cursor = chat.end_ns + int(rng.uniform(0.1, 3) * 1e6)
            for _ in range(rng.randint(0, 2)):
                tool = rng.choice(AGENT_SERVICES[service])
                call = self._span(resource, 4, trace_id, root.span_id, f"execute_tool {tool}", KIND_INTERNAL,
                                  cursor, self._duration_ms(120.0, 1.1), [
                    ("gen_ai.operation.name", "execute_tool"),
                    ("gen_ai.tool.name", tool),
                    ("gen_ai.tool.call.id", f"call_{rng.getrandbits(96):024x}"),
                    ("gen_ai.tool.type", "function"),
                    ("gen_ai.tool.description", f"{tool.replace('_', ' ').capitalize()} for the current user"),
                    ("gen_ai.agent.name", agent_name),
                    ("gen_ai.conversation.id", conversation),
                    ("session.id", conversation),
                    ("user.id", user),
                    ("app.tool.arguments_size", rng.randint(20, 2000)),
                    ("app.tool.result_size", rng.randint(0, 40_000)),
                    ("app.tool.retry", rng.random() < 0.05),
                ])  # fmt: skip
                if rng.random() < 0.15:
                    self._fail(call, *self._fault(TOOL_FAULTS, service, tool=tool), record_type="tool_failure")
                spans.append(call)
                cursor = call.end_ns + int(rng.uniform(0.1, 2) * 1e6)
        root.end_ns = cursor + int(rng.uniform(1, 20) * 1e6)
        root.attributes[8] = ("gen_ai.usage.input_tokens", total_in)
        root.attributes[9] = ("gen_ai.usage.output_tokens", total_out)
        if rng.random() < 0.10:
            self._fail(root, *self._fault(TOOL_FAULTS, service, tool=rng.choice(AGENT_SERVICES[service])))
        return spans


# --------------------------------------------------------------------------------------------
# Wire formats
# --------------------------------------------------------------------------------------------


def _pb_value(value: Attr) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value]))
    return AnyValue(string_value=value)


def _pb_attrs(attrs: Attrs) -> list[KeyValue]:
    return [KeyValue(key=k, value=_pb_value(v)) for k, v in attrs]


def _json_value(value: Attr) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # proto3 JSON: int64 as a decimal string
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [{"stringValue": v} for v in value]}}
    return {"stringValue": value}


def _json_attrs(attrs: Attrs) -> list[dict[str, Any]]:
    return [{"key": k, "value": _json_value(v)} for k, v in attrs]


def _groups(spans: list[SpanSpec]) -> dict[int, dict[int, list[SpanSpec]]]:
    """Spans grouped by resource, then scope, in order of first appearance (as a collector batches)."""
    groups: dict[int, dict[int, list[SpanSpec]]] = {}
    for span in spans:
        groups.setdefault(span.resource, {}).setdefault(span.scope, []).append(span)
    return groups


def to_proto(stream: SpanStream, spans: list[SpanSpec]) -> bytes:
    """A binary ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    for resource, scopes in _groups(spans).items():
        rs = ResourceSpans(resource=Resource(attributes=_pb_attrs(stream.resources[resource])))
        for scope, members in scopes.items():
            name, version = stream.scopes[scope]
            ss = ScopeSpans(scope=InstrumentationScope(name=name, version=version))
            ss.spans.extend(
                Span(
                    trace_id=s.trace_id,
                    span_id=s.span_id,
                    parent_span_id=s.parent_id,
                    name=s.name,
                    kind=s.kind,  # type: ignore[arg-type]
                    start_time_unix_nano=s.start_ns,
                    end_time_unix_nano=s.end_ns,
                    attributes=_pb_attrs(s.attributes),
                    events=[Span.Event(time_unix_nano=t, name=n, attributes=_pb_attrs(a)) for n, t, a in s.events],
                    status=Status(code=s.status_code, message=s.status_message),  # type: ignore[arg-type]
                )
                for s in members
            )
            rs.scope_spans.append(ss)
        request.resource_spans.append(rs)
    return request.SerializeToString()


def to_otlp_json(stream: SpanStream, spans: list[SpanSpec]) -> bytes:
    """OTLP/JSON: hex IDs, 64-bit integers as strings, integer enums."""
    resource_spans = []
    for resource, scopes in _groups(spans).items():
        scope_spans = []
        for scope, members in scopes.items():
            name, version = stream.scopes[scope]
            json_spans = []
            for s in members:
                span: dict[str, Any] = {
                    "traceId": s.trace_id.hex(),
                    "spanId": s.span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "startTimeUnixNano": str(s.start_ns),
                    "endTimeUnixNano": str(s.end_ns),
                    "attributes": _json_attrs(s.attributes),
                }
                if s.parent_id:
                    span["parentSpanId"] = s.parent_id.hex()
                if s.events:
                    span["events"] = [
                        {"timeUnixNano": str(t), "name": n, "attributes": _json_attrs(a)} for n, t, a in s.events
                    ]
                span["status"] = {"code": s.status_code, "message": s.status_message} if s.status_code else {}
                json_spans.append(span)
            scope_spans.append({"scope": {"name": name, "version": version}, "spans": json_spans})
        resource_spans.append(
            {"resource": {"attributes": _json_attrs(stream.resources[resource])}, "scopeSpans": scope_spans}
        )
    return orjson.dumps({"resourceSpans": resource_spans})


def to_records(stream: SpanStream, spans: list[SpanSpec]) -> bytes:
    """The plain records shape with the same content (exception details become attributes)."""
    records = []
    for s in spans:
        attrs: dict[str, Any] = dict(s.attributes)
        attrs["span.kind"] = s.kind
        if s.parent_id:
            attrs["parent_span_id"] = s.parent_id.hex()
        for _, _, event_attrs in s.events:
            attrs.update(event_attrs)
        resource = dict(stream.resources[s.resource])
        attrs["service.version"] = resource["service.version"]
        attrs["host.name"] = resource["host.name"]
        record: dict[str, Any] = {
            "type": s.record_type,
            "name": s.name,
            "timestamp": s.start_ns,
            "duration_ms": (s.end_ns - s.start_ns) / 1e6,
            "status": "error" if s.status_code == STATUS_ERROR else "unset",
            "trace_id": s.trace_id.hex(),
            "span_id": s.span_id.hex(),
            "service": stream.resource_service[s.resource],
            "attributes": attrs,
        }
        if s.message:
            record["message"] = s.message
        session = attrs.get("session.id")
        if isinstance(session, str):
            record["session_id"] = session
        user = attrs.get("user.id")
        if isinstance(user, str):
            record["user_id"] = user
        records.append(record)
    return orjson.dumps({"records": records})


# Span attributes a service's log line repeats (the rest stay on the span).
LOG_KEYS = ("http.route", "http.request.method", "http.response.status_code", "db.system", "db.operation.name",
            "gen_ai.request.model", "gen_ai.tool.name", "session.id", "user.id")  # fmt: skip
SEVERITY = {9: "INFO", 13: "WARN", 17: "ERROR"}


@dataclass(slots=True)
class LogSpec:
    """The log record a span's work writes, independent of the wire format."""

    logger: str
    time_ns: int
    severity: int
    body: str
    attributes: Attrs


def log_of(stream: SpanStream, s: SpanSpec) -> LogSpec:
    """The log line of one span: completion at INFO, slow at WARN (over 1 s), failure at ERROR with the exception."""
    service = stream.resource_service[s.resource]
    component = stream.scopes[s.scope][0].rsplit(".", 1)[-1]
    ms = (s.end_ns - s.start_ns) / 1e6
    attrs: Attrs = [(k, v) for k, v in s.attributes if k in LOG_KEYS]
    attrs += [("code.function.name", f"{component}.handle"), ("thread.name", f"worker-{s.span_id[0] % 8}")]
    if s.status_code == STATUS_ERROR:
        for _, _, event_attrs in s.events:
            attrs += event_attrs
        return LogSpec(f"{service}.{component}", s.end_ns, 17, f"{s.name} failed: {s.status_message}", attrs)
    if ms > 1000:
        return LogSpec(f"{service}.{component}", s.end_ns, 13, f"{s.name} slow: took {ms:.0f} ms", attrs)
    return LogSpec(f"{service}.{component}", s.end_ns, 9, f"{s.name} completed in {ms:.1f} ms", attrs)


def to_logs_proto(stream: SpanStream, spans: list[SpanSpec]) -> bytes:
    """A binary ExportLogsServiceRequest: one correlated log record per span, grouped by resource and logger."""
    request = ExportLogsServiceRequest()
    for resource, scopes in _groups(spans).items():
        rl = ResourceLogs(resource=Resource(attributes=_pb_attrs(stream.resources[resource])))
        by_logger: dict[str, list[tuple[SpanSpec, LogSpec]]] = {}
        for members in scopes.values():
            for s in members:
                spec = log_of(stream, s)
                by_logger.setdefault(spec.logger, []).append((s, spec))
        for logger, logs in by_logger.items():
            sl = ScopeLogs(scope=InstrumentationScope(name=logger))
            sl.log_records.extend(
                LogRecord(
                    time_unix_nano=spec.time_ns,
                    observed_time_unix_nano=spec.time_ns + 250_000,
                    severity_number=spec.severity,  # type: ignore[arg-type]
                    severity_text=SEVERITY[spec.severity],
                    body=AnyValue(string_value=spec.body),
                    attributes=_pb_attrs(spec.attributes),
                    trace_id=s.trace_id,
                    span_id=s.span_id,
                    flags=1,
                )
                for s, spec in logs
            )
            rl.scope_logs.append(sl)
        request.resource_logs.append(rl)
    return request.SerializeToString()


def to_logs_json(stream: SpanStream, spans: list[SpanSpec]) -> bytes:
    """The same log records as OTLP/JSON (hex IDs, 64-bit integers as strings)."""
    resource_logs = []
    for resource, scopes in _groups(spans).items():
        by_logger: dict[str, list[dict[str, Any]]] = {}
        for members in scopes.values():
            for s in members:
                spec = log_of(stream, s)
                by_logger.setdefault(spec.logger, []).append(
                    {
                        "timeUnixNano": str(spec.time_ns),
                        "observedTimeUnixNano": str(spec.time_ns + 250_000),
                        "severityNumber": spec.severity,
                        "severityText": SEVERITY[spec.severity],
                        "body": {"stringValue": spec.body},
                        "attributes": _json_attrs(spec.attributes),
                        "traceId": s.trace_id.hex(),
                        "spanId": s.span_id.hex(),
                        "flags": 1,
                    }
                )
        resource_logs.append(
            {
                "resource": {"attributes": _json_attrs(stream.resources[resource])},
                "scopeLogs": [{"scope": {"name": n}, "logRecords": logs} for n, logs in by_logger.items()],
            }
        )
    return orjson.dumps({"resourceLogs": resource_logs})


SERIALISERS = {
    "proto": to_proto,
    "json": to_otlp_json,
    "records": to_records,
    "logs-proto": to_logs_proto,
    "logs-json": to_logs_json,
}


def build(spans: int, batch_spans: int, formats: Iterable[str], seed: int = 1, sample_traces: int = 25) -> Payloads:
    """Generate `spans` spans once and serialise every batch in each requested format."""
    started = time.perf_counter()
    wanted = [f for f in FORMATS if f in set(formats)]
    stream = SpanStream(seed, time.time_ns(), spans=spans)
    out: dict[str, list[bytes]] = {f: [] for f in wanted}
    # Sample traces spread over the run for the read-back check.
    approx_traces = max(spans // 5, 1)
    every = max(approx_traces // max(sample_traces, 1), 1)
    sample: dict[str, list[SampleSpan]] = {}
    pending: list[SpanSpec] = []
    produced = errors = tools = 0

    def flush(batch: list[SpanSpec]) -> None:
        for fmt in wanted:
            out[fmt].append(SERIALISERS[fmt](stream, batch))

    for trace_no, whole_trace in enumerate(stream.traces(), start=1):
        if produced >= spans:
            break
        trace = whole_trace[: spans - produced]
        if trace_no % every == 0 and len(sample) < sample_traces:
            sample[trace[0].trace_id.hex()] = [
                SampleSpan(s.span_id.hex(), stream.resource_service[s.resource], s.name, s.status_code == STATUS_ERROR)
                for s in trace
            ]
        for s in trace:
            errors += s.status_code == STATUS_ERROR
            tools += s.name.startswith("execute_tool")
        produced += len(trace)
        pending.extend(trace)
        while len(pending) >= batch_spans:
            flush(pending[:batch_spans])
            pending = pending[batch_spans:]
    if pending:
        flush(pending)
    return Payloads(
        batches=out,
        spans=produced,
        batch_spans=batch_spans,
        error_spans=errors,
        tool_spans=tools,
        sample=sample,
        build_seconds=time.perf_counter() - started,
    )


TRACE_ID_MODES = ("random", "stamped")


def round_trace_id(trace_id_hex: str, rnd: int, mode: str = "random") -> str:
    """The hex trace ID a benchmark sends in round `rnd` for one of the payload's trace IDs.

    random: a keyed BLAKE2b of the ID and the round, random-looking as exporters' W3C trace IDs are (each lands
    anywhere in the store's trace index). stamped: the round in the first two bytes (what the benchmarks did
    before 2026-12-06; a round's traces then share a prefix and sit side by side in that index, which flatters it).
    """
    if mode == "stamped":
        return f"{rnd:04x}{trace_id_hex[4:]}"
    return hashlib.blake2b(bytes.fromhex(trace_id_hex), digest_size=16, salt=rnd.to_bytes(16, "big")).hexdigest()
