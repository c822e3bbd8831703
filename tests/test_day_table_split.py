"""A busy day in several SQLite tables: once a day's last table holds `sqlite_table_rows` records, the next go to a
new one, from a time bound above every record it holds (store/day_tables.py).

Each test writes through the real Writer into a real store of SQLite files with a small bound (1,000 records), at
times in tomorrow's first hours (later than now whatever the time of day, and a day that has its own tables), and
checks every read against the rows the store holds, read without any index.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from conftest import NOW, make_settings, needs_sqlite, span
from sqlalchemy import func, select

from loopkit_core.model import DAY_NS, Record, record_id_for_span
from loopkit_core.projects import create_project
from loopkit_core.retention import purge_project
from loopkit_core.settings import Settings
from loopkit_core.store import day_tables
from loopkit_core.store.engines import Store
from loopkit_core.store.partial_indexes import run_people
from loopkit_core.store.records import WindowQuery, read_window, resource_rows, to_rows
from loopkit_core.store.schema import records
from loopkit_core.store.traces import session_records, trace_spans
from loopkit_core.store.writer import Writer

pytestmark = needs_sqlite
DAY = NOW // DAY_NS + 1
START = DAY * DAY_NS + 3600 * 10**9  # tomorrow, 01:00 UTC
MS = 1_000_000
TRACES = 60


def record(i: int, ts: int | None = None) -> Record:
    """Span `i` (of trace 1 + i % TRACES, session s<trace % 3>), started at START + i ms unless `ts` says."""
    trace = 1 + i % TRACES
    base = span(i, trace=trace, session_id=f"s{trace % 3}", user_id=f"u{trace % 2}")
    at = START + i * MS if ts is None else ts
    rid = record_id_for_span("p", base.trace_id, base.span_id, at)
    return dataclasses.replace(base, ts_ns=at, end_ns=at + 5 * MS, record_id=rid)


def write(store: Store, pid: str, batch: list[Record]) -> tuple[int, dict[int, str]]:
    """One request through the Writer, as the server sends it: rows inserted, and stored IDs of refused copies."""
    writer = Writer(store, threads=1)
    try:
        ack = writer.submit(pid, to_rows(batch, NOW), resources=resource_rows(batch)).result(60)
    finally:
        writer.close(60)
    return ack.inserted, ack.stored_as


def counts(store: Store, pid: str) -> dict[str, int]:
    """Each day table's row count, by name."""
    with sqlite3.connect(store.settings.data_dir / "projects" / f"{pid}.db") as db:
        counts = day_tables.record_counts(db)
        del counts[day_tables.BASE]
        return counts


def check_reads(store: Store, pid: str) -> int:
    """Every read by trace, by session and by window gives exactly the rows a scan finds; returns the count."""
    engine = store.project(pid)
    with engine.connect() as conn:
        rows = conn.execute(select(records.c.record_id, records.c.trace_id, records.c.session_id)).all()
        start, end = START - DAY_NS, START + DAY_NS
        hex_ids = sorted({r.trace_id for r in rows})
        people = run_people(conn, hex_ids, start, end, None, 100_000)
    for trace_id in hex_ids:
        want = sorted(r.record_id for r in rows if r.trace_id == trace_id)
        found = trace_spans(engine, trace_id, 10_000)
        assert found.total == len(want) and sorted(s["record_id"] for s in found.spans) == want, trace_id
    for session_id in ("s0", "s1", "s2"):
        want = sorted(r.record_id for r in rows if r.session_id == session_id)
        found = session_records(engine, session_id, 10_000)
        assert found.total == len(want) and sorted(s["record_id"] for s in found.records) == want, session_id
    assert people is not None and {t for t, *_ in people} == set(hex_ids)
    page, _ = read_window(engine, WindowQuery(start, end, 1000))
    assert len(page) == min(1000, len(rows))
    return len(rows)


@pytest.fixture
def store(tmp_path: Path):
    made = Store(make_settings(tmp_path / "data", sqlite_table_rows=1000))
    yield made
    made.close()


@pytest.fixture
def pid(store: Store) -> str:
    return create_project(store.control, "split")["project_id"]


def test_a_full_day_table_hands_the_days_later_records_to_a_new_one(store: Store, pid: str, tmp_path: Path):
    first = day_tables.table_name(DAY)
    assert write(store, pid, [record(i) for i in range(600)]) == (600, {})
    assert write(store, pid, [record(i) for i in range(600, 1200)]) == (600, {})
    assert counts(store, pid) == {first: 1200}  # not full before this write: it took the whole write
    # Full now. The next write divides the day at the full table's newest time (START + 1199 ms) + 1 ns: its rows
    # stamped earlier (late spans of the same traces) still go to the full table, the rest to the new one.
    late = [record(i, ts=START + 1100 * MS + i * 1000) for i in range(1800, 1900)]
    third = [record(i) for i in range(1200, 1800)] + late
    assert write(store, pid, third) == (700, {})
    second = day_tables.table_name(DAY, START + 1199 * MS + 1)
    assert counts(store, pid) == {first: 1300, second: 600}
    assert check_reads(store, pid) == 1900
    # Re-sent, whole or in part, the spans meet their stored copies: a record's time names its table.
    assert write(store, pid, third) == (0, {})
    assert write(store, pid, [record(i) for i in range(0, 1800, 7)]) == (0, {})
    # A reopened store finds its tables by their names and keeps writing where it left off.
    store.close()
    again = Store(make_settings(tmp_path / "data", sqlite_table_rows=1000))
    try:
        assert write(again, pid, late) == (0, {})
        assert write(again, pid, [record(i) for i in range(1900, 2300)]) == (400, {})
        assert write(again, pid, [record(i) for i in range(2300, 2500)]) == (200, {})
        third_table = day_tables.table_name(DAY, START + 2299 * MS + 1)
        assert counts(again, pid) == {first: 1300, second: 1000, third_table: 200}
        assert check_reads(again, pid) == 2500
        engine = again.project(pid)
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            tables = day_tables.tables(dbapi, conn.info)
            assert [(t.name, t.start_ns, t.end_ns) for t in tables] == [
                (first, DAY * DAY_NS, START + 1199 * MS + 1),
                (second, START + 1199 * MS + 1, START + 2299 * MS + 1),
                (third_table, START + 2299 * MS + 1, (DAY + 1) * DAY_NS),
            ]
            # A read of a time range reads only the tables that hold it.
            assert day_tables.arms(dbapi, conn.info, START + 1500 * MS, START + 1600 * MS) == [second]
            assert day_tables.arms(dbapi, conn.info, START + 1000 * MS, START + 2400 * MS) == [
                first,
                second,
                third_table,
            ]
            in_second = conn.execute(
                select(func.count())
                .select_from(records)
                .where(records.c.ts_ns >= START + 1500 * MS, records.c.ts_ns < START + 1600 * MS)
                .execution_options(records_range=(START + 1500 * MS, START + 1600 * MS))
            ).scalar_one()
            assert in_second == 100
        # Retention drops the day whole: every one of its tables.
        deleted, _, dropped = purge_project(engine, (DAY + 1) * DAY_NS, 1000, pause=0)
        assert (deleted, dropped) == (2500, 3)
        assert counts(again, pid) == {}
    finally:
        again.close()


def test_each_table_of_a_divided_write_holds_the_index_entries_of_its_own_rows(store: Store, pid: str):
    assert write(store, pid, [record(i) for i in range(1000)]) == (1000, {})
    # One write, every trace in both tables: each table's part is marked as a write of its own.
    late = [record(i, ts=START + 900 * MS + i * 1000) for i in range(1000, 1300)]
    assert write(store, pid, [record(i) for i in range(1300, 1600)] + late) == (600, {})
    with sqlite3.connect(store.settings.data_dir / "projects" / f"{pid}.db") as db:
        for name in day_tables.record_tables(db)[1:]:
            rows = db.execute(f"SELECT seq, trace_id, trace_run, session_id, session_repeat FROM {name}").fetchall()
            by_seq = {seq: trace for seq, trace, *_ in rows}
            covered = [seq + k for seq, _, run, *_ in rows if run for k in range(run)]
            # Every row lies in exactly one run of its own trace, in its own table.
            assert sorted(covered) == sorted(by_seq)
            assert all(by_seq[s] == by_seq[h] for h, _, run, *_ in rows if run for s in range(h, h + run))
            heads = {(session, trace) for _, trace, _, session, repeat in rows if repeat is None}
            assert heads == {(session, trace) for _, trace, _, session, _ in rows}
    assert check_reads(store, pid) == 1600


def test_the_new_table_starts_just_after_the_full_ones_newest_record(store: Store, pid: str):
    # The full table's newest record is at START + 999 ms; rows of earlier times keep going to it.
    assert write(store, pid, [record(i) for i in range(1000)]) == (1000, {})
    engine, bound = store.project(pid), START + 999 * MS + 1
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        dbapi.execute("BEGIN IMMEDIATE")  # as the writer's insert holds it
        early, at, later = to_rows([record(400, ts=START + 500 * MS), record(5000, ts=bound), record(6000)], NOW)
        routed = day_tables.route(dbapi, conn.info, [early, at, later])
        assert routed == {day_tables.table_name(DAY): [early], day_tables.table_name(DAY, bound): [at, later]}
        dbapi.rollback()  # the new table goes with the transaction
    assert list(counts(store, pid)) == [day_tables.table_name(DAY)]


def test_a_record_stamped_at_the_days_end_keeps_the_day_in_one_table(store: Store, pid: str):
    end = (DAY + 1) * DAY_NS - 1
    assert write(store, pid, [record(i) for i in range(999)] + [record(999, ts=end)]) == (1000, {})
    assert write(store, pid, [record(i) for i in range(1000, 1500)]) == (500, {})
    assert counts(store, pid) == {day_tables.table_name(DAY): 1500}
    assert check_reads(store, pid) == 1500


@pytest.mark.parametrize("value", [999, 0, -5])
def test_a_table_bound_below_a_thousand_records_is_refused(value: int):
    with pytest.raises(ValueError, match="sqlite_table_rows"):
        Settings(sqlite_table_rows=value).validate()
    assert Settings().sqlite_table_rows == 2_000_000
