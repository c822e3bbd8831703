"""Reads of records by trace and by session: a trace's spans, a session's records, and per-session aggregates.

Every read is bounded: a trace or a session gives at most `limit` rows in start order (an ORDER BY with a LIMIT,
which SQLite and PostgreSQL answer with a top-N sort, so a 100,000-span trace never sits in memory whole) and a
count of all of them; the session list scans at most `scan` of the window's newest records to find its sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Engine, and_, case, distinct, func, or_, select

from loopkit_core.model import FAILURE_TYPES
from loopkit_core.store.day_tables import RANGE_OPTION
from loopkit_core.store.partial_indexes import HEX_ID, during, in_traces, traced
from loopkit_core.store.records import records_json
from loopkit_core.store.schema import records

# The columns a trace's tree needs (no attributes, resources or events: a waterfall row is small).
SPAN_COLUMNS = (
    "record_id",
    "span_id",
    "parent_span_id",
    "name",
    "service",
    "type",
    "status",
    "ts_ns",
    "end_ns",
    "duration_ms",
    "session_id",
)
MAX_LISTED = 20  # users and services named per session
# Session index rows read to list a session read's traces; past it, the read scans each day table instead.
MAX_HEAD_ROWS = 200_000


@dataclass(frozen=True)
class TraceRows:
    """The first `limit` spans of a trace in start order, and how many the trace has."""

    spans: list[dict[str, Any]]
    total: int


def trace_spans(engine: Engine, trace_id: str, limit: int) -> TraceRows:
    """The spans of one trace (the columns of SPAN_COLUMNS), earliest first, at most `limit`, and their count."""
    c = records.c
    columns = [c[name] for name in SPAN_COLUMNS]
    with engine.connect() as conn:
        trace = traced(conn, [trace_id])
        counted = select(func.count()).select_from(records).where(trace.condition)
        total = conn.execute(trace.within(counted)).scalar_one()
        if not total:
            return TraceRows([], 0)
        stmt = select(*columns).where(trace.condition).order_by(c.ts_ns, c.end_ns.desc(), c.record_id).limit(limit)
        # fetchall() and plain dicts: a 10,000-span answer must not pay for a Row object per span.
        rows = [dict(zip(SPAN_COLUMNS, row, strict=True)) for row in conn.execute(trace.within(stmt)).fetchall()]
    return TraceRows(rows, int(total))


@dataclass(frozen=True)
class SessionRecords:
    """The first `limit` records of a session in time order (API record objects), and how many it has."""

    records: list[dict[str, Any]]
    total: int


def in_sessions(conn: Connection, session_ids: Sequence[str]) -> ColumnElement[bool]:
    """The condition for the records of these sessions, through the session index as this backend keeps it.

    SQLite's index holds each session's first row per trace and write (schema.py, ix_records_session): the other
    rows are those of the same traces with the same session. Their traces are read first and listed, so that
    each day table answers with its session and trace indexes (SQLite does not push a subquery into a UNION ALL).
    PostgreSQL's index holds every row.
    """
    c, ids = records.c, list(session_ids)
    if conn.dialect.name != "sqlite":
        return c.session_id.in_(ids)
    heads = and_(c.session_id.in_(ids), c.session_repeat.is_(None))
    # No DISTINCT: with it SQLite walked the whole span index in trace order (0.5 s for 10,000 sessions in a
    # window of 200,000 records) instead of seeking each session in its own index.
    found = conn.execute(select(c.trace_id).where(heads).limit(MAX_HEAD_ROWS + 1)).scalars().all()
    traces = sorted({trace for trace in found if trace is not None})
    if len(found) > MAX_HEAD_ROWS or not all(HEX_ID.fullmatch(trace) for trace in traces):
        # The same rows, by scanning each table (SQLite does not push a subquery into a UNION ALL).
        inner = records.alias("heads")
        listed = select(inner.c.trace_id).where(inner.c.session_id.in_(ids), inner.c.session_repeat.is_(None))
        return or_(heads, and_(c.session_id.in_(ids), c.trace_id.in_(listed)))
    parts = []
    if traces:
        parts.append(and_(in_traces(conn, traces), c.session_id.in_(ids)))
    if None in found:  # rows without a trace are always indexed: only they are read through that index again
        parts.append(and_(heads, c.trace_id.is_(None)))
    return or_(*parts) if len(parts) > 1 else parts[0] if parts else heads


def session_records(engine: Engine, session_id: str, limit: int) -> SessionRecords:
    """A session's records, earliest first, at most `limit`, and the session's record count."""
    c = records.c
    with engine.connect() as conn:
        session = in_sessions(conn, [session_id])
        total = conn.execute(select(func.count()).select_from(records).where(session)).scalar_one()
        if not total:
            return SessionRecords([], 0)
        stmt = select(records).where(session).order_by(c.ts_ns, c.end_ns.desc(), c.record_id).limit(limit)
        rows = conn.execute(stmt).all()
        return SessionRecords(records_json(conn, rows), int(total))


def recent_sessions(engine: Engine, start_ns: int, end_ns: int, scan: int, sessions: int) -> tuple[list[str], bool]:
    """The sessions active last in [start_ns, end_ns), newest first (at most `sessions`), and whether the scan
    of at most `scan` newest records of the window covered the whole window."""
    c = records.c
    # ts_ns is read too: over two day tables (a window across midnight) SQLite merges their index orders only when
    # the ordering column is a result column, and otherwise sorts every row of the window with a session.
    stmt = (
        select(c.session_id, c.ts_ns)
        .where(c.ts_ns >= start_ns, c.ts_ns < end_ns, c.session_id.is_not(None))
        .order_by(c.ts_ns.desc())
        .limit(scan)
    )
    found: dict[str, None] = {}
    read = 0
    with engine.connect().execution_options(**{RANGE_OPTION: (start_ns, end_ns)}) as conn:
        for session_id, _ in conn.execute(stmt):
            read += 1
            if session_id not in found:
                if len(found) == sessions:
                    return list(found), False
                found[session_id] = None
    return list(found), read < scan


@dataclass
class SessionFacts:
    """What the store says about one session in a window: counts, times, and the rows the scorecard reads."""

    session_id: str
    start_ns: int = 0
    end_ns: int = 0
    records: int = 0
    failures: int = 0
    tool_failures: int = 0
    traces: int = 0
    failed_traces: int = 0
    slow_calls: int = 0
    timed_calls: int = 0
    max_duration_ms: float = 0.0
    users: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    # (type, status, attributes JSON) of the records the scorecard classifies: user signals and GenAI spans.
    detail: list[tuple[str, str, Any]] = field(default_factory=list)


def session_facts(
    engine: Engine,
    session_ids: Sequence[str],
    start_ns: int | None,
    end_ns: int | None,
    slow_ms: float,
    max_detail: int,
) -> tuple[dict[str, SessionFacts], bool]:
    """Grouped facts per session (restricted to [start_ns, end_ns) when given), and whether every detail row
    (user signals, GenAI spans) fitted in `max_detail`."""
    if not session_ids:
        return {}, True
    c = records.c
    failure = c.type.in_(FAILURE_TYPES)
    grouped = select(
        c.session_id,
        func.min(c.ts_ns),
        func.max(c.end_ns),
        func.count(),
        func.sum(case((failure, 1), else_=0)),
        func.sum(case((c.type == "tool_failure", 1), else_=0)),
        func.count(distinct(c.trace_id)),
        func.count(distinct(case((failure, c.trace_id), else_=None))),
        func.sum(case((c.duration_ms > slow_ms, 1), else_=0)),
        func.sum(case((c.duration_ms > 0, 1), else_=0)),
        func.max(c.duration_ms),
    ).group_by(c.session_id)
    facts: dict[str, SessionFacts] = {}
    with engine.connect() as conn:
        where = [in_sessions(conn, session_ids)]
        if start_ns is not None and end_ns is not None:
            where.append(during(conn.dialect.name, start_ns, end_ns))
        for row in conn.execute(grouped.where(*where)):
            sid, start, end, count, failures, tools, traces, failed, slow, timed, longest = row
            facts[sid] = SessionFacts(
                sid, int(start), int(end), int(count), int(failures or 0), int(tools or 0), int(traces),
                int(failed), int(slow or 0), int(timed or 0), float(longest or 0.0),
            )  # fmt: skip
        # Users and services in one pass: the few distinct (user, service) pairs of each session.
        pairs = select(c.session_id, c.user_id, c.service).where(*where).distinct()
        for sid, user, service in conn.execute(pairs.order_by(c.session_id, c.user_id, c.service)):
            session = facts[sid]
            if user and user not in session.users and len(session.users) < MAX_LISTED:
                session.users.append(user)
            if service and service not in session.services and len(session.services) < MAX_LISTED:
                session.services.append(service)
        # Only user signals and spans that mention GenAI attributes need their attributes parsed.
        detail = (
            select(c.session_id, c.type, c.status, c.attributes)
            .where(*where, or_(c.type == "user_signal", c.attributes.like("%gen_ai.%")))
            .limit(max_detail + 1)
        )
        rows = conn.execute(detail).all()
    for sid, kind, status, attributes in rows[:max_detail]:
        facts[sid].detail.append((kind, status, attributes))
    return facts, len(rows) <= max_detail


def parse_attributes(text: str) -> dict[str, Any]:
    """A stored attributes column as a dict ({} when it is not a JSON object)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
