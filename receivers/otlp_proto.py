"""OTLP protobuf: an ExportTraceServiceRequest becomes Records, without any JSON in between."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from loopkit_core.model import rfc3339
from loopkit_receivers.errors import BadRequest
from loopkit_receivers.spans import Decoded, build_record, span_id_problem


def parse_request(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary ExportTraceServiceRequest; BadRequest when it is not one."""
    try:
        return ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise BadRequest(f"body is not a valid ExportTraceServiceRequest: {exc}") from exc


def decode(request: ExportTraceServiceRequest, project_id: str, received_ns: int) -> Decoded:
    """Every span of the request as a Record; spans with invalid IDs are rejected alone."""
    out = Decoded()
    append = out.records.append
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name") or "unknown_service")
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                problem = span_id_problem(span.trace_id, span.span_id, span.parent_span_id)
                if problem:
                    out.reject(f"span {span.name!r}: {problem}")
                    continue
                append(
                    build_record(
                        project_id,
                        trace_id=span.trace_id,
                        span_id=span.span_id,
                        parent_span_id=span.parent_span_id,
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        attributes=attributes(span.attributes),
                        events=[
                            {
                                "name": e.name,
                                "timestamp": rfc3339(e.time_unix_nano),
                                "attributes": attributes(e.attributes),
                            }
                            for e in span.events
                        ],
                        links=[
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        resource=resource,
                        service=service,
                        scope=scope,
                        received_ns=received_ns,
                    )
                )
    return out


def attributes(key_values: Any) -> dict[str, Any]:
    """Repeated KeyValue as a plain dict (later duplicates win, as in the SDKs)."""
    return {kv.key: any_value(kv.value) for kv in key_values}


def any_value(value: Any) -> Any:
    """An AnyValue as a JSON-ready Python value; bytes become base64 text."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None
