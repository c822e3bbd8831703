"""Spans (or log records) per request, counted before any record is built: one huge request is refused, not decoded."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from loopkit_receivers.errors import TooLarge

# Real exporters batch 512 spans (the SDK's BatchSpanProcessor default); 1.8 million tiny spans in one 51 MiB
# request took 94 s to decode and left the server at 1.9 GB RSS.
MAX_SPANS_PER_REQUEST = 100_000


def check(count: int, limit: int = MAX_SPANS_PER_REQUEST) -> None:
    """TooLarge (413, RESOURCE_EXHAUSTED) when a request holds more than `limit` spans or records."""
    if count > limit:
        raise TooLarge(f"request holds {count} spans or records; at most {limit} are accepted per request")


def in_proto(request: ExportTraceServiceRequest) -> int:
    """Spans in a parsed request (repeated-field lengths only: no span is read)."""
    return sum(len(scope_spans.spans) for rs in request.resource_spans for scope_spans in rs.scope_spans)


def in_json(doc: Any) -> int:
    """Spans in an OTLP/JSON document; parts of the wrong shape count 0 (the decoder reports them)."""
    count = 0
    for resource_spans in _items(doc, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            count += len(_items(scope_spans, "spans", "spans"))
    return count


def logs_in_proto(request: ExportLogsServiceRequest) -> int:
    """Log records in a parsed request (repeated-field lengths only: no log record is read)."""
    return sum(len(scope_logs.log_records) for rl in request.resource_logs for scope_logs in rl.scope_logs)


def logs_in_json(doc: Any) -> int:
    """Log records in an OTLP/JSON logs document; parts of the wrong shape count 0 (the decoder reports them)."""
    count = 0
    for resource_logs in _items(doc, "resourceLogs", "resource_logs"):
        for scope_logs in _items(resource_logs, "scopeLogs", "scope_logs"):
            count += len(_items(scope_logs, "logRecords", "log_records"))
    return count


def _items(obj: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    value = obj.get(camel)
    if value is None:  # as the decoder reads it: the proto field name when the camelCase one is absent or null
        value = obj.get(snake)
    return value if isinstance(value, list) else []
