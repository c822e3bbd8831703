"""The step both OTLP log decoders share: one decoded log record becomes one Record."""

from __future__ import annotations

from typing import Any

import orjson

from loopkit_core.model import EXPLICIT_TYPES, MAX_NS, Record, new_record_id, record_id_for_log
from loopkit_core.signals import SESSION_KEYS, SIGNAL_ATTRIBUTE, USER_KEYS, pick

# OTLP SeverityNumber: 17-20 are ERROR..ERROR4, 21-24 FATAL..FATAL4 (logs data model).
SEVERITY_ERROR = 17
# Severity texts that mean "error or worse" when a log carries no severity number (syslog, log4j, Python, Go).
ERROR_TEXTS = frozenset(("ERROR", "ERR", "FATAL", "CRITICAL", "CRIT", "ALERT", "EMERG", "EMERGENCY", "PANIC", "SEVERE"))
SEVERITY_NUMBER = "log.severity_number"  # added to a log's attributes, so its severity stays readable
SEVERITY_TEXT = "log.severity_text"
UNNAMED = "log"  # a log's name when it has neither an event name nor a scope (logger) name
ZERO_TRACE = bytes(16)
ZERO_SPAN = bytes(8)


def id_problem(trace_id: bytes, span_id: bytes) -> str | None:
    """Why a log's trace context is invalid (present but of the wrong length); logs without one are fine."""
    if trace_id and len(trace_id) != 16:
        return "trace_id must be empty or 16 bytes"
    if span_id and len(span_id) != 8:
        return "span_id must be empty or 8 bytes"
    return None


def classify(severity_number: int, severity_text: str, attributes: dict[str, Any]) -> str:
    """A log's type: `loopkit.signal` wins; ERROR or worse, or an exception, is a failure; the rest `log`."""
    explicit = attributes.get(SIGNAL_ATTRIBUTE)
    if isinstance(explicit, str) and explicit in EXPLICIT_TYPES:
        return explicit
    if severity_number >= SEVERITY_ERROR:
        failed = True
    elif severity_number == 0:  # unspecified: the text is all there is
        failed = severity_text.strip().upper() in ERROR_TEXTS
    else:
        failed = False
    failed = failed or any(key.startswith("exception.") for key in attributes)
    if failed and attributes.get("gen_ai.operation.name") == "execute_tool":
        return "tool_failure"
    return "error" if failed else "log"


def render_body(body: Any) -> str:
    """A log's message: a string body as it is, a structured one as compact JSON (keys in order), none as ""."""
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    if isinstance(body, bool):
        return "true" if body else "false"
    if isinstance(body, int | float):
        return str(body)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def build_log(
    project_id: str,
    time_ns: int,
    observed_ns: int,
    severity_number: int,
    severity_text: str,
    body: Any,
    attributes: dict[str, Any],
    trace_id: bytes,
    span_id: bytes,
    event_name: str,
    resource: dict[str, Any],
    resource_json: bytes,
    service: str,
    scope: str,
    received_ns: int,
) -> Record:
    """A Record for one OTLP log record, with its stable ID (from its own fields) and derived fields."""
    ts_ns = time_ns if 0 < time_ns <= MAX_NS else observed_ns if 0 < observed_ns <= MAX_NS else received_ns
    trace_id = b"" if trace_id == ZERO_TRACE else trace_id
    span_id = b"" if span_id == ZERO_SPAN else span_id
    # The log's own fields identify it (it has no ID): a re-sent batch maps to the same IDs and is stored once.
    # The times are the ones the log carries, never the fallback (a resend has the same).
    identity = orjson.dumps(
        [time_ns, observed_ns, severity_number, severity_text, body, attributes, trace_id.hex(), span_id.hex(),
         event_name, scope],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    ) + resource_json  # fmt: skip
    rtype = classify(severity_number, severity_text, attributes)
    message = render_body(body)
    if not message:
        message = _text(attributes.get("exception.message")) or ""
    exception_type = _text(attributes.get("exception.type")) or _text(attributes.get("error.type"))
    name = event_name or _text(attributes.get("event.name")) or scope or UNNAMED
    if severity_number:
        attributes[SEVERITY_NUMBER] = severity_number
    if severity_text:
        attributes[SEVERITY_TEXT] = severity_text
    # Without either time, the same line sent twice may be two events (a heartbeat): a random ID keeps both.
    timed = time_ns > 0 or observed_ns > 0
    return Record(
        record_id=record_id_for_log(project_id, identity, ts_ns) if timed else new_record_id(ts_ns),
        ts_ns=ts_ns,
        end_ns=ts_ns,
        type=rtype,
        name=name,
        service=service,
        status="error" if rtype in ("error", "tool_failure") else "unset",
        message=message,
        trace_id=trace_id.hex() or None,
        # A log is not a span: the span it was emitted in is its parent, and (trace_id, span_id), the key that
        # stores a span once, stays the span's own (docs/records.md#logs).
        span_id=None,
        parent_span_id=span_id.hex() if trace_id and span_id else None,
        session_id=pick(attributes, SESSION_KEYS),
        user_id=pick(attributes, USER_KEYS),
        kind=None,
        scope=scope or None,
        exception_type=exception_type,
        attributes=attributes,
        resource=resource,
    )


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)
