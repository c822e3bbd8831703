"""The real OpenTelemetry Python exporters (OTLP/gRPC plain and gzip, OTLP/HTTP protobuf) round-trip spans."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from conftest import make_settings
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from loopkit_core.server import in_thread

RECORD_ID = re.compile(r"^rec_[0-9a-f]{24}$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRANSPORTS = ["grpc", "grpc-gzip", "http-protobuf", "http-protobuf-gzip", "http-protobuf-deflate"]
STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
KINDS = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
# Span name -> the signal type LoopKit must derive for it.
EXPECTED_TYPES = {
    "POST /checkout": "span",
    "db.query": "span",
    "tool search_flights": "tool_failure",
    "tool get_weather": "span",
    "charge card": "error",
    "cache.get": "error",
    "feedback": "user_signal",
    "batch.consume": "span",
}


def make_exporter(transport, server, key):
    """A real OTLP exporter pointed at the loopback server, sending the producer key."""
    headers = {"authorization": f"Bearer {key}"}
    if transport.startswith("grpc"):
        compression = grpc.Compression.Gzip if transport == "grpc-gzip" else grpc.Compression.NoCompression
        return GrpcSpanExporter(
            endpoint=server.grpc_target, insecure=True, headers=headers, timeout=10, compression=compression
        )
    compression = {
        "http-protobuf": HttpCompression.NoCompression,
        "http-protobuf-gzip": HttpCompression.Gzip,
        "http-protobuf-deflate": HttpCompression.Deflate,
    }[transport]
    return HttpSpanExporter(
        endpoint=f"{server.http_url}/v1/traces", headers=headers, timeout=10, compression=compression
    )


def emit_spans(provider):
    """A small agent request: a server span, a child, tool calls, exceptions, a user signal, a link."""
    tracer = provider.get_tracer("loopkit.tests.exporters", "1.2.3")
    with tracer.start_as_current_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        attributes={
            "http.route": "/checkout",
            "http.request.method": "POST",
            "http.response.status_code": 200,
            "session.id": "sess-42",
            "user.id": "user-7",
            "cart.total": 99.5,
            "cart.retry": False,
            "cart.items": ["sku-1", "sku-2"],
            "cart.sizes": [1, 2, 3],
        },
    ):
        with tracer.start_as_current_span(
            "db.query", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite", "db.rows": 3}
        ) as child:
            child.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span(
            "tool search_flights",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search_flights",
                "gen_ai.tool.call.id": "call_0001",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "tool timed out after 30s"))
        with tracer.start_as_current_span(
            "tool get_weather", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"}
        ):
            pass
        try:
            with tracer.start_as_current_span("charge card", attributes={"payment.provider": "acme"}):
                raise ValueError("card 4242 declined")
        except ValueError:
            pass
        with tracer.start_as_current_span("cache.get") as cache:
            # An exception event without an error status is still an error signal.
            cache.record_exception(KeyError("cart:42"))
        with tracer.start_as_current_span("feedback", attributes={"loopkit.signal": "user_signal", "score": -1}):
            pass
        with tracer.start_as_current_span(
            "batch.consume", kind=SpanKind.CONSUMER, links=[Link(child.get_span_context(), {"link.reason": "retry"})]
        ):
            pass


def plain(value):
    """An SDK attribute value as JSON reads it back (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def plain_attrs(attributes):
    return {k: plain(v) for k, v in (attributes or {}).items()}


def ns_of(text):
    """RFC 3339 text as unix nanoseconds (microsecond precision)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt - EPOCH) // timedelta(microseconds=1) * 1000


def read_all(client, project):
    """Every record of the project from the last hour, through the agent API, keyed by span_id."""
    response = client.get("/v1/telemetry", params={"limit": 1000}, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    records = body["records"]
    by_span = {r["span_id"]: r for r in records}
    assert len(by_span) == len(records), "a span was stored twice"
    return by_span


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One LoopKit for the module; every test gets its own project, so tests stay independent."""
    with in_thread(make_settings(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture
def sdk():
    """A private TracerProvider (never the global one) with an in-memory copy of every finished span."""
    resource = Resource.create(
        {"service.name": "checkout-api", "service.version": "2.0.1", "deployment.environment.name": "test"}
    )
    provider = TracerProvider(resource=resource)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_real_exporter_round_trip(transport, server, project, client, sdk):
    provider, memory = sdk
    exporter = make_exporter(transport, server, project.producer_key)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emit_spans(provider)
    spans = memory.get_finished_spans()
    assert sorted(s.name for s in spans) == sorted(EXPECTED_TYPES)

    stored = read_all(client, project)
    assert len(stored) == len(spans)
    for span in spans:
        ctx = span.get_span_context()
        record = stored[f"{ctx.span_id:016x}"]
        assert RECORD_ID.match(record["record_id"]), record["record_id"]
        assert record["trace_id"] == f"{ctx.trace_id:032x}"
        assert record["parent_span_id"] == (f"{span.parent.span_id:016x}" if span.parent else None)
        assert record["name"] == span.name
        assert record["type"] == EXPECTED_TYPES[span.name]
        assert record["status"] == STATUS[span.status.status_code]
        assert record["kind"] == KINDS[span.kind]
        assert record["scope"] == "loopkit.tests.exporters"
        assert record["service"] == "checkout-api"
        assert record["resource"] == plain_attrs(provider.resource.attributes)
        assert record["resource"]["deployment.environment.name"] == "test"
        assert record["attributes"] == plain_attrs(span.attributes)
        assert record["timestamp_unix_nano"] == span.start_time
        assert abs(ns_of(record["timestamp"]) - span.start_time) <= 1000
        assert abs(ns_of(record["end_timestamp"]) - span.end_time) <= 1000
        assert record["duration_ms"] == pytest.approx((span.end_time - span.start_time) / 1e6, abs=1e-6)
        assert record["duration_ms"] > 0
        assert len(record["events"]) == len(span.events)
        for got, event in zip(record["events"], span.events, strict=True):
            assert got["name"] == event.name
            assert got["attributes"] == plain_attrs(event.attributes)
            assert abs(ns_of(got["timestamp"]) - event.timestamp) <= 1000
        assert [(link["trace_id"], link["span_id"], link["attributes"]) for link in record["links"]] == [
            (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}", plain_attrs(link.attributes))
            for link in span.links
        ]
        # /v1/records/{id} serves the very same record.
        one = client.get(f"/v1/records/{record['record_id']}", headers=project.auth("agent"))
        assert one.status_code == 200
        assert one.json()["record"] == record

    by_name = {r["name"]: r for r in stored.values()}
    root = by_name["POST /checkout"]
    assert (root["session_id"], root["user_id"], root["parent_span_id"]) == ("sess-42", "user-7", None)
    assert by_name["db.query"]["parent_span_id"] == root["span_id"]
    assert len({r["trace_id"] for r in stored.values()}) == 1
    tool = by_name["tool search_flights"]
    assert (tool["status"], tool["message"]) == ("error", "tool timed out after 30s")
    charge = by_name["charge card"]
    assert (charge["status"], charge["message"], charge["exception_type"]) == (
        "error",
        "card 4242 declined",
        "ValueError",
    )
    assert charge["events"][0]["name"] == "exception"
    assert "ValueError: card 4242 declined" in charge["events"][0]["attributes"]["exception.stacktrace"]
    cache = by_name["cache.get"]
    assert (cache["status"], cache["exception_type"], cache["message"]) == ("unset", "KeyError", "'cart:42'")

    # Clients re-send after timeouts: the same spans again are stored once and keep their IDs.
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    again = read_all(client, project)
    assert {k: r["record_id"] for k, r in again.items()} == {k: r["record_id"] for k, r in stored.items()}


@pytest.mark.parametrize("transport", ["grpc", "http-protobuf"])
def test_real_exporter_with_agent_key_is_refused(transport, server, project, client, sdk):
    provider, memory = sdk
    tracer = provider.get_tracer("loopkit.tests.exporters")
    with tracer.start_as_current_span("refused"):
        pass
    exporter = make_exporter(transport, server, project.agent_key)
    try:
        assert exporter.export(memory.get_finished_spans()) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert read_all(client, project) == {}
