"""OTLP/JSON logs: a parsed ExportLogsServiceRequest document becomes Records (hex IDs, int64 strings, enums)."""

from __future__ import annotations

from typing import Any

import orjson

from loopkit_receivers import span_count
from loopkit_receivers.errors import BadRequest
from loopkit_receivers.log_records import build_log, id_problem
from loopkit_receivers.otlp_json import any_value, attributes, get, hex_id, json_list, json_obj, text, uint64
from loopkit_receivers.spans import Decoded

# SeverityNumber's enum names, which proto3 JSON may use instead of the number.
_SEVERITY_NAMES = {"SEVERITY_NUMBER_UNSPECIFIED": 0} | {
    f"SEVERITY_NUMBER_{level}{n if n > 1 else ''}": base + n - 1
    for level, base in (("TRACE", 1), ("DEBUG", 5), ("INFO", 9), ("WARN", 13), ("ERROR", 17), ("FATAL", 21))
    for n in range(1, 5)
}


def decode(doc: Any, project_id: str, received_ns: int, max_records: int = span_count.MAX_SPANS_PER_REQUEST) -> Decoded:
    """Every log record of an OTLP/JSON ExportLogsServiceRequest; BadRequest for a malformed document."""
    span_count.check(span_count.logs_in_json(doc), max_records)
    top = json_obj(doc, "request")
    out = Decoded(unit="log record")
    for i, resource_logs in enumerate(json_list(get(top, "resourceLogs", "resource_logs"), "resourceLogs")):
        where = f"resourceLogs[{i}]"
        resource_logs = json_obj(resource_logs, where)
        resource_obj = json_obj(resource_logs.get("resource"), where, ".resource", optional=True)
        resource = attributes(resource_obj.get("attributes"), where, ".resource.attributes")
        resource_json = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        service = str(resource.get("service.name") or "unknown_service")
        for j, scope_logs in enumerate(json_list(get(resource_logs, "scopeLogs", "scope_logs"), where)):
            swhere = f"{where}.scopeLogs[{j}]"
            scope_logs = json_obj(scope_logs, swhere)
            scope_obj = json_obj(scope_logs.get("scope"), swhere, ".scope", optional=True)
            scope = text(scope_obj.get("name"), swhere, ".scope.name")
            for k, log in enumerate(json_list(get(scope_logs, "logRecords", "log_records"), swhere, ".logRecords")):
                lwhere = f"{swhere}.logRecords[{k}]"
                _log(
                    out, json_obj(log, lwhere), lwhere, project_id, resource, resource_json, service, scope, received_ns
                )
    return out


def _log(
    out: Decoded,
    log: dict[str, Any],
    where: str,
    project_id: str,
    resource: dict[str, Any],
    resource_json: bytes,
    service: str,
    scope: str,
    received_ns: int,
) -> None:
    time_ns = uint64(get(log, "timeUnixNano", "time_unix_nano"), where, ".timeUnixNano")
    observed_ns = uint64(get(log, "observedTimeUnixNano", "observed_time_unix_nano"), where, ".observedTimeUnixNano")
    severity_number = _severity(get(log, "severityNumber", "severity_number"), where)
    severity_text = text(get(log, "severityText", "severity_text"), where, ".severityText")
    body = any_value(log.get("body"), f"{where}.body", 0)
    attrs = attributes(log.get("attributes"), where, ".attributes")
    event_name = text(get(log, "eventName", "event_name"), where, ".eventName")
    try:
        trace_id = hex_id(get(log, "traceId", "trace_id"), where, ".traceId")
        span_id = hex_id(get(log, "spanId", "span_id"), where, ".spanId")
    except ValueError as exc:
        out.reject(f"log record of {scope or 'no scope'!r}: {exc}")
        return
    problem = id_problem(trace_id, span_id)
    if problem:
        out.reject(f"log record of {scope or 'no scope'!r}: {problem}")
        return
    out.records.append(
        build_log(
            project_id,
            time_ns,
            observed_ns,
            severity_number,
            severity_text,
            body,
            attrs,
            trace_id,
            span_id,
            event_name,
            resource,
            resource_json,
            service,
            scope,
            received_ns,
        )
    )


def _severity(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value in _SEVERITY_NAMES:
        return _SEVERITY_NAMES[value]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 24:
        raise BadRequest(f"{where}.severityNumber must be a SeverityNumber (0 to 24 or its name)")
    return value
