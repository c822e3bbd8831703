"""SQLite's two random-key indexes, session and trace: which rows of a write hold an entry, and how every row stays
findable.

An index entry whose key is random (a session or trace ID) dirties a random page of an index that grows all day:
one for every span cost the writer about a quarter of its time per row for each of the two indexes once a day's
table held a few million rows (docs/benchmarks.md). So on SQLite each holds about one entry per trace a write brings:

- `ix_records_session` holds the rows with `session_repeat` NULL: a write's first row of each (session, trace, UTC
  day), and every row without a trace. A session's other rows are those of the same traces (`traces.in_sessions`).
- `ix_records_trace_run` holds the rows with `trace_run` not 0. A write stores each (trace, UTC day) of its rows as one
  run of consecutive row numbers (`seq`): the run's first row holds its length, the others 0, and a trace's rows
  are those within `seq` .. `seq + trace_run - 1` of its entries that carry its ID (`traced`).

NULL in either column is a row with an entry of its own: every row stored before these columns, a row inserted
alone (near a quota), a row of `records` (which retention deletes row by row, so no row there may rely on
another), and every row of a write that lost rows to copies already stored. PostgreSQL indexes every row in both.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, bindparam, false, literal_column, select

from loopkit_core.model import DAY_NS, Record
from loopkit_core.store import day_tables, dialect
from loopkit_core.store.day_tables import BASE, RANGE_OPTION
from loopkit_core.store.schema import SESSION_ID, SESSION_REPEAT, SPAN_ID, TRACE_ID, TRACE_RUN, Row, records


class Marks:
    """The `session_repeat` of each row of one write, in the write's order."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()

    def of(self, session_id: str | None, trace_id: str | None, ts_ns: int) -> int | None:
        """1 when an earlier row of this write has the same session, trace and day; None (indexed) otherwise."""
        if session_id is None or not trace_id:
            return None
        key = (session_id, trace_id, ts_ns // DAY_NS)
        if key in self._seen:
            return 1
        self._seen.add(key)
        return None


def trace_runs(batch: list[Record]) -> list[int | None]:
    """The `trace_run` of each record of one write: its (trace, day)'s row count on the first, 0 on the others."""
    counts = Counter((r.trace_id, r.ts_ns // DAY_NS) for r in batch if r.trace_id)
    runs: list[int | None] = []
    for r in batch:
        if not r.trace_id:
            runs.append(None)
            continue
        key = (r.trace_id, r.ts_ns // DAY_NS)
        runs.append(counts.pop(key) if key in counts else 0)
    return runs


def remarked(rows: list[Row]) -> list[Row]:
    """Rows of one write bound for one table of their day, marked as if they were the write's only rows of that day.

    For a day that the write divides between two tables (its last one filled during the write): a run or a
    session's trace entry must lie in the table that holds the rows relying on it.
    """
    counts = Counter(row[TRACE_ID] for row in rows if row[TRACE_ID])
    seen: set[tuple[str, str]] = set()
    marked: list[Row] = []
    for row in rows:
        trace, session = row[TRACE_ID], row[SESSION_ID]
        run = repeat = None
        if trace:
            run = counts.pop(trace) if trace in counts else 0
            if session is not None:
                repeat = 1 if (session, trace) in seen else None
                seen.add((session, trace))
        own = list(row)
        own[SESSION_REPEAT], own[TRACE_RUN] = repeat, run
        marked.append(tuple(own))
    return marked


def indexed(row: Row) -> Row:
    """The row with its own entry in both indexes (a row inserted alone, near a quota, has no earlier row)."""
    if row[SESSION_REPEAT] is None and row[TRACE_RUN] is None:
        return row
    own = list(row)
    own[SESSION_REPEAT] = own[TRACE_RUN] = None
    return tuple(own)


def for_table(table: str, rows: list[Row]) -> list[Row]:
    """The rows of one write as stored in `table`: in a day table, each trace's rows one after another.

    The sort is stable, so each run's first row (the one holding its length) leads it. In `records` (days far from
    now), which retention deletes row by row, every row indexes itself: a day table goes whole, so only there can a
    row rely on an earlier row of its write.
    """
    if table == BASE:
        return [indexed(row) for row in rows]
    return sorted(rows, key=_trace)


def _trace(row: Row) -> str:
    return row[TRACE_ID] or ""


def unstored(dbapi: sqlite3.Connection, table: str, rows: list[Row]) -> list[Row]:
    """The rows whose span (trace and span ID) `table` does not hold yet: SQLite's span key, kept by a lookup.

    A unique index on (trace_id, span_id) would dirty a random page of itself for every span; the lookup reads
    the trace index's entries for the rows' traces, then their runs' rows, under the write lock that the insert
    holds too (records.insert_rows), so no write from elsewhere comes between.
    """
    traces = sorted({row[TRACE_ID] for row in rows if row[TRACE_ID] and row[SPAN_ID]})
    stored: set[tuple[str, str]] = set()
    for start in range(0, len(traces), _CHUNK):
        chunk = traces[start : start + _CHUNK]
        runs = dbapi.execute(
            f"SELECT seq, trace_run FROM {table} WHERE trace_id IN ({','.join('?' * len(chunk))}) "
            "AND trace_id IS NOT NULL AND trace_run IS NOT 0",  # the index's own condition
            chunk,
        ).fetchall()
        seqs = [seq + i for seq, run in runs for i in range(run or 1)]
        for at in range(0, len(seqs), _CHUNK):
            part = seqs[at : at + _CHUNK]
            found = dbapi.execute(
                f"SELECT trace_id, span_id FROM {table} WHERE seq IN ({','.join('?' * len(part))})", part
            )
            stored.update(found.fetchall())
    if not stored:
        return rows
    return [row for row in rows if (row[TRACE_ID], row[SPAN_ID]) not in stored]


def index_added(dbapi: sqlite3.Connection, table: str, after_seq: int, rows: list[Row]) -> None:
    """Give every row added to `table` after `after_seq` its own index entries, if any of `rows` had none.

    For a write that lost rows to copies already stored: the row that was to index a session's trace, or to lead a
    trace's run, may be one of them, so no row is left depending on another.
    """
    if any(row[SESSION_REPEAT] or row[TRACE_RUN] == 0 for row in rows):
        dbapi.execute(
            f"UPDATE {table} SET session_repeat = NULL, trace_run = NULL "
            "WHERE seq > ? AND (session_repeat = 1 OR trace_run = 0)",
            (after_seq,),
        )


# Row numbers a trace read lists from its runs (SQLite); past it, the read scans each day table instead.
MAX_RUN_ROWS = 200_000
_CHUNK = 500  # bound values a lookup statement takes
HEX_ID = re.compile(r"[0-9a-f]{1,32}")  # what a stored trace ID is: safe to write into a statement


@dataclass(frozen=True)
class Traced:
    """How a read reaches the records of some traces: its condition, and the time range of the tables they are in.

    `tables` is a `records_range` (start and end ns) that the tables holding every record of the traces overlap;
    None when the backend does not say (PostgreSQL, whose partitions are pruned by the read's own conditions).
    """

    condition: ColumnElement[bool]
    tables: tuple[int, int] | None = None

    def within(self, stmt: Select[Any]) -> Select[Any]:
        """The statement reading only the tables that hold these traces' records (SQLite's day tables)."""
        return stmt if self.tables is None else stmt.execution_options(**{RANGE_OPTION: self.tables})


def traced(conn: Connection, trace_ids: Sequence[str]) -> Traced:
    """The records of these traces, through the trace index as this backend keeps it.

    SQLite's index holds the first row of each run of a trace's rows that a write stored one after another
    (schema.py, ix_records_trace_run): those rows are read first, within the connection's
    `records_range` if it has one, and the condition lists the row numbers of their runs, with the trace IDs (a
    row number is per table, so the IDs keep another table's row out). A run lies in its first row's table, which
    holds that row's time: the first rows' times span `tables`. PostgreSQL's index holds every row.
    """
    c, ids = records.c, sorted(set(trace_ids))
    if conn.dialect.name == "postgresql" and ids:
        return Traced(dialect.one_of(conn, c.trace_id, ids))
    if conn.dialect.name != "sqlite" or not ids:
        return Traced(c.trace_id.in_(ids))
    # Hex, so written into the statement, joined once: a session read can list 20,000 traces (SQLite binds at most
    # 32,766), and SQLAlchemy renders literal values one by one.
    if all(HEX_ID.fullmatch(t) for t in ids):
        in_list = c.trace_id.op("IN")(literal_column("(" + ",".join(f"'{t}'" for t in ids) + ")"))
    else:
        in_list = c.trace_id.in_(bindparam("traces", ids, expanding=True))
    first = and_(in_list, c.trace_run.is_not(literal_column("0")))  # the index's own condition
    runs = conn.execute(select(c.seq, c.trace_run, c.ts_ns).where(first).limit(MAX_RUN_ROWS + 1)).all()
    if not runs:
        return Traced(false())
    seqs = sorted({seq + i for seq, run, _ in runs for i in range(run or 1)})
    # Only the tables that hold a run's first row (a busy day has several): a range from the first rows' times.
    tables = (min(ts for *_, ts in runs), max(ts for *_, ts in runs) + 1)
    if len(runs) > MAX_RUN_ROWS or len(seqs) > MAX_RUN_ROWS:
        return Traced(in_list, tables)  # the same rows, by scanning each table
    numbers = literal_column("(" + ",".join(map(str, seqs)) + ")")  # integers, joined once
    return Traced(and_(c.seq.op("IN")(numbers), in_list), tables)


# Each head of a run (its trace index entry) joined to the rows of its run by row number. CROSS JOIN: SQLite keeps
# the heads the outer loop, so each run is one range of the table; as a plain join it may build an index on the
# rows' trace IDs instead (0.8 s for 1,000 traces against 6 ms). `+r.trace_id` checks the run's rows without
# offering their trace ID to the planner as a way in.
_RUN_PEOPLE = (
    "SELECT DISTINCT r.trace_id, r.session_id, r.user_id FROM records AS h CROSS JOIN records AS r "
    "ON r.seq BETWEEN h.seq AND h.seq + coalesce(h.trace_run, 1) - 1 "
    "WHERE h.trace_id IN ({traces}) AND h.trace_run IS NOT 0 AND +r.trace_id = h.trace_id "
    "AND (r.session_id IS NOT NULL OR r.user_id IS NOT NULL) AND r.ts_ns + 0 >= ? AND r.ts_ns + 0 < ?{resources} "
    "LIMIT ?"
)


def run_people(
    conn: Connection,
    trace_ids: Sequence[str],
    start_ns: int,
    end_ns: int,
    resource_keys: Sequence[str] | None,
    limit: int,
) -> list[tuple[str, str | None, str | None]] | None:
    """SQLite: distinct (trace, session, user) of these traces' rows in [start_ns, end_ns) with a session or a user.

    One statement per table of the range, each reading the traces' runs through their heads (at most `limit`
    rows from each). Only rows of `resource_keys`' resources when given. None on PostgreSQL, whose trace index
    holds every row: a plain condition on the trace IDs reads them there.
    """
    if conn.dialect.name != "sqlite":
        return None
    resources = "" if resource_keys is None else f" AND r.resource_key IN ({','.join('?' * len(resource_keys))})"
    sql = _RUN_PEOPLE.format(traces=",".join("?" * len(trace_ids)), resources=resources)
    params = (*trace_ids, start_ns, end_ns, *(resource_keys or ()), limit)
    found: list[tuple[str, str | None, str | None]] = []
    for options in day_tables.parts(conn, start_ns, end_ns):
        found += conn.exec_driver_sql(sql, params, execution_options=options).all()
    return found


def in_traces(conn: Connection, trace_ids: Sequence[str]) -> ColumnElement[bool]:
    """The condition for the records of these traces (see `traced`), for a read that keeps its own range."""
    return traced(conn, trace_ids).condition


def during(dialect: str, start_ns: int, end_ns: int) -> ColumnElement[bool]:
    """start_ns <= ts_ns < end_ns, for a read of rows by trace or session; on SQLite no index answers it.

    Those reads find their rows by number (`traced`) or through the session index. Without statistics SQLite
    weighs thousands of row numbers against a range of `ix_records_window` and may scan the whole window instead
    (a session list took 0.65 s that way, 0.09 s before). `ts_ns + 0` keeps the condition and loses the index.
    """
    ts = records.c.ts_ns
    if dialect != "sqlite":
        return and_(ts >= start_ns, ts < end_ns)
    return and_(ts + 0 >= start_ns, ts + 0 < end_ns)
