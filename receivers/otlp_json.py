"""OTLP/JSON: a parsed JSON document becomes Records, with hex IDs decoded as the spec says.

protobuf's json_format would read the hex `traceId` as base64 (the OTLP/JSON trap) and is slow,
so this module walks the document directly and validates every field it reads.
"""

from __future__ import annotations

import math
from typing import Any

from loopkit_core.model import MAX_NS
from loopkit_receivers import span_count
from loopkit_receivers.errors import BadRequest
from loopkit_receivers.spans import Decoded, build_record, event_timestamp, span_id_problem

_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_MAX_DEPTH = 32


def decode(doc: Any, project_id: str, received_ns: int, max_spans: int = span_count.MAX_SPANS_PER_REQUEST) -> Decoded:
    """Every span of an OTLP/JSON ExportTraceServiceRequest; BadRequest for a malformed document."""
    span_count.check(span_count.in_json(doc), max_spans)
    top = _obj(doc, "request")
    out = Decoded()
    for i, resource_spans in enumerate(_list(_get(top, "resourceSpans", "resource_spans"), "resourceSpans")):
        where = f"resourceSpans[{i}]"
        resource_spans = _obj(resource_spans, where)
        resource_obj = _obj(resource_spans.get("resource"), where, ".resource", optional=True)
        resource = _attributes(resource_obj.get("attributes"), where, ".resource.attributes")
        service = str(resource.get("service.name") or "unknown_service")
        for j, scope_spans in enumerate(_list(_get(resource_spans, "scopeSpans", "scope_spans"), where)):
            swhere = f"{where}.scopeSpans[{j}]"
            scope_spans = _obj(scope_spans, swhere)
            scope_obj = _obj(scope_spans.get("scope"), swhere, ".scope", optional=True)
            scope = _str(scope_obj.get("name"), swhere, ".scope.name")
            for k, span in enumerate(_list(scope_spans.get("spans"), swhere, ".spans")):
                span_where = f"{swhere}.spans[{k}]"
                _span(out, _obj(span, span_where), span_where, project_id, resource, service, scope, received_ns)
    return out


def _span(
    out: Decoded,
    span: dict[str, Any],
    where: str,
    project_id: str,
    resource: dict[str, Any],
    service: str,
    scope: str,
    received_ns: int,
) -> None:
    name = _str(span.get("name"), where, ".name")
    status = _obj(span.get("status"), where, ".status", optional=True)
    attributes = _attributes(span.get("attributes"), where, ".attributes")
    events = []
    for n, event in enumerate(_list(span.get("events"), where, ".events")):
        ewhere = f"{where}.events[{n}]"
        event = _obj(event, ewhere)
        events.append(
            {
                "name": _str(event.get("name"), ewhere, ".name"),
                "timestamp": event_timestamp(
                    _uint64(_get(event, "timeUnixNano", "time_unix_nano"), ewhere, ".timeUnixNano")
                ),
                "attributes": _attributes(event.get("attributes"), ewhere, ".attributes"),
            }
        )
    links = []
    for n, link in enumerate(_list(span.get("links"), where, ".links")):
        lwhere = f"{where}.links[{n}]"
        link = _obj(link, lwhere)
        links.append(
            {
                "trace_id": _str(_get(link, "traceId", "trace_id"), lwhere, ".traceId").lower(),
                "span_id": _str(_get(link, "spanId", "span_id"), lwhere, ".spanId").lower(),
                "attributes": _attributes(link.get("attributes"), lwhere, ".attributes"),
            }
        )
    start_ns = _uint64(_get(span, "startTimeUnixNano", "start_time_unix_nano"), where, ".startTimeUnixNano")
    end_ns = _uint64(_get(span, "endTimeUnixNano", "end_time_unix_nano"), where, ".endTimeUnixNano")
    kind = _enum(span.get("kind"), _KIND_NAMES, where, ".kind")
    status_code = _enum(status.get("code"), _STATUS_NAMES, where, ".status.code")
    status_message = _str(status.get("message"), where, ".status.message")
    try:
        trace_id = _hex(_get(span, "traceId", "trace_id"), where, ".traceId")
        span_id = _hex(_get(span, "spanId", "span_id"), where, ".spanId")
        parent = _hex(_get(span, "parentSpanId", "parent_span_id"), where, ".parentSpanId")
    except ValueError as exc:
        out.reject(f"span {name!r}: {exc}")
        return
    problem = span_id_problem(trace_id, span_id, parent)
    if problem:
        out.reject(f"span {name!r}: {problem}")
        return
    out.records.append(
        build_record(
            project_id,
            trace_id,
            span_id,
            parent,
            name,
            kind,
            start_ns,
            end_ns,
            status_code,
            status_message,
            attributes,
            events,
            links,
            resource,
            service,
            scope,
            received_ns,
        )
    )


# The checks below name the offending field as `where` + `field`: the two are joined only for an error message.


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    # Proto3 JSON parsers accept the original field names as well as lowerCamelCase.
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _obj(value: Any, where: str, field: str = "", optional: bool = False) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}{field} must be a JSON object")
    return value


def _list(value: Any, where: str, field: str = "") -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{where}{field} must be a JSON array")
    return value


def _str(value: Any, where: str, field: str = "") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{where}{field} must be a string")
    return value


def _uint64(value: Any, where: str, field: str = "") -> int:
    # 64-bit integers arrive as decimal strings; accept plain numbers too.
    if value is None:
        return 0
    if isinstance(value, bool):
        raise BadRequest(f"{where}{field} must be an unsigned integer")
    if isinstance(value, str):
        # isdigit alone admits "²" and other Unicode digits, and int() refuses strings over 4,300 digits.
        if not (value.isascii() and value.isdigit() and len(value) <= 20):
            raise BadRequest(f"{where}{field} must be an unsigned integer, got {value[:40]!r}")
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0 or value > 2**64 - 1:
        raise BadRequest(f"{where}{field} must be an unsigned 64-bit integer")
    return min(value, MAX_NS)


def _int64(value: Any, where: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise BadRequest(f"{where} must be an integer, got {value[:40]!r}") from None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise BadRequest(f"{where} must be a 64-bit integer")
    return value


def _enum(value: Any, names: dict[str, int], where: str, field: str = "") -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}{field} must be an integer enum value")
    return value


def _hex(value: Any, where: str, field: str = "") -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise BadRequest(f"{where}{field} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = None
    # fromhex also skips whitespace between the digits: the text is then longer than the digits it decoded.
    if raw is None or 2 * len(raw) != len(value):
        raise ValueError(f"{where}{field} is not hex (OTLP/JSON IDs are hex, not base64)")
    return raw


def _attributes(value: Any, where: str, field: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for i, kv in enumerate(_list(value, where, field)):
        if not isinstance(kv, dict):
            raise BadRequest(f"{where}{field}[{i}] must be a JSON object")
        key = kv.get("key")
        if not isinstance(key, str):
            raise BadRequest(f"{where}{field}[{i}].key must be a string")
        any_value = kv.get("value")
        # Most values are one scalar field in canonical form, taken here as _any_value would take them. The rest
        # (arrays, doubles, snake_case names, anything invalid) take the general walk, which names the field on error.
        if type(any_value) is dict and len(any_value) == 1:
            scalar = any_value.get("stringValue")
            if type(scalar) is str:
                result[key] = scalar
                continue
            scalar = any_value.get("intValue")
            # 1 to 18 ASCII digits: what int() takes, and within int64 without a range check.
            if type(scalar) is str and len(scalar) <= 18 and scalar.isascii() and scalar.isdigit():
                result[key] = int(scalar)
                continue
            scalar = any_value.get("boolValue")
            if type(scalar) is bool:
                result[key] = scalar
                continue
        result[key] = _any_value(any_value, f"{where}{field}[{i}].value", 0)
    return result


def _any_value(value: Any, where: str, depth: int) -> Any:
    if value is None:
        return None
    if depth > _MAX_DEPTH:
        raise BadRequest(f"{where} nests deeper than {_MAX_DEPTH} levels")
    value = _obj(value, where)
    if len(value) > 1 and len(_VALUE_FIELDS.intersection(value)) > 1 and _two_values(value):
        raise BadRequest(f"{where} must hold exactly one of the AnyValue fields (a protobuf oneof)")
    if "stringValue" in value or "string_value" in value:
        return _str(_get(value, "stringValue", "string_value"), where)
    if "intValue" in value or "int_value" in value:
        return _int64(_get(value, "intValue", "int_value"), where)
    if "doubleValue" in value or "double_value" in value:
        return _double(_get(value, "doubleValue", "double_value"), where)
    if "boolValue" in value or "bool_value" in value:
        flag = _get(value, "boolValue", "bool_value")
        if not isinstance(flag, bool):
            raise BadRequest(f"{where}.boolValue must be true or false")
        return flag
    if "arrayValue" in value or "array_value" in value:
        array = _obj(_get(value, "arrayValue", "array_value"), where)
        return [_any_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(_list(array.get("values"), where))]
    if "kvlistValue" in value or "kvlist_value" in value:
        kvlist = _obj(_get(value, "kvlistValue", "kvlist_value"), where)
        out = {}
        for i, kv in enumerate(_list(kvlist.get("values"), where)):
            kv = _obj(kv, f"{where}[{i}]")
            key = kv.get("key")
            if not isinstance(key, str):
                raise BadRequest(f"{where}[{i}].key must be a string")
            out[key] = _any_value(kv.get("value"), f"{where}[{i}]", depth + 1)
        return out
    if "bytesValue" in value or "bytes_value" in value:
        return _str(_get(value, "bytesValue", "bytes_value"), where)
    return None


_VALUE_NAMES = {
    "stringValue": "string_value",
    "boolValue": "bool_value",
    "intValue": "int_value",
    "doubleValue": "double_value",
    "arrayValue": "array_value",
    "kvlistValue": "kvlist_value",
    "bytesValue": "bytes_value",
}
_VALUE_FIELDS = frozenset(_VALUE_NAMES) | frozenset(_VALUE_NAMES.values())


def _two_values(value: dict[str, Any]) -> bool:
    # A field spelled both ways (camelCase and snake_case) is still one field.
    return sum(camel in value or snake in value for camel, snake in _VALUE_NAMES.items()) > 1


def _double(value: Any, where: str) -> float | None:
    if isinstance(value, str):
        # Proto3 JSON spells the special values as strings; JSON has no NaN, so store null.
        if value in ("NaN", "Infinity", "-Infinity"):
            return None
        try:
            value = float(value)
        except ValueError:
            raise BadRequest(f"{where} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where} must be a number")
    value = float(value)
    return value if math.isfinite(value) else None


# The walkers the logs decoder (otlp_logs_json.py) shares, under public names.
get, json_obj, json_list, text, uint64, hex_id = _get, _obj, _list, _str, _uint64, _hex
attributes, any_value = _attributes, _any_value
