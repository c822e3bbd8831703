"""OTLP protobuf logs: an ExportLogsServiceRequest becomes Records, without any JSON in between."""

from __future__ import annotations

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from loopkit_receivers import span_count
from loopkit_receivers.errors import BadRequest
from loopkit_receivers.log_records import build_log, id_problem
from loopkit_receivers.otlp_proto import any_value, attributes
from loopkit_receivers.spans import Decoded


def parse_request(body: bytes) -> ExportLogsServiceRequest:
    """Parse a binary ExportLogsServiceRequest; BadRequest when it is not one."""
    try:
        return ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise BadRequest(f"body is not a valid ExportLogsServiceRequest: {exc}") from exc


def decode(
    request: ExportLogsServiceRequest,
    project_id: str,
    received_ns: int,
    max_records: int = span_count.MAX_SPANS_PER_REQUEST,
) -> Decoded:
    """Every log record of the request as a Record; log records with invalid IDs are rejected alone."""
    span_count.check(span_count.logs_in_proto(request), max_records)
    out = Decoded(unit="log record")
    append = out.records.append
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        resource_json = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        service = str(resource.get("service.name") or "unknown_service")
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name
            for log in scope_logs.log_records:
                trace_id, span_id = log.trace_id, log.span_id
                problem = id_problem(trace_id, span_id)
                if problem:
                    out.reject(f"log record of {scope or 'no scope'!r}: {problem}")
                    continue
                append(
                    build_log(
                        project_id,
                        log.time_unix_nano,
                        log.observed_time_unix_nano,
                        log.severity_number,
                        log.severity_text,
                        any_value(log.body) if log.HasField("body") else None,
                        attributes(log.attributes),
                        trace_id,
                        span_id,
                        log.event_name,
                        resource,
                        resource_json,
                        service,
                        scope,
                        received_ns,
                    )
                )
    return out
