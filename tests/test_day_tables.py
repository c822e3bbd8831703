"""SQLite day tables: records written across midnight read back exactly as from one table, and retention drops days.

Two stores get the same records around a UTC midnight near now: one lays them out as the server does (a third in
`records`, as a store from before day tables, the rest in their days' tables), the other keeps every record in
`records`. Every read, a whole diagnosis and paging must give the same answers on both.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import pytest
from conftest import query_plans
from sqlalchemy import event, func, select

from loopkit_core.lab import Lab
from loopkit_core.model import DAY_NS, rfc3339
from loopkit_core.retention import purge_project
from loopkit_core.store import day_tables
from loopkit_core.store.records import WindowQuery, read_window
from loopkit_core.store.schema import records
from loopkit_core.store.traces import recent_sessions
from loopkit_core.window import Window

MINUTE = 60 * 10**9
TODAY = time.time_ns() // DAY_NS
MIDNIGHT = TODAY * DAY_NS  # the records run from 90 minutes before it to 90 minutes after
SERVICES = ("checkout", "search", "auth")
OPERATIONS = ("GET /cart", "POST /pay", "GET /find", "POST /login")
FAULTS = ("card declined for order {n}", "timeout after {n} ms talking to db-{n}", "KeyError: 'user-{n}'")


def corpus(seed: int = 7, traces: int = 300) -> list[dict]:
    """Traces of 1-5 spans over three hours around MIDNIGHT: sessions, users, errors, slow calls."""
    rng = random.Random(seed)
    out = []
    for t in range(traces):
        trace_id = f"{rng.getrandbits(128):032x}"
        start = MIDNIGHT - 90 * MINUTE + rng.randrange(180 * MINUTE)
        root = f"{rng.getrandbits(64):016x}"
        session, user = f"sess-{t % 40}", f"user-{t % 25}"
        for s in range(rng.randint(1, 5)):
            span_id = root if s == 0 else f"{rng.getrandbits(64):016x}"
            failing = rng.random() < 0.2
            record = {
                "type": rng.choice(("error", "tool_failure")) if failing else "latency",
                "name": rng.choice(OPERATIONS),
                "service": rng.choice(SERVICES),
                "timestamp": rfc3339(start + s * 1_000_000),
                "duration_ms": round(rng.lognormvariate(3, 1), 3),
                "trace_id": trace_id,
                "span_id": span_id,
                "attributes": {"tier": rng.choice(("free", "paid"))},
            }
            if s:
                record["parent_span_id"] = root
            else:
                record.update(session_id=session, user_id=user)
            if failing:
                record["message"] = rng.choice(FAULTS).format(n=rng.randrange(1000))
            out.append(record)
    return out


def stable(found: list[dict]) -> list[dict]:
    """Records without `received_at`: the two stores were written a moment apart."""
    return [{k: v for k, v in r.items() if k != "received_at"} for r in found]


def _base_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every write to `records`, as a store made before day tables (or a day far from now) has them."""
    monkeypatch.setattr(day_tables, "route", lambda dbapi, info, rows, now_ns=None: {day_tables.BASE: list(rows)})


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Lab, Lab]]:
    """(days, one_table): the same corpus in the day layout (a third of it in `records`) and all in `records`."""
    items = corpus()
    days, one = Lab(), Lab()
    with monkeypatch.context() as patch:
        _base_only(patch)
        one.add(items)
        days.add(items[: len(items) // 3])  # an older store's rows stay in `records`
    days.add(items[len(items) // 3 :])
    for lab in (days, one):
        lab.now_ns = MIDNIGHT + 60 * MINUTE
    yield days, one
    days.close()
    one.close()


def test_writes_go_to_their_days_table_and_far_times_to_records(stores):
    days, one = stores
    layout = day_tables.layout(days.engine)
    assert layout["days"] == [TODAY - 1, TODAY]
    assert day_tables.layout(one.engine) == {"days": [], "tables": 0, "base_records": len(corpus())}
    assert layout["base_records"] == len(corpus()) // 3
    with days.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar_one() == len(corpus())
    # Hostile and backfilled times make no table: they share `records`.
    far = [
        {"type": "event", "name": "x", "timestamp": "1971-01-01T00:00:00Z", "trace_id": "a" * 32, "span_id": "b" * 16}
    ]
    far.append({**far[0], "timestamp": "2200-01-01T00:00:00Z", "span_id": "c" * 16})
    days.add(far)
    assert day_tables.layout(days.engine) == {
        "days": [TODAY - 1, TODAY],
        "tables": 2,
        "base_records": len(corpus()) // 3 + 2,
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (MIDNIGHT - 60 * MINUTE, MIDNIGHT + 60 * MINUTE),  # records + two day tables
        (MIDNIGHT + 5 * MINUTE, MIDNIGHT + 50 * MINUTE),  # records + today's
        (MIDNIGHT - 200 * MINUTE, MIDNIGHT + 200 * MINUTE),  # everything
        (MIDNIGHT + 100 * MINUTE, MIDNIGHT + 200 * MINUTE),  # no record at all
    ],
)
def test_every_window_read_answers_as_one_table_does(stores, start, end):
    days, one = stores
    a, b = (Window("lab", start, end, lab.engine).memoized() for lab in stores)
    errors = {"kind": "records", "type": "error"}
    assert a.counts_by_type() == b.counts_by_type()
    assert a.operations() == b.operations()
    assert a.operations(max_operations=2) == b.operations(max_operations=2)  # grouped over the rows instead
    for op in b.operations():
        assert a.durations(op.name, op.service, limit=20, strata=4) == b.durations(op.name, op.service, 20, 4)
    assert a.signature_groups() == b.signature_groups()
    assert a.summary(errors) == b.summary(errors)
    for column in ("name", "service", "message", "session_id", "user_id", "trace_id", "status"):
        assert a.groups(errors, by=column) == b.groups(errors, by=column)
        assert a.distinct(errors, column, 50) == b.distinct(errors, column, 50)
    assert stable(a.sample(errors, limit=7)) == stable(b.sample(errors, limit=7))
    assert stable(a.sample(errors, limit=7, slowest=True)) == stable(b.sample(errors, limit=7, slowest=True))
    assert a.attribute_sample(errors, limit=5) == b.attribute_sample(errors, limit=5)
    assert a.reach(errors) == b.reach(errors)
    traces = sorted(a.reach(errors)[0])[:20]
    assert stable(a.traces(traces)) == stable(b.traces(traces))
    assert a.span_tree(traces) == b.span_tree(traces)
    assert a.trace_members(errors, traces) == b.trace_members(errors, traces)
    assert stable(a.sessions(["sess-1", "sess-2"])) == stable(b.sessions(["sess-1", "sess-2"]))
    assert a.releases() == b.releases()


def test_reads_across_midnight_neither_sort_nor_group_every_row_of_the_union(stores):
    """Over two day tables, newest-first samples merge the tables' index orders, and aggregates read each table alone.

    SQLite runs a read of a UNION ALL as a co-routine unless it can flatten it, which it does for an ordered read
    only when the ordering columns are result columns; the co-routine's rows are then all sorted or grouped, and
    each arm is planned without the outer GROUP BY (a 20M-record diagnosis took 2.4x as long across midnight).
    """
    days, one = stores
    window = Window("lab", MIDNIGHT - 60 * MINUTE, MIDNIGHT + 60 * MINUTE, days.engine).memoized()
    errors = {"kind": "records", "type": "error"}

    def reads() -> None:
        assert window.attribute_sample(errors, limit=5)
        assert window.counts_by_type()["error"] > 0
        assert window.signature_groups()
        assert window.summary(errors)[0] > 0
        operations = window.operations()
        assert window.operations(max_operations=2) == operations
        sampled = [op for op in operations if op.count > 20]
        assert sampled  # durations() samples these by time strata
        for op in operations:
            assert window.durations(op.name, op.service, limit=20, strata=4)
        assert window.reach(errors)[1]
        assert window.releases()
        sessions, _ = recent_sessions(days.engine, window.start_ns, window.end_ns, scan=1000, sessions=50)
        assert sessions == recent_sessions(one.engine, window.start_ns, window.end_ns, scan=1000, sessions=50)[0]
        assert len(sessions) == 40  # every session of the corpus

    plans = query_plans(days.engine, reads, "records_d")
    for statement, plan in plans:
        if "CO-ROUTINE records" in plan:
            assert "USE TEMP B-TREE FOR ORDER BY" not in plan, statement
            assert "USE TEMP B-TREE FOR GROUP BY" not in plan, statement
        if ("count(" in statement or "DISTINCT" in statement) and "UNION ALL" in statement:
            # An aggregate reads one table a statement, unless it counts a bounded read (durations' first count).
            assert re.search(r"LIMIT \? OFFSET \?\) AS anon_\d+$", statement.strip()), statement
    ordered = [plan for statement, plan in plans if "ORDER BY" in statement and "UNION ALL" in statement]
    assert len(ordered) >= 2 and all("MERGE (UNION ALL)" in plan for plan in ordered)


def test_a_diagnosis_across_midnight_is_the_one_table_diagnosis(stores):
    days, one = stores
    packets = [lab.packet(since_minutes=120) for lab in stores]
    volatile = {"packet_id", "created_at", "created_ns"}
    first, second = ({k: v for k, v in p.items() if k not in volatile} for p in packets)
    assert first["telemetry_read"] == second["telemetry_read"] > 0
    assert len(first["issues"]) >= 3
    assert first == second


def test_paging_across_days_visits_every_record_once_in_order(stores):
    pages: list[list[str]] = []
    for lab in stores:
        seen, after = [], None
        for _ in range(100):
            page, after = read_window(lab.engine, WindowQuery(MIDNIGHT - DAY_NS, MIDNIGHT + DAY_NS, 37, after=after))
            seen += [r["record_id"] for r in page]
            if after is None:
                break
        pages.append(seen)
    assert pages[0] == pages[1]
    assert len(pages[0]) == len(set(pages[0])) == len(corpus())


def test_reads_of_one_day_use_its_table_and_indexes_alone(stores):
    days, _ = stores
    window = Window("lab", MIDNIGHT + 5 * MINUTE, MIDNIGHT + 50 * MINUTE, days.engine)
    sql = []

    def seen(conn, cursor, statement, *args):  # noqa: ANN001
        sql.append(statement)

    event.listen(days.engine, "after_cursor_execute", seen)
    try:
        window.attribute_sample({"kind": "records", "type": "error"})
        # `records` holds rows of this range (an older store's), so: a union of it and today's table, of the
        # columns the read names.
        listed = "attributes, events, name, record_id, resource, resource_key, service, ts_ns, type"
        union = f"(SELECT {listed} FROM records UNION ALL SELECT {listed} FROM {day_tables.table_name(TODAY)})"
        assert f"FROM {union} AS records" in sql[-2]  # the last statement reads the records' resources
        # An aggregate reads each table alone, in turn (day_tables.parts), and adds up.
        del sql[:]
        count = window.summary({"kind": "records", "type": "error"})[0]
        assert [s.split("FROM ")[1].split(" \nWHERE")[0] for s in sql] == [
            "records",
            f"{day_tables.table_name(TODAY)} AS records",
        ]
        assert count > 0
        assert count == sum(
            window.part(*half).summary({"kind": "records", "type": "error"})[0]
            for half in ((window.start_ns, MIDNIGHT + 20 * MINUTE), (MIDNIGHT + 20 * MINUTE, window.end_ns))
        )
        # A day `records` holds nothing of: today's table alone, under the name every reader uses.
        later = Window("lab", MIDNIGHT + 91 * MINUTE, MIDNIGHT + 95 * MINUTE, days.engine)
        days.add([{"type": "error", "name": "late", "message": "x", "timestamp": rfc3339(MIDNIGHT + 92 * MINUTE)}])
        assert later.summary({"kind": "records", "type": "error"})[0] == 1
        assert f"FROM {day_tables.table_name(TODAY)} AS records \nWHERE" in sql[-1]
    finally:
        event.remove(days.engine, "after_cursor_execute", seen)
    with days.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN SELECT count(*) FROM {day_tables.table_name(TODAY)} WHERE name = 'late' "
            f"AND service = 'unknown_service' AND ts_ns >= 0"
        ).all()
    assert "COVERING INDEX ix_records_operation_d" in " ".join(str(row[-1]) for row in plan)


def test_retention_drops_whole_days_and_deletes_older_rows_of_records(stores):
    days, one = stores
    items = corpus()
    # A cutoff inside today: yesterday's table goes whole, today's stays whole (retention is day-granular there),
    # and `records` loses exactly its rows older than the cutoff.
    cutoff = MIDNIGHT + 30 * MINUTE
    deleted, _, dropped = purge_project(days.engine, cutoff, batch_rows=50, pause=0)
    assert dropped == 1
    assert day_tables.layout(days.engine)["days"] == [TODAY]
    base_items = items[: len(items) // 3]
    day_items = items[len(items) // 3 :]
    older_base = sum(1 for r in base_items if r["timestamp"] < rfc3339(cutoff))
    yesterday = sum(1 for r in day_items if r["timestamp"] < rfc3339(MIDNIGHT))
    assert deleted == older_base + yesterday
    with days.engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(records)).scalar_one()
    assert left == len(items) - deleted
    # The next pass finds nothing more to drop.
    assert purge_project(days.engine, cutoff, batch_rows=50, pause=0) == (0, 1, 0)


def test_a_span_resent_across_midnight_in_one_batch_is_stored_once():
    lab = Lab()
    try:
        span = {"type": "event", "name": "op", "trace_id": "d" * 32, "span_id": "e" * 16}
        ids = lab.add(
            [
                {**span, "timestamp": rfc3339(MIDNIGHT - MINUTE)},
                {**span, "timestamp": rfc3339(MIDNIGHT + MINUTE)},
            ]
        )
        assert lab.add([{**span, "timestamp": rfc3339(MIDNIGHT - MINUTE)}]) == ids[:1]
        with lab.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(records)).scalar_one() == 1
        assert day_tables.layout(lab.engine)["days"] == [TODAY - 1]
    finally:
        lab.close()


def test_a_store_kept_forever_reads_through_more_tables_than_one_union_may_hold():
    lab = Lab()
    try:
        item = {"type": "event", "name": "op", "span_id": "f" * 16}
        ids = lab.add([{**item, "trace_id": f"{n + 1:032x}", "timestamp": rfc3339(MIDNIGHT)} for n in range(3)])
        with lab.engine.begin() as conn:
            dbapi = conn.connection.dbapi_connection
            for day in range(TODAY - 1200, TODAY - 1200 + 1100):  # three years of days, as if each had records
                day_tables.ensure(dbapi, conn.info, day_tables.table_name(day))
        assert len(day_tables.layout(lab.engine)["days"]) == 1101
        with lab.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(records)).scalar_one() == 3
            assert sorted(conn.execute(select(records.c.record_id)).scalars()) == sorted(ids)
    finally:
        lab.close()


def test_the_range_of_records_is_two_index_seeks_however_many_rows_it_holds(stores):
    days, _ = stores
    with days.engine.connect() as conn:
        plan = [str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + day_tables.BASE_RANGE)]
    # Read before every SELECT of `records`: a SCAN here cost a second a statement on a 20M-record store.
    assert [step for step in plan if step.startswith(("SCAN", "SEARCH"))] == [
        "SCAN CONSTANT ROW",
        "SEARCH records USING COVERING INDEX ix_records_window",
        "SEARCH records USING COVERING INDEX ix_records_window",
    ]
