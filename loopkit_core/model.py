"""The one record model every receiver produces, and the signal types derived for it."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SIGNAL_TYPES = ("error", "tool_failure", "latency", "user_signal", "event", "span")
# Types a client may name explicitly (records shape `type`, or the `loopkit.signal` attribute).
EXPLICIT_TYPES = frozenset(("error", "tool_failure", "latency", "user_signal", "event"))
STATUSES = ("ok", "error", "unset")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Record:
    """One span or plain record, normalised; what the store writes and the API reads back."""

    record_id: str
    ts_ns: int
    end_ns: int
    type: str
    name: str
    service: str
    status: str
    message: str
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    kind: str | None = None
    scope: str | None = None
    exception_type: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = None

    @property
    def duration_ms(self) -> float:
        """Duration in milliseconds (never negative)."""
        return max(self.end_ns - self.ts_ns, 0) / 1e6


def record_id_for_span(project_id: str, trace_id: str, span_id: str) -> str:
    """A span's stable record ID: the same (project, trace, span) always maps to the same ID."""
    digest = hashlib.blake2b(f"{project_id}/{trace_id}/{span_id}".encode(), digest_size=12).hexdigest()
    return "rec_" + digest


def new_record_id() -> str:
    """A fresh random record ID, for records that carry no span identity."""
    return "rec_" + secrets.token_hex(12)


def rfc3339(ns: int) -> str:
    """Unix nanoseconds as an RFC 3339 UTC timestamp with microsecond precision."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 timestamp into unix nanoseconds; raise ValueError when it is not one."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone offset")
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000
