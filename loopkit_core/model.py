"""The one record model every receiver produces, and the signal types derived for it."""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopkit_core.selectors import Selector

SIGNAL_TYPES = ("error", "tool_failure", "latency", "user_signal", "event", "span", "log")
# Types a client may name explicitly (records shape `type`, or the `loopkit.signal` attribute).
EXPLICIT_TYPES = frozenset(("error", "tool_failure", "latency", "user_signal", "event", "log"))
STATUSES = ("ok", "error", "unset")
MAX_NS = 2**63 - 1  # timestamps are signed 64-bit unix nanoseconds
DAY_NS = 86_400 * 10**9
# Types that count as failures: the packet's `failures` and what the record_signature hook is called for.
FAILURE_TYPES = ("error", "tool_failure")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 section 5.6 date-time ("T" may be a space or lowercase); any number of fraction digits.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


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
    signature: str | None = None

    @property
    def duration_ms(self) -> float:
        """Duration in milliseconds (never negative)."""
        return max(self.end_ns - self.ts_ns, 0) / 1e6


def record_id_for_span(project_id: str, trace_id: str, span_id: str, start_ns: int = 0) -> str:
    """A span's stable record ID: the same (project, trace, span, start time) always maps to the same ID.

    IDs begin with the start time in milliseconds (11 hex digits), so new records land at the right edge
    of the store's record ID index instead of on a random page of it (at a million records that halves
    the bytes written per span). A span without a usable start time (0 or out of range) gets prefix 0.
    """
    digest = hashlib.blake2b(f"{project_id}/{trace_id}/{span_id}".encode(), digest_size=7).hexdigest()
    return f"rec_{_id_time(start_ns)}{digest[:13]}"


def record_id_for_log(project_id: str, identity: bytes, ts_ns: int = 0) -> str:
    """A log record's stable ID: the same (project, log fields) always maps to the same ID, time first.

    `identity` is the log's own fields, encoded by the receiver (see docs/records.md): a log has no ID of its
    own, so a re-sent batch is recognised by its content.
    """
    digest = hashlib.blake2b(project_id.encode() + b"/log/" + identity, digest_size=7).hexdigest()
    return f"rec_{_id_time(ts_ns)}{digest[:13]}"


def new_record_id(ts_ns: int = 0) -> str:
    """A fresh random record ID, for records that carry no span identity (time-prefixed like span IDs)."""
    return f"rec_{_id_time(ts_ns)}{secrets.token_hex(7)[:13]}"


UNTIMED_ID_PREFIX = "rec_" + "0" * 11  # the record ID of a record sent without a usable time begins so


def _id_time(ts_ns: int) -> str:
    return f"{ts_ns // 1_000_000:011x}" if 0 < ts_ns <= MAX_NS else "0" * 11


def rfc3339(ns: int) -> str:
    """Unix nanoseconds as an RFC 3339 UTC timestamp, truncated (exactly, no float) to microseconds."""
    micros = ns // 1000
    return f"{_rfc3339_second(micros // 1_000_000)}.{micros % 1_000_000:06d}Z"


@functools.lru_cache(maxsize=4096)
def _rfc3339_second(seconds: int) -> str:
    # A page of records spans a few hundred seconds: strftime once a second, not three times a record (a 1,000-record
    # page built its timestamps in ~7 ms that way, ~1 ms this way).
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 timestamp into unix nanoseconds (fraction kept to the ns); ValueError otherwise."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 (e.g. 2026-01-02T03:04:05.123Z)")
    date, clock, fraction, offset = match.groups()
    dt = datetime.fromisoformat(f"{date}T{clock}{'+00:00' if offset in ('Z', 'z') else offset}")
    return (dt - _EPOCH) // timedelta(seconds=1) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


@dataclass(frozen=True, slots=True)
class Signature:
    """A record's grouping key at ingest: a short hash and the masked template it was made from."""

    key: str
    template: str
    operation: str  # the route / tool / operation the signature is scoped to


@dataclass
class Issue:
    """One recurring problem a diagnoser found in a window, with the exact records behind it."""

    fingerprint: str  # stable across runs for the same failure
    title: str
    signal_type: str  # error | tool_failure | latency | user_signal | event
    count: int  # the true number of the issue's records in the window
    first_seen_ns: int
    last_seen_ns: int
    # Which records are the issue's: a typed selector (loopkit_core.selectors: Signatures, RecordIds, Records,
    # SlowCalls), stored in its tagged JSON form, or an older untagged dict ({"signatures": [...]} | ...);
    # GET /v1/telemetry?issue= lists exactly these within a window (see docs/plugin_hooks.md).
    selector: dict[str, Any] | Selector
    evidence: list[str] = field(default_factory=list)  # record IDs, a bounded sample
    traces: list[str] = field(default_factory=list)
    severity: str = "medium"  # critical | high | medium | low
    impact: float = 0.0  # orders issues in a packet, highest first
    stats: dict[str, Any] = field(default_factory=dict)
    eval_candidate: str = ""
    eval: dict[str, Any] = field(default_factory=dict)
    patch_plan: list[dict[str, Any]] = field(default_factory=list)
    next_action: str = ""
    template: str | None = None  # for signature issues: the merged message template
    diagnoser: str = ""  # filled in by the pipeline with the plugin's name


@dataclass(frozen=True)
class Renderer:
    """A handoff format: `render(packet, context)` returns the handoff text (JSON, Markdown, ...)."""

    name: str
    media_type: str
    description: str
    render: Callable[[dict[str, Any], dict[str, Any]], str]


VERDICTS = ("held", "improved", "regressed", "insufficient_data")


@dataclass
class Verdict:
    """A verifier's answer for one issue: the verdict, the numbers behind it, and new evidence."""

    verdict: str  # held | improved | regressed | insufficient_data
    reason: str
    before: dict[str, Any] = field(default_factory=dict)  # counts, traffic, rates or percentiles
    after: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)  # record IDs in the after window (regressions)
    verifier: str = ""  # filled in by the pipeline
