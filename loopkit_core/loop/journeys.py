"""Sessions and traces for the loop service: the session list with scorecards, one session, one trace's tree.

Bounds (docs/reliability.md): a session list reads one window of at most MAX_SINCE_MINUTES, finds its sessions
among the window's newest SESSION_SCAN_RECORDS records (at most SESSIONS_CONSIDERED sessions, the most recently
active), scores those and answers at most MAX_SESSIONS_PAGE of them; `complete` is false when the scan stopped
before the window's start. A session answers at most MAX_SESSION_RECORDS records, a trace at most
MAX_TRACE_SPANS spans (the earliest), each with `truncated` and the full count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from loopkit_core.loop import scorecard, tracetree
from loopkit_core.loop.errors import LoopError
from loopkit_core.loop.requests import (
    MAX_SINCE_MINUTES,
    ascii_int,
    ascii_number,
    check_since,
    first,
    parse_instant,
    refuse_unknown,
)
from loopkit_core.model import rfc3339
from loopkit_core.store import issue_index, traces

MAX_SESSIONS_PAGE = 200
SESSIONS_CONSIDERED = 500
SESSION_SCAN_RECORDS = 50_000
MAX_DETAIL_ROWS = 50_000  # user signals and GenAI spans classified per list
MAX_SESSION_RECORDS = 1000
MAX_TRACE_SPANS = 10_000
MAX_SESSION_ID = 1280  # session IDs are stored cut to 1,280 bytes
MAX_SLOW_MS = 3_600_000.0
ISSUE_INDEX_PACKETS = 200  # newest packets whose counts the issues page shows
SESSIONS_PARAMS = {"since_minutes", "until", "limit", "sort", "slow_ms"}
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class SessionsRequest:
    """GET /v1/sessions: a window, a page size, a sort and the latency threshold of the scorecard."""

    since_minutes: float = 60.0
    until_ns: int | None = None
    limit: int = 50
    sort: str = "-start"
    slow_ms: float = 2000.0


def sessions_request(params: Mapping[str, Sequence[str]]) -> SessionsRequest:
    """A SessionsRequest from query parameters; LoopError 400 naming the parameter."""
    refuse_unknown(params, SESSIONS_PARAMS)

    def one(name: str, default: str | None) -> str | None:
        return first(params, name, default)

    since = ascii_number(one("since_minutes", "60") or "", "since_minutes")
    check_since(since)
    until = one("until", None)
    limit = page_limit(one("limit", None), 50, MAX_SESSIONS_PAGE)
    sort = one("sort", "-start")
    if sort not in scorecard.SORTS:
        raise LoopError(400, f"sort must be one of {', '.join(scorecard.SORTS)}")
    slow = ascii_number(one("slow_ms", "2000") or "", "slow_ms")
    if not 0 < slow <= MAX_SLOW_MS:
        raise LoopError(400, f"slow_ms must be greater than 0 and at most {MAX_SLOW_MS:.0f}")
    return SessionsRequest(since, parse_instant(until) if until else None, limit, sort, slow)


def page_limit(raw: str | None, default: int, maximum: int) -> int:
    """A `limit` query parameter: ASCII digits from 1 to `maximum`; LoopError 400 otherwise."""
    if raw is None:
        return default
    value = ascii_int(raw, "limit")
    if not 1 <= value <= maximum:
        raise LoopError(400, f"limit must be an integer from 1 to {maximum}")
    return value


def list_sessions(engine: Engine, request: SessionsRequest) -> dict[str, Any]:
    """The window's most recently active sessions with their scorecards, sorted and cut to the page."""
    end_ns = request.until_ns or time.time_ns()
    start_ns = max(end_ns - int(min(request.since_minutes, MAX_SINCE_MINUTES) * 60e9), 0)
    found, complete = traces.recent_sessions(engine, start_ns, end_ns, SESSION_SCAN_RECORDS, SESSIONS_CONSIDERED)
    facts, detail_complete = traces.session_facts(engine, found, start_ns, end_ns, request.slow_ms, MAX_DETAIL_ROWS)
    summaries = [scorecard.summary(facts[sid]) for sid in found if sid in facts]
    key, descending = scorecard.sort_key(request.sort)
    summaries.sort(key=key, reverse=descending)
    return {
        "sessions": summaries[: request.limit],
        "window": {"start": rfc3339(start_ns), "end": rfc3339(end_ns)},
        "sort": request.sort,
        "slow_ms": request.slow_ms,
        "sessions_considered": len(summaries),
        "complete": complete and len(found) < SESSIONS_CONSIDERED and detail_complete,
    }


def session_detail(engine: Engine, session_id: str, limit: int, slow_ms: float = 2000.0) -> dict[str, Any]:
    """One session: its scorecard over all its records, and its first `limit` records in time order; 404 if none."""
    if not 0 < len(session_id) <= MAX_SESSION_ID or "\x00" in session_id:
        raise LoopError(404, f"no session {session_id[:80]!r} in this project")
    read = traces.session_records(engine, session_id, limit)
    if not read.total:
        raise LoopError(404, f"no session {session_id[:80]!r} in this project")
    facts, _ = traces.session_facts(engine, [session_id], None, None, slow_ms, MAX_DETAIL_ROWS)
    summary = scorecard.summary(facts[session_id])
    return {
        "session": summary,
        "records": read.records,
        "records_total": read.total,
        "truncated": read.total > len(read.records),
        "traces": sorted({r["trace_id"] for r in read.records if r["trace_id"]}),
    }


def trace_detail(engine: Engine, trace_id: str, limit: int) -> dict[str, Any]:
    """One trace as a tree (depth-first spans, critical path, shares of the root), bounded; 404 if none."""
    key = trace_id.lower()
    if len(key) != 32 or not set(key) <= _HEX:
        raise LoopError(404, f"no trace {trace_id[:40]!r} in this project (trace IDs are 32 hex digits)")
    read = traces.trace_spans(engine, key, limit)
    if not read.total:
        raise LoopError(404, f"no trace {key!r} in this project")
    tree = tracetree.build(read.spans)
    sessions = sorted({s["session_id"] for s in read.spans if s["session_id"]})
    return {
        "trace_id": key,
        "spans_total": read.total,
        "spans_returned": len(read.spans),
        "truncated": read.total > len(read.spans),
        "sessions": sessions[:20],
        **tree,
    }


def issues_across_packets(engine: Engine, limit: int) -> dict[str, Any]:
    """The project's tracked issues, one row per fingerprint, with counts from the newest ISSUE_INDEX_PACKETS."""
    return issue_index.issue_index(engine, limit, ISSUE_INDEX_PACKETS)
