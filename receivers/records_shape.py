"""The plain records shape: `{"records": [...]}` from any language, each record checked alone."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from loopkit_core.model import (
    EXPLICIT_TYPES,
    MAX_NS,
    STATUSES,
    Record,
    new_record_id,
    parse_rfc3339,
    record_id_for_span,
)
from loopkit_receivers import span_count
from loopkit_receivers.errors import BadRequest

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
MAX_NAME = 1024
MAX_TEXT = 64 * 1024
_STRINGS = ("session_id", "user_id", "service")


@dataclass
class RecordsBatch:
    """Records to store, one record ID (or None) per posted record, and per-record errors."""

    records: list[Record] = field(default_factory=list)
    record_ids: list[str | None] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def use_stored_ids(self, stored_as: dict[int, str]) -> None:
        """Answer with the stored record's ID for records (by their index in `records`) the store already had."""
        if not stored_as:
            return
        posted = [i for i, record_id in enumerate(self.record_ids) if record_id is not None]
        for k, record_id in stored_as.items():
            self.record_ids[posted[k]] = record_id

    def refuse(self, stored_indexes: list[int], reason: str) -> None:
        """Turn records the store refused (by their index in `records`) into per-record errors."""
        if not stored_indexes:
            return
        posted = [i for i, record_id in enumerate(self.record_ids) if record_id is not None]
        for k in stored_indexes:
            self.record_ids[posted[k]] = None
            self.errors.append({"index": posted[k], "reason": reason})
        self.errors.sort(key=lambda e: e["index"])


def is_records_shape(doc: Any) -> bool:
    """True for `{"records": [...]}` (the OTLP/JSON shape has `resourceSpans` instead)."""
    return isinstance(doc, dict) and "records" in doc


def decode(
    doc: dict[str, Any], project_id: str, received_ns: int, max_records: int = span_count.MAX_SPANS_PER_REQUEST
) -> RecordsBatch:
    """Validate each record alone; the good ones become Records, the bad ones an error each."""
    items = doc["records"]
    if not isinstance(items, list):
        raise BadRequest("records must be a JSON array")
    span_count.check(len(items), max_records)
    out = RecordsBatch()
    for index, item in enumerate(items):
        try:
            record = _record(item, project_id, received_ns)
        except ValueError as exc:
            out.record_ids.append(None)
            out.errors.append({"index": index, "reason": str(exc)})
            continue
        out.records.append(record)
        out.record_ids.append(record.record_id)
    return out


def _record(item: Any, project_id: str, received_ns: int) -> Record:
    if not isinstance(item, dict):
        raise ValueError("record must be a JSON object")
    rtype = item.get("type")
    if not isinstance(rtype, str) or rtype not in EXPLICIT_TYPES:  # a list or object is unhashable
        raise ValueError(f"type must be one of {', '.join(sorted(EXPLICIT_TYPES))}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    if len(name) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} characters")
    message = item.get("message", "")
    if message is None:
        message = ""
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    if len(message) > MAX_TEXT:
        raise ValueError(f"message must be at most {MAX_TEXT} characters")
    ts_ns = _timestamp(item.get("timestamp"), received_ns)
    duration_ms = item.get("duration_ms", 0)
    if duration_ms is None:
        duration_ms = 0
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int | float) or not math.isfinite(duration_ms):
        raise ValueError("duration_ms must be a finite number")
    if duration_ms < 0:
        raise ValueError("duration_ms must not be negative")
    if duration_ms > MAX_NS / 1e6:
        raise ValueError("duration_ms is out of range")
    status = item.get("status")
    if status is None:
        status = "error" if rtype in ("error", "tool_failure") else "unset"
    if not isinstance(status, str) or status.lower() not in STATUSES:
        raise ValueError("status must be one of ok, error, unset")
    strings = {}
    for key in _STRINGS:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        if value is not None and len(value) > MAX_NAME:
            raise ValueError(f"{key} must be at most {MAX_NAME} characters")
        strings[key] = value or None
    trace_id = _hex_id(item.get("trace_id"), _HEX32, "trace_id", "32 hex characters")
    span_id = _hex_id(item.get("span_id"), _HEX16, "span_id", "16 hex characters")
    attributes = item.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise ValueError("attributes must be a flat JSON object")
    for key, value in attributes.items():
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict | list) for v in value)):
            raise ValueError(f"attributes.{key} must be a string, number, boolean, null or a list of them")
    end_ns = min(ts_ns + int(duration_ms * 1_000_000), MAX_NS)
    if trace_id and span_id:  # a resend must map to the same ID: only a timestamp the client sent goes into it
        record_id = record_id_for_span(project_id, trace_id, span_id, 0 if item.get("timestamp") is None else ts_ns)
    else:
        record_id = new_record_id(ts_ns)
    service = strings["service"] or "unknown_service"
    return Record(
        record_id=record_id,
        ts_ns=ts_ns,
        end_ns=end_ns,
        type=rtype,
        name=name,
        service=service,
        status=status.lower(),
        message=message,
        trace_id=trace_id,
        span_id=span_id,
        session_id=strings["session_id"],
        user_id=strings["user_id"],
        exception_type=_text_attr(attributes, "exception.type") or _text_attr(attributes, "error.type"),
        attributes=attributes,
        resource={"service.name": service},
    )


def _timestamp(value: Any, received_ns: int) -> int:
    if value is None:
        return received_ns
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        ns = int(value)  # unix ns as a string: JavaScript numbers cannot hold them exactly
    elif isinstance(value, str):
        try:
            ns = parse_rfc3339(value)
        except (ValueError, OverflowError):
            raise ValueError("timestamp must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or unix nanoseconds") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        ns = value
    else:
        raise ValueError("timestamp must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or unix nanoseconds")
    if not 0 < ns <= MAX_NS:
        raise ValueError("timestamp is out of range")
    return ns


def _hex_id(value: Any, pattern: re.Pattern[str], key: str, shape: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value) or set(value) == {"0"}:
        raise ValueError(f"{key} must be {shape}, not all zero")
    return value.lower()


def _text_attr(attributes: dict[str, Any], key: str) -> str | None:
    value = attributes.get(key)
    return value if isinstance(value, str) and value else None


def response(batch: RecordsBatch) -> dict[str, Any]:
    """The records answer: counts, IDs aligned with the posted records, and per-record errors."""
    return {
        "ok": True,
        "accepted": sum(record_id is not None for record_id in batch.record_ids),
        "rejected": len(batch.errors),
        "record_ids": batch.record_ids,
        "errors": batch.errors,
    }
