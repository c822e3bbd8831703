"""Re-sent copies that PostgreSQL's partitioned `records` cannot refuse by itself, found before the insert."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from loopkit_core.model import UNTIMED_ID_PREFIX
from loopkit_core.store.schema import RECORD_COLUMNS, records

Row = tuple[Any, ...]  # one records row, in RECORD_COLUMNS order
RECORD_ID, TS_NS = RECORD_COLUMNS.index("record_id"), RECORD_COLUMNS.index("ts_ns")
TRACE_ID, SPAN_ID = RECORD_COLUMNS.index("trace_id"), RECORD_COLUMNS.index("span_id")

# On PostgreSQL's partitioned layout a re-sent span is recognised when its start time is within this of the stored
# copy's (and a record sent without a time, when it arrived within this of it): wider than an exporter's retries,
# and the lookup then reads at most a few day partitions, whatever the history.
RESEND_HORIZON_NS = 86_400 * 10**9


def new_rows(conn: Connection, rows: list[Row]) -> list[Row]:
    """Rows minus re-sent copies: of the same span in `rows`, the first; of one stored within RESEND_HORIZON_NS.

    For PostgreSQL, whose partitioned table's unique keys must hold ts_ns: they only see a resend with the same
    start time. A span re-sent with another start time, or a record without a time (stored at its arrival), is
    found here by (trace_id, span_id) or record ID, through the indexes of the partitions the horizon overlaps.
    """
    seen: set[tuple[str, str]] = set()
    fresh: list[Row] = []
    untimed: list[str] = []
    for row in rows:
        if row[TRACE_ID] and row[SPAN_ID]:
            key = (row[TRACE_ID], row[SPAN_ID])
            if key in seen:
                continue
            seen.add(key)
        elif row[RECORD_ID].startswith(UNTIMED_ID_PREFIX):
            untimed.append(row[RECORD_ID])
        fresh.append(row)
    if not fresh:
        return fresh
    c = records.c
    # Clamped to BIGINT: timestamps are stored as given, up to 2262 (far-future hostile ones included).
    since = max(min(row[TS_NS] for row in fresh) - RESEND_HORIZON_NS, -(2**63))
    until = min(max(row[TS_NS] for row in fresh) + RESEND_HORIZON_NS, 2**63 - 1)
    stored: set[tuple[str, str]] = set()
    trace_ids = sorted({trace_id for trace_id, _ in seen})
    for start in range(0, len(trace_ids), 500):  # bounded IN lists
        query = select(c.trace_id, c.span_id).where(
            c.trace_id.in_(trace_ids[start : start + 500]), c.ts_ns >= since, c.ts_ns <= until
        )
        stored.update((r.trace_id, r.span_id) for r in conn.execute(query))
    stored_ids: set[str] = set()
    if untimed:
        query = select(c.record_id).where(c.record_id.in_(untimed), c.ts_ns >= since, c.ts_ns <= until)
        stored_ids.update(conn.execute(query).scalars())
    if not stored and not stored_ids:
        return fresh
    return [row for row in fresh if (row[TRACE_ID], row[SPAN_ID]) not in stored and row[RECORD_ID] not in stored_ids]
