"""Re-sent copies: those per-day unique keys (SQLite day tables, PostgreSQL partitions) cannot refuse, found first;
and which stored record a refused copy is."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, and_, or_, select

from loopkit_core.model import DAY_NS, UNTIMED_ID_PREFIX
from loopkit_core.store import partial_indexes
from loopkit_core.store.day_tables import RANGE_OPTION
from loopkit_core.store.schema import RECORD_ID, SPAN_ID, TRACE_ID, TS_NS, Row, records

# How far back a record without a time of its own (stored at its arrival) is recognised when re-sent: past an
# exporter's retries, and within the day partitions a lookup then reads (two or three, whatever the history).
RESEND_HORIZON_NS = DAY_NS


def new_rows(conn: Connection, rows: list[Row]) -> list[Row]:
    """Rows minus re-sent copies the per-day unique indexes cannot see (SQLite's day tables, PostgreSQL's partitions).

    Each day partition refuses a span or record ID it already holds, whatever the start time. Left to find here:
    the later copies of a span within `rows` whose start times fall on different days (the first is kept), and
    records without a time of their own (their ts_ns is when they arrived, so a resend may go to another day's
    partition) stored within RESEND_HORIZON_NS, found by record ID through each partition's unique index on it.
    """
    seen: set[tuple[str, str]] = set()
    fresh: list[Row] = []
    untimed: dict[str, int] = {}
    for row in rows:
        if row[TRACE_ID] and row[SPAN_ID]:
            key = (row[TRACE_ID], row[SPAN_ID])
            if key in seen:
                continue
            seen.add(key)
        if row[RECORD_ID].startswith(UNTIMED_ID_PREFIX):
            untimed[row[RECORD_ID]] = row[TS_NS]
        fresh.append(row)
    if not untimed:
        return fresh
    # Clamped to BIGINT: a record's time is stored as given, up to 2262.
    since = max(min(untimed.values()) - RESEND_HORIZON_NS, -(2**63))
    until = min(max(untimed.values()) + RESEND_HORIZON_NS, 2**63 - 1)
    c = records.c
    query = select(c.record_id).where(c.record_id.in_(list(untimed)), c.ts_ns >= since, c.ts_ns <= until)
    stored = set(conn.execute(query.execution_options(**{RANGE_OPTION: (since, until + 1)})).scalars())
    return [row for row in fresh if row[RECORD_ID] not in stored] if stored else fresh


def stored_ids(conn: Connection, rows: list[Row]) -> dict[int, str]:
    """For rows that were not inserted because their span is stored under another record ID: index -> that ID.

    A span re-sent with another start time hashes to another ID; the answer names the stored copy nearest in time
    (a span re-sent with a start time on another UTC day is stored again, its days' tables being apart: there
    can be several).
    """
    trace_ids = sorted({row[TRACE_ID] for row in rows if row[TRACE_ID] and row[SPAN_ID]})
    found: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    c = records.c
    for start in range(0, len(trace_ids), 500):  # bounded IN lists
        trace = partial_indexes.traced(conn, trace_ids[start : start + 500])
        query = select(c.trace_id, c.span_id, c.ts_ns, c.record_id).where(trace.condition)
        for r in conn.execute(trace.within(query)):
            found[(r.trace_id, r.span_id)].append((r.ts_ns, r.record_id))
    renamed = {}
    for i, row in enumerate(rows):
        copies = found.get((row[TRACE_ID], row[SPAN_ID])) if row[TRACE_ID] and row[SPAN_ID] else None
        stored = min(copies, key=lambda c: abs(c[0] - row[TS_NS]))[1] if copies else None
        if stored is not None and stored != row[RECORD_ID]:
            renamed[i] = stored
    return renamed


def record_stored(conn: Connection, row: Row) -> bool:
    """Whether a row's record is already stored (its record ID, or its trace and span ID)."""
    condition = records.c.record_id == row[RECORD_ID]
    if row[TRACE_ID] and row[SPAN_ID]:  # a day table made before SQLite's trace runs still has the span as a key
        span = partial_indexes.traced(conn, [row[TRACE_ID]]).condition
        condition = or_(condition, and_(span, records.c.span_id == row[SPAN_ID]))
    return conn.execute(select(records.c.seq).where(condition).limit(1)).first() is not None
