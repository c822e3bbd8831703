"""SQLite's session index: which rows of a write it holds, and how the writer keeps every session findable.

`ix_records_session` holds, on SQLite, only rows with `session_repeat` NULL: a write's first row of each
(session, trace, UTC day), and every row without a trace. A session's other rows are found through those rows'
traces (`traces.in_sessions`). A random-key index entry for every span cost the writer about a quarter of its
time per row once a day's table held a few million (docs/benchmarks.md). PostgreSQL indexes every row.
"""

from __future__ import annotations

import sqlite3

from loopkit_core.model import DAY_NS
from loopkit_core.store.day_tables import BASE
from loopkit_core.store.schema import SESSION_REPEAT, Row


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


def indexed(row: Row) -> Row:
    """The row with its own session index entry (a row inserted alone, near a quota, has no earlier row)."""
    return row if row[SESSION_REPEAT] is None else row[:SESSION_REPEAT] + (None,) + row[SESSION_REPEAT + 1 :]


def for_table(table: str, rows: list[Row]) -> list[Row]:
    """The rows as stored in `table`: in `records`, which retention deletes row by row, each indexes itself.

    A day table goes whole, so a row there can rely on an earlier row of its write; in `records` (days far from
    now) retention could delete that row and keep this one.
    """
    return [indexed(row) for row in rows] if table == BASE else rows


def last_seq(dbapi: sqlite3.Connection, table: str) -> int:
    """The highest row number of a table (0 when empty), read before an insert into it."""
    return dbapi.execute(f"SELECT max(seq) FROM {table}").fetchone()[0] or 0


def index_added(dbapi: sqlite3.Connection, table: str, after_seq: int, rows: list[Row]) -> None:
    """Give every row added to `table` after `after_seq` its own session index entry, if any of `rows` had none.

    For a write that lost rows to copies already stored: the row that was to index its session and trace may be
    one of them (stored under another session or day), so no row is left depending on it.
    """
    if any(row[SESSION_REPEAT] for row in rows):
        dbapi.execute(f"UPDATE {table} SET session_repeat = NULL WHERE seq > ? AND session_repeat = 1", (after_seq,))
