"""PostgreSQL day partitions of `records` (store/partitions.py, project migration 8): routing, retention, upgrade.

PostgreSQL only (skipped without LOOPKIT_TEST_DATABASE_URL): SQLite keeps one table per project file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import NOW, PG_URL, make_settings, span
from sqlalchemy import func, select

from loopkit_core.projects import create_project
from loopkit_core.retention import purge_project
from loopkit_core.store import partitions
from loopkit_core.store.engines import Store
from loopkit_core.store.migrations import current_version, latest
from loopkit_core.store.records import get_record, insert_records, resource_rows, to_rows
from loopkit_core.store.schema import records
from loopkit_core.store.writer import Writer

pytestmark = pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")
DAY_NS = partitions.DAY_NS
TODAY = NOW // DAY_NS


def spans_at(times: list[int], trace: int) -> list:
    """One span per start time, all of trace `trace`."""
    return [span(i, trace=trace, ts_ns=ts, end_ns=ts + 1000) for i, ts in enumerate(times)]


def where_stored(store: Store, pid: str) -> dict[str, int]:
    """Records per partition table."""
    schema = store.project_schema(pid)
    with store.project(pid).connect() as conn:
        rows = conn.exec_driver_sql(
            f'SELECT c.relname, count(*) FROM "{schema}".records r JOIN pg_class c ON c.oid = r.tableoid GROUP BY 1'
        ).all()
    return dict(rows)


def write(store: Store, pid: str, batch: list) -> int:
    """Through the writer, as ingest does: the days' partitions are made before the commit."""
    writer = Writer(store, threads=1)
    try:
        return writer.submit(pid, to_rows(batch, NOW), resources=resource_rows(batch)).result(timeout=60).inserted
    finally:
        writer.close(timeout=30)


def test_a_new_store_is_partitioned_and_the_writer_makes_each_near_day_before_its_commit(store: Store, pid: str):
    engine = store.project(pid)
    assert partitions.layout(engine) == {"partitioned": True, "days": [], "default": True, "legacy": False}
    times = [NOW, NOW - 1, NOW - DAY_NS, NOW - 40 * DAY_NS, NOW + 5 * DAY_NS]
    assert write(store, pid, spans_at(times, trace=1)) == 5
    # Today and yesterday got their own partitions; 40 days ago and 5 days ahead share the default one.
    assert partitions.layout(engine)["days"] == [TODAY - 1, TODAY]
    assert where_stored(store, pid) == {
        partitions.partition_name(TODAY): 2,
        partitions.partition_name(TODAY - 1): 1,
        partitions.DEFAULT: 2,
    }
    # Known days cost nothing the next time; every record reads back through `records`.
    assert partitions.ensure(engine, {TODAY, TODAY - 1, TODAY - 40}, NOW) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar_one() == 5


def test_a_day_the_default_partition_already_holds_stays_there(store: Store, pid: str):
    engine = store.project(pid)
    with engine.begin() as conn:  # straight in, without the writer: today's rows land in the default partition
        assert insert_records(conn, spans_at([NOW, NOW - 2], trace=1), NOW) == 2
    assert partitions.ensure(engine, {TODAY}, NOW) == []
    assert partitions.layout(engine)["days"] == []
    assert write(store, pid, spans_at([NOW - 5], trace=2)) == 1
    assert where_stored(store, pid) == {partitions.DEFAULT: 3}


def test_two_processes_making_the_same_day_make_it_once(tmp_path: Path, pid: str, store: Store):
    other = Store(make_settings(tmp_path / "data"))  # its own pool and its own knowledge of the partitions
    try:
        engines = [store.project(pid), other.project(pid)]
        barrier = threading.Barrier(2, timeout=30)
        made: list[list[int]] = [[], []]

        def make(i: int) -> None:
            barrier.wait()
            made[i] = partitions.ensure(engines[i], {TODAY + 1}, NOW)

        threads = [threading.Thread(target=make, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        partitions.forget(store.project_schema(pid))  # forget() is per process; both stores share this one
        assert sorted(made) == [[], [TODAY + 1]]
        assert partitions.layout(engines[0])["days"] == [TODAY + 1]
    finally:
        other.close()


def test_retention_drops_whole_expired_days_and_deletes_other_rows_one_by_one(store: Store, pid: str):
    engine = store.project(pid)
    cutoff = NOW - 5 * DAY_NS
    if cutoff % DAY_NS < 10**9:  # the day-granularity assertions need a cutoff inside a day
        cutoff += 10**9
    times = [NOW - 10 * DAY_NS, NOW - 10 * DAY_NS - 1, cutoff - 1, NOW - 3 * DAY_NS, NOW, NOW - 50 * DAY_NS]
    assert write(store, pid, spans_at(times, trace=1)) == 6
    assert len(partitions.layout(engine)["days"]) == 4
    deleted, batches, dropped = purge_project(engine, cutoff, batch_rows=100)
    # The day of 10 days ago went whole (2 records); the 50-day-old record was deleted from the default partition.
    assert (deleted, dropped) == (3, 1)
    assert batches == 1
    # Retention is day-granular on partitions: the record just past the cutoff stays until its whole day expires.
    with engine.connect() as conn:
        kept = sorted(conn.execute(select(records.c.ts_ns)).scalars())
    assert kept == sorted([cutoff - 1, NOW - 3 * DAY_NS, NOW])
    assert (cutoff - 1) // DAY_NS in partitions.layout(engine)["days"]
    assert (TODAY - 10) not in partitions.layout(engine)["days"]
    # Nothing left to do: a second pass finds nothing.
    assert purge_project(engine, cutoff, batch_rows=100) == (0, 1, 0)


def test_a_store_of_the_previous_layout_is_partitioned_on_open_keeping_every_record(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    store = Store(settings)
    pid = create_project(store.control, "legacy")["project_id"]
    schema = store.project_schema(pid)
    old = spans_at([NOW - 3 * DAY_NS - i for i in range(50)], trace=1)
    with store.project(pid).begin() as conn:
        # The table as migration 7 left it: one plain table, unique on the span and the record ID alone.
        conn.exec_driver_sql(f'DROP TABLE "{schema}".records')
        records.create(conn)
        conn.exec_driver_sql(f'DELETE FROM "{schema}".loopkit_schema_version WHERE version >= 8')
        assert insert_records(conn, old, NOW) == 50
    store.close()

    store = Store(settings)
    try:
        engine = store.project(pid)
        assert current_version(engine) == latest("project") == 12
        assert partitions.layout(engine) == {"partitioned": True, "days": [], "default": True, "legacy": True}
        assert get_record(engine, old[7].record_id)["name"] == old[7].name
        # The legacy partition holds everything to the end of its newest record's day; later days get their own.
        assert write(store, pid, spans_at([NOW - 3 * DAY_NS + 1, NOW], trace=2)) == 2
        assert where_stored(store, pid) == {partitions.LEGACY: 51, partitions.partition_name(TODAY): 1}
        # Its spans re-sent (another start time, within the horizon) are still recognised.
        assert write(store, pid, spans_at([NOW - 3 * DAY_NS + 5000 + i for i in range(50)], trace=1)) == 0
        # Once its last day has expired, retention drops the whole legacy table, and writing goes on.
        cutoff = (TODAY - 2) * DAY_NS
        assert purge_project(engine, cutoff, batch_rows=100) == (51, 1, 1)
        assert partitions.layout(engine)["legacy"] is False
        assert write(store, pid, spans_at([NOW - 7], trace=3)) == 1
        assert where_stored(store, pid) == {partitions.partition_name(TODAY): 2}
    finally:
        store.close()


def test_a_span_resent_on_the_same_day_is_stored_once_and_on_another_day_again(store: Store, pid: str):
    day = (TODAY - 2) * DAY_NS
    hour = 3600 * 10**9
    assert write(store, pid, spans_at([day + hour], trace=1)) == 1
    # Re-sent with another start time on the same day: the day partition's own span key refuses it.
    assert write(store, pid, spans_at([day + 5 * hour], trace=1)) == 0
    # Two copies in one request, on two days: the first is kept.
    assert write(store, pid, spans_at([day + DAY_NS + hour], trace=2) + spans_at([day + hour], trace=2)) == 1
    # Re-sent with a start time on another day: another partition, another record (docs/records.md).
    assert write(store, pid, spans_at([day + DAY_NS + hour], trace=1)) == 1
    # A record without a time of its own is stored at its arrival; re-sent, it is found by its ID within a day,
    # on another day's partition too.
    untimed = [span(0, trace=9, trace_id=None, span_id=None, ts_ns=day + DAY_NS - 10)]
    untimed[0].record_id = "rec_" + "0" * 11 + "abcdefabcdefa"
    assert write(store, pid, untimed) == 1
    untimed[0].ts_ns = day + DAY_NS + 10  # arrived 20 ns later, on the next day
    assert write(store, pid, untimed) == 0
    assert sum(where_stored(store, pid).values()) == 4


def test_a_window_read_touches_only_the_partitions_it_overlaps(store: Store, pid: str):
    times = [NOW - 3 * DAY_NS, NOW - 2 * DAY_NS, NOW - DAY_NS, NOW]
    assert write(store, pid, spans_at(times, trace=1)) == 4
    schema = store.project_schema(pid)
    start = TODAY * DAY_NS  # today so far: inside today's partition, which the default one cannot overlap
    with store.project(pid).connect() as conn:
        plan = conn.exec_driver_sql(
            f'EXPLAIN (FORMAT JSON) SELECT * FROM "{schema}".records WHERE ts_ns >= {start} AND ts_ns < {NOW + 1}'
            " ORDER BY ts_ns DESC, record_id DESC LIMIT 1001"
        ).scalar_one()
    scanned = set()

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            scanned.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    assert scanned == {partitions.partition_name(TODAY)}


def test_stale_partition_statistics_are_brought_up_to_date(store: Store, pid: str):
    engine = store.project(pid)
    assert write(store, pid, spans_at([NOW - i for i in range(partitions.ANALYZE_FLOOR + 500)], trace=1)) == 1500
    today = partitions.partition_name(TODAY)
    # The writer's backend reports its inserts to PostgreSQL's statistics within about a second.
    deadline, analyzed = time.monotonic() + 20, []
    while not analyzed and time.monotonic() < deadline:
        analyzed = partitions.analyze_stale(engine)
        time.sleep(0.2)
    assert analyzed == [today]
    with engine.connect() as conn:
        tuples = conn.exec_driver_sql(
            "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(schema)s AND c.relname = %(name)s",
            {"schema": store.project_schema(pid), "name": today},
        ).scalar_one()
    assert tuples == 1500
    assert partitions.analyze_stale(engine) == []
