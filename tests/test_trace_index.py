"""The trace index: SQLite keeps one entry per run of a trace's rows in a write; every read by trace finds every row.

`records.trace_run` holds a run's length on its first row and 0 on the others (store/partial_indexes.py); the writer
stores a run's rows one after another, and reads list the runs' row numbers (`partial_indexes.traced`). SQLite keeps
the span key (a span stored once per day, whatever its start time) by looking the spans up through the same index.
Each test writes through the real Writer into a real store (SQLite files, or PostgreSQL schemas on a PostgreSQL run)
and checks every read against the rows the store holds, read without any index.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import NOW, PG_URL, make_settings, needs_sqlite, query_plans, span
from sqlalchemy import Engine, event, select

from loopkit_core.model import DAY_NS, Record, record_id_for_span
from loopkit_core.projects import create_project
from loopkit_core.selectors import Records
from loopkit_core.store import day_tables
from loopkit_core.store.engines import Store
from loopkit_core.store.migrations import current_version, latest
from loopkit_core.store.partial_indexes import in_traces, run_people
from loopkit_core.store.partitions import PAST_DAYS
from loopkit_core.store.records import WindowQuery, insert_rows, read_window, resource_rows, to_rows
from loopkit_core.store.schema import RECORD_COLUMNS, TRACE_RUN, records
from loopkit_core.store.traces import session_facts, trace_spans
from loopkit_core.store.writer import Writer
from loopkit_core.window import Window


def record(i: int, trace: int, day: int = 0, shift_ns: int = 0) -> Record:
    """Span `i` of trace `trace`, `day` days after NOW's (and `shift_ns` later: another start time, another ID)."""
    base = span(i, trace=trace, session_id=f"s{trace % 3}")
    ts = base.ts_ns + day * DAY_NS + shift_ns
    rid = record_id_for_span("p", base.trace_id, base.span_id, ts)
    return dataclasses.replace(base, ts_ns=ts, end_ns=ts + 5_000_000, record_id=rid)


def write(store: Store, pid: str, batch: list[Record], quota: int | None = None) -> tuple[int, dict[int, str]]:
    """One request through the Writer, as the server sends it: rows inserted, and stored IDs of refused copies."""
    writer = Writer(store, threads=1)
    try:
        ack = writer.submit(pid, to_rows(batch, NOW), quota, resources=resource_rows(batch)).result(60)
    finally:
        writer.close(60)
    return ack.inserted, ack.stored_as


def stored(store: Store, pid: str, trace: int) -> list[str]:
    """Every stored record ID of a trace, by reading every row (no index involved)."""
    with store.project(pid).connect() as conn:
        rows = conn.execute(select(records.c.record_id, records.c.trace_id)).all()
    return sorted(rid for rid, tid in rows if tid == f"{trace:032x}")


def check_reads(store: Store, pid: str, traces: list[int], expected: dict[int, int]) -> None:
    """Every read by trace gives exactly the rows a scan finds, and each trace has its expected number of rows."""
    engine = store.project(pid)
    start, end = NOW - 60 * DAY_NS, NOW + 3 * DAY_NS
    window = Window(pid, start, end, engine)
    for trace in traces:
        hex_id, want = f"{trace:032x}", stored(store, pid, trace)
        assert len(want) == expected[trace], trace
        found = trace_spans(engine, hex_id, 10_000)
        assert found.total == len(want) and sorted(s["record_id"] for s in found.spans) == want
        page, _ = read_window(engine, WindowQuery(start, end, 1000, filters=(("trace_id", (hex_id,)),)))
        assert sorted(r["record_id"] for r in page) == want
        assert sorted(r["record_id"] for r in window.traces([hex_id], limit=10_000)) == want
        assert sorted(ref.record_id for ref in window.span_tree([hex_id])) == want
        assert sorted(ref.record_id for ref in window.trace_members(Records("span"), [hex_id])) == want
    hex_ids = [f"{t:032x}" for t in traces]
    # Several traces at once, as a diagnosis reads them: the rows of all of them, none of another's.
    together = sorted(rid for t in traces for rid in stored(store, pid, t))
    assert sorted(r["record_id"] for r in window.traces(hex_ids, limit=10_000)) == together
    assert sorted(ref.record_id for ref in window.span_tree(hex_ids, limit=10_000)) == together
    # Their sessions and users, as a diagnosis's reach reads them (SQLite: each run through its first row).
    with engine.connect() as conn:
        rows = conn.execute(select(records.c.trace_id, records.c.session_id, records.c.user_id)).all()
        people = run_people(conn, hex_ids, start, end, None, 10_000)
    want_people = {row for row in rows if row[0] in hex_ids and (row[1] is not None or row[2] is not None)}
    assert want_people and (people is None or set(people) == want_people)  # each table's own distinct rows


def entries(store: Store, pid: str) -> dict[str, list[tuple[int, int | None]]]:
    """SQLite: each day table's trace index entries, as (seq, trace_run), read through the index itself."""
    out = {}
    with store.project(pid).connect() as conn:
        dbapi = conn.connection.dbapi_connection
        for name in (table.name for table in day_tables.tables(dbapi, conn.info)):
            out[name] = dbapi.execute(
                f"SELECT seq, trace_run FROM {name} INDEXED BY ix_records_trace_run{name.removeprefix('records')} "
                "WHERE trace_id IS NOT NULL AND trace_run IS NOT 0 ORDER BY seq"
            ).fetchall()
    return out


def plans(engine: Engine, read: Callable[[], object], marker: str = "trace_id IN") -> list[str]:
    """The query plan lines of `read`'s SELECTs of records that contain `marker` (by default: by trace)."""
    return [line for _, plan in query_plans(engine, read, marker) for line in plan]


def test_the_first_record_of_each_trace_and_day_in_a_write_holds_its_runs_length():
    batch = [record(0, 1), record(1, 2), record(2, 1), record(3, 1, day=1), record(4, 2), record(5, 1)]
    batch.append(dataclasses.replace(record(6, 3), trace_id=None, span_id=None))
    assert [row[TRACE_RUN] for row in to_rows(batch, NOW)] == [3, 2, 0, 1, 0, 0, None]


@needs_sqlite
def test_sqlite_indexes_one_row_per_trace_and_write_and_stores_each_run_in_a_row(store: Store, pid: str):
    # 20 traces of 5 spans, interleaved as exporters' batches mix concurrent traces.
    batch = [record(i, 1 + i % 20) for i in range(100)]
    random.Random(7).shuffle(batch)
    assert write(store, pid, batch) == (100, {})
    [(table, index)] = entries(store, pid).items()
    assert len(index) == 20 and {run for _, run in index} == {5}
    with sqlite3.connect(store.settings.data_dir / "projects" / f"{pid}.db") as db:
        rows = db.execute(f"SELECT seq, trace_id FROM {table}").fetchall()
    by_seq = dict(rows)
    for seq, run in index:  # each run's rows are its first row's number and the next four, all of one trace
        assert len({by_seq[seq + k] for k in range(run)}) == 1
    check_reads(store, pid, list(range(1, 21)), dict.fromkeys(range(1, 21), 5))
    # A page of a window filtered by trace, and one trace's spans: the index's entries, then rows by number.
    engine, hex_id = store.project(pid), f"{3:032x}"
    query = WindowQuery(NOW - DAY_NS, NOW + DAY_NS, 100, filters=(("trace_id", (hex_id,)),))
    for read in (lambda: read_window(engine, query), lambda: trace_spans(engine, hex_id, 100)):
        searched = [p for p in plans(engine, read) if p.startswith(("SEARCH", "SCAN"))]
        assert searched and all(p.startswith("SEARCH") for p in searched), searched
        assert {p.split(" USING ")[1].split(" (")[0] for p in searched} == {
            f"INDEX ix_records_trace_run{table.removeprefix('records')}",
            "INTEGER PRIMARY KEY",
        }, searched


def test_every_read_by_trace_finds_every_row_whatever_way_the_rows_came(store: Store, pid: str):
    expected = {}
    # A trace across two writes and across midnight (two day tables on SQLite).
    assert write(store, pid, [record(i, 1) for i in range(4)] + [record(4, 1, day=1), record(5, 2)])[0] == 6
    assert write(store, pid, [record(i, 1) for i in range(6, 9)] + [record(9, 1, day=1)])[0] == 4
    expected |= {1: 9, 2: 1}
    # A write that loses rows to stored copies, the first of its trace's run among them: the rest stays findable.
    resent = [record(0, 1), record(10, 1), record(11, 1), record(5, 2), record(12, 2)]
    inserted, stored_as = write(store, pid, resent)
    assert (inserted, stored_as) == (3, {})
    expected |= {1: 11, 2: 2}
    # Copies within one request: the first is kept.
    assert write(store, pid, [record(13, 3), record(13, 3, shift_ns=7_000_000), record(14, 3)])[0] == 2
    expected[3] = 2
    # Near a quota rows go in one at a time, each its own entry.
    with store.project(pid).connect() as conn:
        total = len(conn.execute(select(records.c.seq)).all())
    assert write(store, pid, [record(i, 4) for i in range(15, 20)], quota=total + 3)[0] == 3
    expected[4] = 3
    # Days far from now go to `records`, where every row is its own entry.
    far = -(PAST_DAYS + 5)
    assert write(store, pid, [record(i, 5, day=far) for i in range(20, 24)] + [record(24, 5)])[0] == 5
    expected[5] = 5
    check_reads(store, pid, [1, 2, 3, 4, 5], expected)
    assert trace_spans(store.project(pid), f"{99:032x}", 10).total == 0


def test_a_span_re_sent_with_another_start_time_on_the_same_day_is_stored_once_and_named(store: Store, pid: str):
    assert write(store, pid, [record(i, 7) for i in range(3)]) == (3, {})
    first = stored(store, pid, 7)
    # The same spans, started a second later (so other record IDs), and a new span of the trace, in another order.
    again = [record(9, 7), record(2, 7, shift_ns=10**9), record(0, 7, shift_ns=10**9)]
    inserted, stored_as = write(store, pid, again)
    assert inserted == 1 and stored_as == {1: record(2, 7).record_id, 2: record(0, 7).record_id}
    assert set(first) < set(stored(store, pid, 7)) and len(stored(store, pid, 7)) == 4
    # Identical copies are refused by their record ID: nothing changes.
    assert write(store, pid, again) == (0, {1: record(2, 7).record_id, 2: record(0, 7).record_id})
    check_reads(store, pid, [7], {7: 4})


@needs_sqlite
def test_the_span_lookup_and_the_insert_hold_the_write_lock_together(store: Store, pid: str, tmp_path: Path):
    assert write(store, pid, [record(0, 8)]) == (1, {})  # today's table exists
    table, engine = day_tables.table_name(NOW // DAY_NS), store.project(pid)
    # Another writer is storing span 1 and has not committed yet; this one brings the same span, started later.
    other = sqlite3.connect(tmp_path / "data" / "projects" / f"{pid}.db", isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")
    marks = ", ".join("?" * len(RECORD_COLUMNS))
    other.execute(
        f"INSERT INTO {table} ({', '.join(RECORD_COLUMNS)}) VALUES ({marks})", to_rows([record(1, 8)], NOW)[0]
    )
    result: list[int] = []

    def insert() -> None:
        with engine.begin() as conn:  # nothing written before: insert_rows takes the lock before its lookup
            result.append(insert_rows(conn, to_rows([record(1, 8, shift_ns=10**9)], NOW)))

    worker = threading.Thread(target=insert)
    worker.start()
    time.sleep(0.3)
    assert result == [] and worker.is_alive()  # waiting for the lock, not looking up around it
    other.execute("COMMIT")
    other.close()
    worker.join(10)
    assert result == [0] and len(stored(store, pid, 8)) == 2


@needs_sqlite
def test_migration_11_keeps_older_day_tables_readable_and_narrows_new_ones(tmp_path: Path):
    data = tmp_path / "data"
    store = Store(make_settings(data))
    pid = create_project(store.control, "traces")["project_id"]
    assert write(store, pid, [record(i, 1 + i // 4) for i in range(40)]) == (40, {})
    store.close()
    # Put the store back at version 10: no trace_run column, and the unique span key on each table.
    path = data / "projects" / f"{pid}.db"
    with sqlite3.connect(path) as db:
        (today,) = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'records_d%'")]
        for table in ("records", today):
            suffix = table.removeprefix("records")
            db.execute(f"DROP INDEX ix_records_trace_run{suffix}")
            db.execute(f"ALTER TABLE {table} DROP COLUMN trace_run")
            db.execute(f"CREATE UNIQUE INDEX ux_records_span{suffix} ON {table} (trace_id, span_id)")
        db.execute("DELETE FROM loopkit_schema_version WHERE version >= 11")
    store = Store(make_settings(data))
    try:
        engine = store.project(pid)
        assert current_version(engine) == latest("project") == 12
        expected = dict.fromkeys(range(1, 11), 4)
        check_reads(store, pid, list(range(1, 11)), expected)
        # Today's table keeps its unique span key (rows from now on in runs); tomorrow's gets the partial index.
        assert write(store, pid, [record(i, 1 + i % 5) for i in range(40, 50)])[0] == 10
        assert write(store, pid, [record(i, 1 + i % 5, day=1) for i in range(50, 60)])[0] == 10
        assert write(store, pid, [record(0, 1, shift_ns=10**9), record(60, 1)])[0] == 1  # refused on the old key
        for trace in range(1, 6):
            expected[trace] += 4 + (trace == 1)
        check_reads(store, pid, list(range(1, 11)), expected)
        with sqlite3.connect(path) as db:
            sql = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        tomorrow = day_tables.table_name(NOW // DAY_NS + 1).removeprefix("records")
        assert f"ux_records_span{today.removeprefix('records')}" in sql and "ux_records_span" not in sql
        assert f"ux_records_span{tomorrow}" not in sql
        assert "trace_run IS NOT 0" in sql[f"ix_records_trace_run{tomorrow}"] and "ix_records_trace_run" in sql
    finally:
        store.close()


@pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")
def test_postgresql_keeps_its_span_key_and_reads_traces_by_it(store: Store, pid: str):
    assert write(store, pid, [record(i, 1 + i % 3) for i in range(9)]) == (9, {})
    with store.project(pid).connect() as conn:
        indexes = conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %(s)s", {"s": store.project_schema(pid)}
        ).scalars()
        names = set(indexes)
    assert any(name.endswith("_span") for name in names) and not any("trace_run" in name for name in names)
    check_reads(store, pid, [1, 2, 3], dict.fromkeys([1, 2, 3], 3))


@pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")
def test_postgresql_binds_the_trace_ids_of_a_read_as_one_array(store: Store, pid: str):
    # 1,000 traces a read made 1,000 parameters; one array binds and parses faster. Hostile IDs (NUL, quotes,
    # braces and commas, which an array literal would split on) match nothing and break nothing.
    assert write(store, pid, [record(i, 1 + i % 3) for i in range(9)]) == (9, {})
    asked = [f"{2:032x}", "x\x00'y", '{a,"b"}', f"{3:032x}", f"{2:032x}"]
    statements: list[tuple[str, Any]] = []
    engine = store.project(pid)

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(records.c.trace_id).where(in_traces(conn, asked))).scalars().all()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sorted(found) == 3 * [f"{2:032x}"] + 3 * [f"{3:032x}"]
    [(statement, parameters)] = statements
    arrays = [v for v in parameters.values() if isinstance(v, list)]
    assert "ANY" in statement and len(parameters) == 1 and len(arrays[0]) == 4  # once each, sorted by traced()


@needs_sqlite
def test_reads_by_trace_or_session_in_a_window_go_by_row_number_not_by_the_windows_range(store: Store, pid: str):
    # 10,000 spans in 2,000 traces of 5, in 500 sessions: thousands of row numbers per read. Without statistics
    # SQLite would rather scan the window's range of ix_records_window unless the range cannot use it.
    batch = [dataclasses.replace(record(i, 1 + i // 5), session_id=f"s{(i // 5) % 500}") for i in range(10_000)]
    for start in range(0, len(batch), 2_000):
        assert write(store, pid, batch[start : start + 2_000])[0] == 2_000
    engine = store.project(pid)
    window = Window(pid, NOW - DAY_NS // 2, NOW + DAY_NS // 2, engine)
    sessions = [f"s{k}" for k in range(500)]
    traces = [f"{t:032x}" for t in range(1, 2_001)]
    page = WindowQuery(NOW - DAY_NS, NOW + DAY_NS, 10, (("trace_id", tuple(traces[:900])),))
    reads = {
        "session facts": lambda: session_facts(engine, sessions, NOW - DAY_NS // 2, NOW + DAY_NS // 2, 1e3, 10**5),
        "window sessions": lambda: window.sessions(sessions, limit=20_000),
        "window traces": lambda: window.traces(traces, limit=20_000),
        "trace page": lambda: read_window(engine, page),
        "next trace page": lambda: read_window(engine, dataclasses.replace(page, after=(NOW, "rec_z"))),
    }
    for name, read in reads.items():
        searched = [p for p in plans(engine, read, "seq IN") if p.startswith(("SEARCH", "SCAN"))]
        by_range = [p for p in searched if "ix_records_window" in p or p.startswith("SCAN")]
        assert searched and not by_range, (name, searched)
    facts, complete = session_facts(engine, sessions, NOW - DAY_NS // 2, NOW + DAY_NS // 2, 1e3, 10**5)
    assert complete and sum(f.records for f in facts.values()) == 10_000 and facts["s7"].traces == 4
    # The traces' sessions and users: each run's first row through the trace index, then its rows by number; two
    # statements of 1,000 traces, each with that plan.
    people = [p.split(" (")[0] for p in plans(engine, lambda: window.reach(Records("span").to_json()), "CROSS JOIN")]
    day_index = f"ix_records_trace_run_d{NOW // DAY_NS}"
    assert sorted(people) == 2 * [f"SEARCH h USING INDEX {day_index}"] + 2 * ["SEARCH r USING INTEGER PRIMARY KEY"] + (
        2 * ["USE TEMP B-TREE FOR DISTINCT"]
    ), people
    traces_, sessions_, _users = window.reach(Records("span").to_json())
    assert (len(traces_), len(sessions_)) == (2_000, 500)


def test_reach_finds_the_sessions_and_users_of_a_selectors_traces_in_one_table_or_several(store: Store, pid: str):
    # Trace t: a failing child (no session) in one write; in a later one another child, then the root with the
    # session and user, as the second row of its run.
    first, second = [], []
    for t in range(1, 41):
        day = t % 2
        first.append(dataclasses.replace(record(3 * t, t, day=day), name="child", session_id=None))
        second.append(dataclasses.replace(record(3 * t + 1, t, day=day), name="step", session_id=None))
        root = dataclasses.replace(record(3 * t + 2, t, day=day), name="root", session_id=f"s{t}")
        second.append(dataclasses.replace(root, user_id=f"u{t % 7}"))
    assert write(store, pid, first)[0] == 40 and write(store, pid, second)[0] == 80
    engine = store.project(pid)
    children = Records("span", name="child").to_json()
    # Today's table alone, then today's and tomorrow's: the roots are found through their runs' first rows.
    for end, traces in ((NOW + DAY_NS // 2, range(2, 41, 2)), (NOW + 2 * DAY_NS, range(1, 41))):
        found = Window(pid, NOW - DAY_NS // 2, end, engine).reach(children)
        assert found == ({f"{t:032x}" for t in traces}, {f"s{t}" for t in traces}, {f"u{t % 7}" for t in traces})
