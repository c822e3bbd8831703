"""Record partitions (store/partitions.py): records routed by time, full partitions cut, re-sent records stored once
across partitions, retention by whole partitions, and every read through the `records` view; on either backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings, sqlite_only
from sqlalchemy import func, select

from loopkit_core.model import MAX_NS
from loopkit_core.projects import create_project
from loopkit_core.retention import purge_expired_records, set_retention
from loopkit_core.store import partitions
from loopkit_core.store.engines import Store
from loopkit_core.store.records import get_record, insert_records, resource_rows, to_rows
from loopkit_core.store.schema import records
from loopkit_core.store.writer import Writer
from loopkit_receivers import records_shape

DAY = 86_400 * 10**9
BASE = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 10**9  # a UTC midnight


class Project:
    """A store with one project, and the batching writer the server uses."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.store = Store(make_settings(tmp_path / "data", **settings))
        self.project_id = create_project(self.store.control, "partitioned")["project_id"]
        self.engine = self.store.project(self.project_id)
        self.writer = Writer(self.store, threads=1)

    def send(self, items: list[dict], received_ns: int = BASE) -> int:
        """Decode records-shape items as the receiver does, commit them through the writer; records added."""
        decoded = records_shape.decode({"records": items}, self.project_id, received_ns)
        assert decoded.errors == []
        batch = decoded.records
        rows, resources = to_rows(batch, received_ns), resource_rows(batch)
        return self.writer.submit(self.project_id, rows, resources=resources).result(timeout=30).inserted

    def parts(self) -> list[partitions.Partition]:
        """The catalog."""
        with self.engine.connect() as conn:
            return partitions.load(conn)

    def held(self, part: partitions.Partition) -> tuple[int, int]:
        """(records in the partition's table, of them outside its range)."""
        table = part.table
        outside = (
            (table.c.ts_ns >= part.hi_ns) if part.lo_ns is None else ~table.c.ts_ns.between(part.lo_ns, part.hi_ns - 1)
        )
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(table)).scalar()
            wrong = conn.execute(select(func.count()).select_from(table).where(outside)).scalar()
        return total, wrong

    def count(self) -> int:
        """Records read through the view."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(records)).scalar()

    def close(self) -> None:
        """Commit what is queued and close the store."""
        self.writer.close(timeout=30)
        self.store.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator:
    made: list[Project] = []

    def factory(**settings: object) -> Project:
        project = Project(tmp_path / str(len(made)), **settings)
        made.append(project)
        return project

    yield factory
    for project in made:
        project.close()


def span(n: int, ts: int | None, trace: int = 1, kind: str = "latency") -> dict:
    """A records-shape span; without `ts`, sent with no timestamp (the server's receive time is used)."""
    item = {"type": kind, "name": "op", "trace_id": f"{trace:032x}", "span_id": f"{n + 1:016x}"}
    if ts is not None:
        item["timestamp"] = str(ts)
    return item


def test_a_new_store_has_no_partition_and_an_empty_records_view(make):
    project = make()
    assert project.parts() == []
    assert project.count() == 0


def test_each_day_gets_its_own_partition_and_the_view_reads_them_all(make):
    project = make()
    times = [BASE + DAY // 2, BASE + DAY + DAY // 2, BASE + 2 * DAY + DAY // 2, BASE + DAY // 2 + 1]
    assert project.send([span(i, ts) for i, ts in enumerate(times)]) == 4
    parts = project.parts()
    assert [(p.lo_ns, p.hi_ns, p.rows, p.legacy) for p in parts] == [
        (BASE, BASE + DAY, 2, False),
        (BASE + DAY, BASE + 2 * DAY, 1, False),
        (BASE + 2 * DAY, BASE + 3 * DAY, 1, False),
    ]
    assert [project.held(p) for p in parts] == [(2, 0), (1, 0), (1, 0)]
    assert project.count() == 4
    with project.engine.connect() as conn:
        ids = conn.execute(select(records.c.record_id).order_by(records.c.ts_ns)).scalars().all()
    assert [get_record(project.engine, rid)["timestamp"] for rid in ids] == sorted(
        get_record(project.engine, rid)["timestamp"] for rid in ids
    )
    # The same records again, in another order: every one is already stored in its partition.
    assert project.send([span(i, ts) for i, ts in reversed(list(enumerate(times)))]) == 0
    assert project.count() == 4


def test_a_full_partition_is_cut_just_past_its_newest_record_and_resends_still_find_their_originals(make):
    project = make(record_partition_rows=100)
    requests = [[span(r * 50 + i, BASE + (r * 50 + i) * 10**6) for i in range(50)] for r in range(10)]
    assert [project.send(items) for items in requests] == [50] * 10
    parts = project.parts()
    assert [p.rows for p in parts] == [100] * 5 + [0]  # the fifth was cut too: the sixth awaits the next record
    assert [project.held(p) for p in parts] == [(100, 0)] * 5 + [(0, 0)]
    # Each cut ends the range just past the newest record; the last partition keeps the rest of the day.
    assert [p.hi_ns for p in parts] == [BASE + k * 100 * 10**6 - 10**6 + 1 for k in range(1, 6)] + [BASE + DAY]
    assert all(a.hi_ns == b.lo_ns for a, b in zip(parts, parts[1:], strict=False))
    # A late record for the first partition's time goes there, not to the newest one.
    assert project.send([span(999, BASE + 5 * 10**6, trace=2)]) == 1
    assert project.parts()[0].rows == 101
    # Everything re-sent (a retrying exporter): nothing is stored twice.
    assert [project.send(items) for items in requests] == [0] * 10
    assert project.count() == 501


def test_records_without_a_timestamp_resent_after_a_cut_are_stored_once(make):
    project = make(record_partition_rows=100)
    items = [span(i, None, trace=7) for i in range(100)]
    assert project.send(items, received_ns=BASE + 1000) == 100
    assert project.send([span(i, BASE + 2000 + i, trace=8) for i in range(5)]) == 5  # after the cut: a new partition
    assert len(project.parts()) == 2
    # The resend arrives later, so its time (the receive time) falls in the new partition: found in the old one.
    assert project.send(items, received_ns=BASE + 10**9) == 0
    assert project.count() == 105


def test_records_at_the_ends_of_time_get_partitions_clamped_to_the_timestamp_range(make):
    project = make()
    assert project.send([span(0, 1), span(1, MAX_NS - 1)]) == 2
    (first, last) = project.parts()
    assert (first.lo_ns, first.hi_ns) == (0, DAY)
    assert (last.lo_ns, last.hi_ns) == (MAX_NS - MAX_NS % DAY, MAX_NS)
    assert project.count() == 2


def test_a_gap_between_partitions_is_filled_without_overlapping_either(make):
    project = make(record_partition_rows=2)
    assert project.send([span(0, BASE + 10), span(1, BASE + 20)]) == 2  # full: cut at BASE + 21
    assert project.send([span(2, BASE + DAY - 5)]) == 1
    assert project.send([span(3, BASE + 15, trace=3)]) == 1  # before the cut: the first partition
    ranges = [(p.lo_ns, p.hi_ns, p.rows) for p in project.parts()]
    assert ranges == [(BASE, BASE + 21, 3), (BASE + 21, BASE + DAY, 1)]


def test_retention_drops_whole_expired_partitions_and_keeps_the_one_that_straddles_the_cutoff(make):
    project = make(retention_days=2.0)
    set_retention(project.store.control, project.project_id, 2.0)
    times = [BASE + DAY // 4, BASE + DAY // 4 + 1, BASE + DAY + DAY // 4, BASE + 2 * DAY + DAY // 2]
    assert project.send([span(i, ts) for i, ts in enumerate(times)]) == 4
    noon = (BASE + 3 * DAY + DAY // 2) / 1e9  # cutoff: BASE + 1.5 days
    (result,) = purge_expired_records(project.store, noon)
    # Day 0 ends before the cutoff: dropped in one transaction. Day 1 straddles it: kept, its expired record too.
    assert (result.deleted, result.batches) == (2, 1)
    assert [(p.lo_ns, p.rows) for p in project.parts()] == [(BASE + DAY, 1), (BASE + 2 * DAY, 1)]
    assert project.count() == 2
    # A day later day 1 has passed the cutoff as a whole.
    (result,) = purge_expired_records(project.store, noon + 86_400)
    assert (result.deleted, result.batches) == (1, 1)
    assert project.count() == 1
    # A record for a dropped day arriving late gets a partition again (and the next pass takes it).
    assert project.send([span(9, BASE + 5, trace=9)]) == 1
    (result,) = purge_expired_records(project.store, noon + 86_400)
    assert (result.deleted, result.batches) == (1, 1)


def test_insert_records_outside_the_writer_routes_the_same_way(make):
    project = make()
    batch = records_shape.decode({"records": [span(i, BASE + i * DAY) for i in range(3)]}, project.project_id, BASE)
    with project.engine.begin() as conn:
        assert insert_records(conn, batch.records, BASE) == 3
    assert [p.lo_ns for p in project.parts()] == [BASE, BASE + DAY, BASE + 2 * DAY]


@sqlite_only("SQLite's limit of 500 terms in a compound SELECT (450 partitions take PostgreSQL over a minute)")
def test_more_partitions_than_one_compound_select_allows_are_read_through_sub_views(make):
    project = make()
    count = partitions.VIEW_TERMS + 50  # past SQLite's 500 terms once the view is rebuilt with a few more
    with project.engine.begin() as conn:
        parts: list[partitions.Partition] = []
        for i in range(count):
            parts.append(partitions.create(conn, parts, BASE + i * 1000, BASE + (i + 1) * 1000))
    assert project.send([span(i, BASE + i * 1000 + 1) for i in range(0, count, 7)]) == -(-count // 7)
    assert len(project.parts()) == count
    with project.engine.connect() as conn:
        newest = conn.execute(select(records.c.ts_ns).order_by(records.c.ts_ns.desc()).limit(2)).scalars().all()
    assert newest == [BASE + (count - 1) // 7 * 7 * 1000 + 1, BASE + ((count - 1) // 7 - 1) * 7 * 1000 + 1]
    assert project.count() == -(-count // 7)
    # Dropping them one by one shrinks the view back below one compound SELECT.
    with project.engine.begin() as conn:
        for part in parts[: count - 10]:
            partitions.drop(conn, partitions.load(conn), part)
    assert len(project.parts()) == 10 and project.count() == sum(1 for i in range(0, count, 7) if i >= count - 10)
