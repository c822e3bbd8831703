"""The session index: SQLite keeps one entry per session, trace, day and write; session reads still find every row.

`records.session_repeat` marks the rows whose session and trace an earlier row of the same write already put in
the index (store/records.py, to_rows); reads go through the indexed rows' traces (store/traces.py, in_sessions).
Each test writes through the real Writer into a real store (SQLite files, or PostgreSQL schemas on a PostgreSQL
run) and checks the reads against every row the store holds with that session.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import NOW, PG_URL, make_settings, needs_sqlite, query_plans, span
from sqlalchemy import Engine, select

from loopkit_core.model import DAY_NS, Record, record_id_for_span
from loopkit_core.projects import create_project
from loopkit_core.store import day_tables
from loopkit_core.store.engines import Store
from loopkit_core.store.migrations import current_version, latest, schema_version
from loopkit_core.store.partitions import PAST_DAYS
from loopkit_core.store.records import resource_rows, to_rows
from loopkit_core.store.schema import SESSION_REPEAT, records
from loopkit_core.store.traces import session_facts, session_records
from loopkit_core.store.writer import Writer
from loopkit_core.window import Window


def record(i: int, trace: int, session: str | None, day: int = 0) -> Record:
    """Span `i` of trace `trace` in `session`, `day` days after NOW's."""
    base = span(i, trace=trace, session_id=session)
    ts = base.ts_ns + day * DAY_NS
    rid = record_id_for_span("p", base.trace_id, base.span_id, ts)
    return dataclasses.replace(base, ts_ns=ts, end_ns=ts + 5_000_000, record_id=rid)


def write(store: Store, pid: str, batch: list[Record], quota: int | None = None) -> int:
    """One request through the Writer, as the server sends it; the number of rows inserted."""
    writer = Writer(store, threads=1)
    try:
        return writer.submit(pid, to_rows(batch, NOW), quota, resources=resource_rows(batch)).result(60).inserted
    finally:
        writer.close(60)


def stored(store: Store, pid: str, session: str) -> list[str]:
    """Every stored record ID of a session, by reading every row (no index involved)."""
    with store.project(pid).connect() as conn:
        rows = conn.execute(select(records.c.record_id, records.c.session_id)).all()
    return sorted(rid for rid, sid in rows if sid == session)


def read(store: Store, pid: str, session: str) -> list[str]:
    """A session's record IDs as the session API reads them, checking its count against them."""
    found = session_records(store.project(pid), session, 10_000)
    assert found.total == len(found.records)
    return sorted(r["record_id"] for r in found.records)


def indexes_used(engine: Engine, read: Callable[[], object]) -> set[str]:
    """The indexes (day suffix cut) through which `read`'s SELECTs of session records search the day tables.

    Fails if any of them scans a day table.
    """
    plans = [line for _, plan in query_plans(engine, read, "session_id IN") for line in plan]
    # One day table is read as `records` itself; several as a UNION ALL co-routine, which is scanned as `records`.
    union = any(p.startswith("CO-ROUTINE") for p in plans)
    scans = [p for p in plans if p.startswith("SCAN records_d") or (p.startswith("SCAN records") and not union)]
    assert plans and not scans, plans
    searches = [p.split(" USING ")[1] for p in plans if p.startswith("SEARCH records")]
    # A trace's rows are read by row number, from its runs' first rows (store/partial_indexes.py): "rowid".
    return {
        "rowid" if p.startswith("INTEGER PRIMARY KEY") else p.split("INDEX ")[1].split(" ")[0].rsplit("_d", 1)[0]
        for p in searches
    }


def test_only_the_first_row_of_a_session_trace_and_day_in_a_write_is_marked_for_the_index():
    batch = [record(0, 1, "a"), record(1, 1, "a"), record(2, 2, "a"), record(3, 1, "b"), record(4, 1, None)]
    batch += [record(5, 1, "a", day=1), record(6, 1, "a", day=1), record(7, 3, "a")]
    batch.append(dataclasses.replace(record(8, 1, "c"), trace_id=None, span_id=None))
    batch.append(dataclasses.replace(record(9, 1, "c"), trace_id=None, span_id=None))
    marks = [row[SESSION_REPEAT] for row in to_rows(batch, NOW)]
    # Rows without a trace cannot be found through one: each is its own way in.
    assert marks == [None, 1, None, None, None, None, 1, None, None, None]


def test_a_session_read_finds_every_row_across_writes_traces_and_days(store: Store, pid: str):
    # Session "a": trace 1 over three writes and two days, trace 2 in one write, and records without a trace.
    assert write(store, pid, [record(i, 1, "a") for i in range(10)] + [record(10, 2, "b")]) == 11
    assert write(store, pid, [record(i, 1, "a") for i in range(10, 20)] + [record(20, 2, "a")]) == 11
    later = [record(i, 1, "a", day=1) for i in range(21, 25)]
    untraced = [dataclasses.replace(record(i, 9, "a"), trace_id=None, span_id=None) for i in range(25, 28)]
    assert write(store, pid, later + untraced + [record(28, 2, "b")]) == 8
    expected = stored(store, pid, "a")
    assert len(expected) == 28
    assert read(store, pid, "a") == expected
    assert read(store, pid, "b") == stored(store, pid, "b") and len(stored(store, pid, "b")) == 2
    assert read(store, pid, "nobody") == []
    facts, complete = session_facts(store.project(pid), ["a", "b"], None, None, 1_000.0, 100)
    assert complete and (facts["a"].records, facts["a"].traces, facts["b"].records) == (28, 2, 2)
    # A window restricts them: only the first day's rows of "a".
    facts, _ = session_facts(store.project(pid), ["a"], NOW - DAY_NS // 2, NOW + DAY_NS // 2, 1_000.0, 100)
    assert facts["a"].records == 24


def test_a_diagnosis_window_reads_a_sessions_records_within_it(store: Store, pid: str):
    assert write(store, pid, [record(i, 1, "u") for i in range(6)] + [record(6, 2, "v")]) == 7
    assert write(store, pid, [record(i, 1, "u", day=1) for i in range(7, 12)]) == 5
    engine = store.project(pid)
    # A window over NOW's day only: its six records of "u", marked or not; none of the next day's five.
    today = Window(pid, NOW - DAY_NS // 2, NOW + DAY_NS // 2, engine)
    assert sorted(r["record_id"] for r in today.sessions(["u"])) == stored(store, pid, "u")[:6]
    tomorrow = Window(pid, NOW + DAY_NS // 2, NOW + 2 * DAY_NS, engine)
    assert sorted(r["record_id"] for r in tomorrow.sessions(["u", "v"])) == stored(store, pid, "u")[6:]
    assert [r["session_id"] for r in today.sessions(["v"])] == ["v"]
    if PG_URL is None:  # through the session index and rows by number, not a scan of the window
        assert indexes_used(engine, lambda: today.sessions(["u"])) == {"ix_records_session", "rowid"}


@needs_sqlite
def test_sqlite_indexes_one_row_per_session_trace_day_and_write_and_reads_use_the_indexes(store: Store, pid: str):
    assert write(store, pid, [record(i, i // 5, f"s{i // 25}") for i in range(100)]) == 100
    assert write(store, pid, [record(i, i // 5, f"s{i // 25}", day=1) for i in range(100, 200)]) == 100
    # Two records of "s3" without a trace, which only the session index can find.
    untraced = [dataclasses.replace(record(i, 0, "s3"), trace_id=None, span_id=None) for i in (200, 201)]
    assert write(store, pid, untraced) == 2
    engine = store.project(pid)
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        tables = [table.name for table in day_tables.tables(dbapi, conn.info)]
        assert len(tables) == 2
        entries = {
            table: dbapi.execute(
                f"SELECT count(*) FROM {table} INDEXED BY ix_records_session{table.removeprefix('records')} "
                "WHERE session_id IS NOT NULL AND session_repeat IS NULL"
            ).fetchone()[0]
            for table in tables
        }
    # Each day: 100 rows, 20 traces of 5 spans each in one session; today also the 2 rows without a trace.
    assert entries == {day_tables.table_name(NOW // DAY_NS): 22, day_tables.table_name(NOW // DAY_NS + 1): 20}
    for session, count in (("s0", 25), ("s3", 27), ("s4", 25), ("s7", 25)):
        assert read(store, pid, session) == stored(store, pid, session)
        assert len(stored(store, pid, session)) == count
    # The read's plan searches each day table's session index and rows by number; it scans none.
    assert indexes_used(engine, lambda: session_records(engine, "s3", 10)) == {"ix_records_session", "rowid"}


def test_a_session_stays_whole_when_the_row_that_was_to_index_it_is_a_stored_copy(store: Store, pid: str):
    assert write(store, pid, [record(0, 1, "first")]) == 1
    # The same span again, now claiming session "second", ahead of a new span of that session and trace: the
    # copy is not stored, and the new span must still be found in "second".
    resent = [record(0, 1, "second"), record(1, 1, "second"), record(2, 1, "second")]
    assert write(store, pid, resent) == 2
    assert read(store, pid, "second") == stored(store, pid, "second") and len(stored(store, pid, "second")) == 2
    assert read(store, pid, "first") == stored(store, pid, "first") and len(stored(store, pid, "first")) == 1
    # Near a quota the rows go in one at a time: the same must hold.
    with store.project(pid).connect() as conn:
        total = len(conn.execute(select(records.c.seq)).all())
    again = [record(3, 2, "first"), record(3, 2, "third"), record(4, 2, "third")]
    assert write(store, pid, [again[0]]) == 1
    assert write(store, pid, again[1:], quota=total + 2) == 1
    assert read(store, pid, "third") == stored(store, pid, "third") and len(stored(store, pid, "third")) == 1


@needs_sqlite
def test_rows_of_days_far_from_now_each_index_their_session(store: Store, pid: str, tmp_path: Path):
    # They go to `records`, whose retention deletes row by row: none may depend on an earlier row of its write.
    far = -(PAST_DAYS + 5)
    assert write(store, pid, [record(i, 1, "old", day=far) for i in range(6)] + [record(6, 1, "old")]) == 7
    with sqlite3.connect(tmp_path / "data" / "projects" / f"{pid}.db") as db:
        base = db.execute("SELECT count(*), count(session_repeat) FROM records").fetchone()
        today = db.execute(f"SELECT count(*) FROM {day_tables.table_name(NOW // DAY_NS)}").fetchone()
    assert base == (6, 0) and today == (1,)
    assert read(store, pid, "old") == stored(store, pid, "old") and len(stored(store, pid, "old")) == 7


@needs_sqlite
def test_migration_10_keeps_the_session_reads_of_older_day_tables_and_narrows_new_ones(tmp_path: Path):
    data = tmp_path / "data"
    store = Store(make_settings(data))
    pid = create_project(store.control, "sessions")["project_id"]
    assert write(store, pid, [record(i, i // 4, "old") for i in range(40)]) == 40
    store.close()
    # Put the store back at version 9: no session_repeat column, and every row in a full session index.
    path = data / "projects" / f"{pid}.db"
    with sqlite3.connect(path) as db:
        (today,) = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'records_d%'")]
        for table in ("records", today):
            suffix = table.removeprefix("records")
            db.execute(f"DROP INDEX ix_records_session{suffix}")
            db.execute(f"ALTER TABLE {table} DROP COLUMN session_repeat")
            db.execute(f"CREATE INDEX ix_records_session{suffix} ON {table} (session_id)")
        db.execute("DELETE FROM loopkit_schema_version WHERE version >= 10")
    store = Store(make_settings(data))
    try:
        engine = store.project(pid)
        assert current_version(engine) == latest("project") == 12
        with engine.connect() as conn:
            assert conn.execute(select(schema_version.c.version)).scalars().all() == list(range(1, 13))
        assert read(store, pid, "old") == stored(store, pid, "old") and len(stored(store, pid, "old")) == 40
        # Today's table keeps its full index; tomorrow's is new and gets the narrow one.
        assert write(store, pid, [record(i, 100 + i // 4, "old") for i in range(40, 48)]) == 8
        assert write(store, pid, [record(i, 200 + i // 4, "old", day=1) for i in range(48, 56)]) == 8
        with sqlite3.connect(path) as db:
            sql = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE name LIKE 'ix_records_session%'"))
        tomorrow = day_tables.table_name(NOW // DAY_NS + 1)
        assert "WHERE" not in sql[f"ix_records_session{today.removeprefix('records')}"]
        assert "session_repeat IS NULL" in sql[f"ix_records_session{tomorrow.removeprefix('records')}"]
        assert "session_repeat IS NULL" in sql["ix_records_session"]
        assert read(store, pid, "old") == stored(store, pid, "old") and len(stored(store, pid, "old")) == 56
    finally:
        store.close()


@pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")
def test_migration_10_adds_the_column_to_every_postgresql_partition(tmp_path: Path):
    data = tmp_path / "data"
    store = Store(make_settings(data))
    pid = create_project(store.control, "sessions")["project_id"]
    assert write(store, pid, [record(i, i // 4, "old") for i in range(20)]) == 20
    schema = store.project_schema(pid)
    with store.project(pid).begin() as conn:  # back to version 9: no session_repeat anywhere
        conn.exec_driver_sql(f'ALTER TABLE "{schema}".records DROP COLUMN session_repeat')
        conn.exec_driver_sql(f'DELETE FROM "{schema}".loopkit_schema_version WHERE version >= 10')
    store.close()
    store = Store(make_settings(data))
    try:
        engine = store.project(pid)
        assert current_version(engine) == latest("project") == 12
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = %(schema)s "
                "AND column_name = 'session_repeat' ORDER BY table_name",
                {"schema": schema},
            ).scalars()
            assert set(tables) >= {"records", "records_default", day_tables.table_name(NOW // DAY_NS)}
        assert write(store, pid, [record(i, 50 + i // 4, "old") for i in range(20, 28)]) == 8
        assert read(store, pid, "old") == stored(store, pid, "old") and len(stored(store, pid, "old")) == 28
    finally:
        store.close()
