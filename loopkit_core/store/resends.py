"""Re-sent copies that per-day unique keys (SQLite day tables, PostgreSQL partitions) cannot refuse, found first."""

from __future__ import annotations

from sqlalchemy import Connection, select

from loopkit_core.model import DAY_NS, UNTIMED_ID_PREFIX
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
