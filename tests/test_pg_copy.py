"""PostgreSQL's COPY insert path (store/pg_copy.py): dedup, order, NUL-safe text, counts, the writer on top.

PostgreSQL only (skipped without LOOPKIT_TEST_DATABASE_URL): SQLite keeps its executemany.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from pathlib import Path

import pytest
from conftest import NOW, PG_URL, make_settings, span
from sqlalchemy import Connection, func, make_url, select
from sqlalchemy.exc import DBAPIError

from loopkit_core.model import Record, record_id_for_span
from loopkit_core.projects import create_project
from loopkit_core.store import pg_copy
from loopkit_core.store import writer as writer_module
from loopkit_core.store.engines import Store
from loopkit_core.store.records import (
    COPY_MIN_ROWS,
    get_record,
    insert_records,
    insert_resources,
    insert_rows,
    resource_rows,
    to_rows,
)
from loopkit_core.store.resends import stored_ids
from loopkit_core.store.schema import ACCEPTED, RECORD_COLUMNS, counters, records, signatures
from loopkit_core.store.writer import MAX_GROUP, Writer, _Shard

pytestmark = pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")
RECORD_KEYS = tuple(RECORD_COLUMNS)
BATCH = 300  # past COPY_MIN_ROWS: these rows go through COPY


def count(store: Store, pid: str) -> int:
    """Rows stored in the project."""
    with store.project(pid).connect() as conn:
        return conn.execute(select(func.count()).select_from(records)).scalar_one()


def stored(store: Store, pid: str) -> list[tuple[str, str]]:
    """(record_id, name) of every stored row, in insertion (seq) order."""
    with store.project(pid).connect() as conn:
        query = records.select().with_only_columns(records.c.record_id, records.c.name).order_by(records.c.seq)
        return [tuple(r) for r in conn.execute(query)]


def test_duplicates_within_one_batch_are_stored_once_and_the_first_copy_wins(store: Store, pid: str):
    batch = [span(i) for i in range(BATCH)]
    # The same spans again, re-sent with another start time (so another record ID) and another name.
    again = [span(i, ts_ns=NOW + 10**9 + i, name=f"resent {i}") for i in range(BATCH // 2)]
    for r in again:
        r.record_id = record_id_for_span("p", r.trace_id, r.span_id, r.ts_ns)
    exact = [span(i) for i in range(10)]  # the same record IDs again
    rows = to_rows(batch + again + exact, NOW)
    with store.project(pid).begin() as conn:
        insert_resources(conn, resource_rows(batch))
        assert insert_rows(conn, rows) == BATCH
        renamed = stored_ids(conn, rows)
    # Stored in the order given, each span as its first copy.
    assert stored(store, pid) == [(r.record_id, r.name) for r in batch]
    # The later copies are answered with the record ID actually kept (exact copies need no answer).
    assert renamed == {BATCH + i: batch[i].record_id for i in range(BATCH // 2)}


def test_duplicates_across_batches_and_transactions_are_counted_out(store: Store, pid: str):
    first = [span(i) for i in range(BATCH)]
    second = first[BATCH // 2 :] + [span(i) for i in range(BATCH, BATCH + 100)]
    engine = store.project(pid)
    with engine.begin() as conn:
        assert insert_records(conn, first, NOW) == BATCH
    with engine.begin() as conn:
        assert insert_records(conn, second, NOW) == 100
        # A third call in the same transaction: the staging table was emptied by the second one.
        assert insert_records(conn, second, NOW) == 0
        assert insert_records(conn, [span(i, trace=2) for i in range(BATCH)], NOW) == BATCH
    assert count(store, pid) == 2 * BATCH + 100


def test_a_rolled_back_transaction_leaves_nothing_and_the_next_one_works(store: Store, pid: str):
    engine = store.project(pid)
    conn = engine.connect()
    try:
        trans = conn.begin()
        assert insert_records(conn, [span(i) for i in range(BATCH)], NOW) == BATCH
        trans.rollback()  # also rolls back the staging table's creation on this connection
        with conn.begin():
            assert insert_records(conn, [span(i) for i in range(BATCH)], NOW) == BATCH
    finally:
        conn.close()
    assert count(store, pid) == BATCH


def test_nul_the_escape_character_and_copy_specials_round_trip(store: Store, pid: str):
    odd = ["nul\x00byte", "escape \ufffe char", "both \ufffe0 and \x00", "\x00", "tab\there", "new\nline\r", "\\N"]
    odd += ["back\\slash", "\\.", "quote ' \" ,", "é中\U0001f600", ""]
    batch = [
        span(
            i,
            name=odd[i % len(odd)],
            message=odd[(i + 1) % len(odd)],
            session_id=odd[(i + 2) % len(odd)] or None,
            # JSON text holds NUL as the escape \u0000; a backslash-u written by the sender is text, kept as it is.
            attributes={"k": odd[i % len(odd)], "json": "\\u0000 literal", "n": i},
            events=[{"name": "e\x00", "attributes": {"v": "\ufffe"}}],
        )
        for i in range(BATCH)
    ]
    with store.project(pid).begin() as conn:
        assert insert_records(conn, batch, NOW) == BATCH
    engine = store.project(pid)
    for r in batch:
        got = get_record(engine, r.record_id)
        assert got is not None
        assert (got["name"], got["message"], got["session_id"]) == (r.name, r.message, r.session_id)
        assert got["attributes"] == r.attributes
        assert got["events"] == r.events
        assert got["resource"] == r.resource


def test_none_values_stay_null_and_empty_strings_stay_empty(store: Store, pid: str):
    batch = [span(i, user_id=None if i % 2 else "", parent_span_id=None, signature=None) for i in range(BATCH)]
    with store.project(pid).begin() as conn:
        assert insert_records(conn, batch, NOW) == BATCH
        nulls = conn.execute(
            records.select().with_only_columns(records.c.user_id).where(records.c.user_id.is_(None))
        ).all()
        empty = conn.execute(records.select().with_only_columns(records.c.user_id).where(records.c.user_id == "")).all()
    assert (len(nulls), len(empty)) == (BATCH // 2, BATCH // 2)


def test_a_large_batch_with_duplicates_is_counted_exactly(store: Store, pid: str):
    batch = [span(i, trace=3 + i // 1000) for i in range(20_000)]
    rows = to_rows(batch, NOW)
    with store.project(pid).begin() as conn:
        insert_resources(conn, resource_rows(batch))
        assert insert_rows(conn, rows + rows[::7]) == 20_000
        assert insert_rows(conn, rows[5_000:] + to_rows([span(i, trace=99) for i in range(1234)], NOW)) == 1234
    assert count(store, pid) == 21_234


def test_below_the_threshold_rows_take_executemany_and_behave_the_same(store: Store, pid: str, monkeypatch):
    copied: list[int] = []
    real = pg_copy.insert_copy
    monkeypatch.setattr(
        pg_copy, "insert_copy", lambda conn, t, c, rows: copied.append(len(rows)) or real(conn, t, c, rows)
    )
    with store.project(pid).begin() as conn:
        assert insert_records(conn, [span(i) for i in range(COPY_MIN_ROWS - 1)], NOW) == COPY_MIN_ROWS - 1
        assert insert_records(conn, [span(i) for i in range(COPY_MIN_ROWS)], NOW) == 1
    assert copied == [COPY_MIN_ROWS]
    assert count(store, pid) == COPY_MIN_ROWS


def test_the_writer_acknowledges_copied_rows_duplicates_and_the_quota_exactly(store: Store, pid: str):
    writer = Writer(store, threads=1)
    try:
        batch = [span(i) for i in range(BATCH)]
        rows = to_rows(batch, NOW)
        first = writer.submit(pid, rows, resources=resource_rows(batch)).result(timeout=60)
        assert (first.inserted, first.over_quota, first.stored_as) == (BATCH, [], {})
        resent = [span(i, ts_ns=NOW + 10**9 + i) for i in range(BATCH)]  # another millisecond: another ID
        for r in resent:
            r.record_id = record_id_for_span("p", r.trace_id, r.span_id, r.ts_ns)
        ack = writer.submit(pid, to_rows(resent, NOW), resources=resource_rows(resent)).result(timeout=60)
        assert (ack.inserted, ack.over_quota) == (0, [])
        assert ack.stored_as == {i: batch[i].record_id for i in range(BATCH)}
        # A quota 10 past what is stored: exactly 10 more accepted from a batch that would otherwise be copied.
        more = [span(i, trace=7) for i in range(BATCH)]
        ack = writer.submit(pid, to_rows(more, NOW), quota=BATCH + 10, resources=resource_rows(more)).result(60)
        assert (ack.inserted, ack.over_quota) == (10, list(range(10, BATCH)))
    finally:
        writer.close(timeout=30)
    assert count(store, pid) == BATCH + 10


def test_statements_follow_the_table_and_columns():
    sql = pg_copy._statements("lk_p_x", records, ("record_id", "ts_ns"))
    staging = sql.create_staging.split()[6]
    assert staging.startswith("pg_temp.loopkit_stage_records_")
    assert sql.copy_direct == "COPY lk_p_x.records (record_id, ts_ns) FROM STDIN"
    assert sql.create_staging == (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (record_id VARCHAR(40), ts_ns BIGINT) ON COMMIT DELETE ROWS"
    )
    assert sql.copy_staging == f"COPY {staging} (record_id, ts_ns) FROM STDIN"
    assert sql.move == (
        f"WITH moved AS (DELETE FROM {staging} RETURNING record_id, ts_ns) INSERT INTO lk_p_x.records "
        "(record_id, ts_ns) SELECT record_id, ts_ns FROM moved ON CONFLICT DO NOTHING"
    )
    # Another column list (a schema change) gets another staging table.
    other = pg_copy._statements("lk_p_x", records, ("record_id", "ts_ns", "name"))
    assert other.create_staging.split()[6] != staging


def staging_exists(conn: Connection) -> bool:
    """Whether this connection has made the records staging table (in the current transaction or before)."""
    name = pg_copy._statements(None, records, RECORD_KEYS).create_staging.split()[6]
    return conn.exec_driver_sql("SELECT to_regclass(%s)", (name,)).scalar() is not None


def test_rows_without_conflicts_are_copied_straight_in_and_staging_is_left_alone(store: Store, pid: str):
    with store.project(pid).connect() as conn:
        with conn.begin():
            assert insert_records(conn, [span(i) for i in range(BATCH)], NOW) == BATCH
            assert not staging_exists(conn)
        with conn.begin():
            # One stored span among new ones: the direct COPY is undone, the rows go through staging.
            assert insert_records(conn, [span(i, trace=5) for i in range(BATCH)] + [span(0)], NOW) == BATCH
            assert staging_exists(conn)
    assert count(store, pid) == 2 * BATCH


def test_a_value_the_table_refuses_fails_the_insert_and_stores_nothing(store: Store, pid: str):
    batch = [span(i) for i in range(BATCH)]
    batch[BATCH // 2].signature = "s" * 33  # VARCHAR(32)
    with pytest.raises(DBAPIError, match="too long"), store.project(pid).begin() as conn:
        insert_records(conn, batch, NOW)
    assert count(store, pid) == 0
    # The same (pooled) connection works afterwards.
    with store.project(pid).begin() as conn:
        assert insert_records(conn, [span(i) for i in range(BATCH)], NOW) == BATCH
    assert count(store, pid) == BATCH


def test_without_the_temporary_privilege_conflicting_rows_are_still_skipped(tmp_path: Path):
    import psycopg

    suffix = secrets.token_hex(4)
    database, role = f"lk_notemp_{suffix}", f"lk_notemp_{suffix}"
    admin_dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {database} OWNER {role}")
        admin.execute(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC, {role}")
    url = make_url(PG_URL).set(username=role, database=database).render_as_string(hide_password=False)
    store = Store(make_settings(tmp_path / "data", database_url=url))
    try:
        pid = create_project(store.control, "no temp")["project_id"]
        first = [span(i) for i in range(BATCH)]
        with store.project(pid).begin() as conn:
            assert insert_records(conn, first, NOW) == BATCH
        with store.project(pid).begin() as conn:
            assert insert_records(conn, first[BATCH // 2 :] + [span(i, trace=9) for i in range(40)], NOW) == 40
            assert not staging_exists(conn)
        assert count(store, pid) == BATCH + 40
    finally:
        store.close()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_commit_covers_at_most_max_group_requests(store: Store, pid: str, monkeypatch):
    groups: list[int] = []
    first = threading.Event()
    release = threading.Event()
    real = _Shard._commit

    def commit(self: _Shard, project_id: str, items: list) -> None:
        groups.append(len(items))
        if len(groups) == 1:
            first.set()
            release.wait(30)  # hold the shard so the next requests queue up behind this commit
        real(self, project_id, items)

    monkeypatch.setattr(_Shard, "_commit", commit)
    writer = Writer(store, threads=1)
    try:
        futures = [writer.submit(pid, to_rows([span(0)], NOW))]
        assert first.wait(30)
        futures += [writer.submit(pid, to_rows([span(i)], NOW)) for i in range(1, 2 * MAX_GROUP + 11)]
        release.set()
        assert sum(f.result(timeout=60).inserted for f in futures) == 2 * MAX_GROUP + 11
    finally:
        release.set()
        writer.close(timeout=30)
    assert groups == [1, MAX_GROUP, MAX_GROUP, 10]


def accepted(store: Store, pid: str) -> int:
    """The project's count of records ever accepted, read from its counter row."""
    with store.project(pid).connect() as conn:
        return conn.execute(select(counters.c.value).where(counters.c.name == ACCEPTED)).scalar_one()


def two_batches_after_their_resource(store: Store, pid: str) -> list[list[Record]]:
    """Two batches of BATCH spans (traces 1 and 2) whose resource the project already holds, as in a steady stream.

    Two transactions adding the same new resource key queue for it: a test of commits side by side stores it first.
    """
    batches = [[span(i, trace=t) for i in range(BATCH)] for t in (1, 2, 3)]
    with store.project(pid).begin() as conn:
        insert_resources(conn, resource_rows(batches.pop()))
    return batches


def test_two_writer_threads_insert_one_project_side_by_side(store: Store, pid: str, monkeypatch):
    # Each commit waits after its inserts until the other has inserted too: only commits that do not take the
    # counter's lock before inserting can both get there (with the lock first, the second waits for the first's
    # commit and the barrier breaks).
    meet = threading.Barrier(2, timeout=30)
    threads: set[str] = set()
    real = writer_module.insert_rows

    def insert_then_meet(conn: Connection, rows: list) -> int:
        inserted = real(conn, rows)
        threads.add(threading.current_thread().name)
        meet.wait()
        return inserted

    batches = two_batches_after_their_resource(store, pid)
    monkeypatch.setattr(writer_module, "insert_rows", insert_then_meet)
    writer = Writer(store, threads=2)
    try:
        futures = [writer.submit(pid, to_rows(b, NOW), resources=resource_rows(b)) for b in batches]
        assert [f.result(timeout=60).inserted for f in futures] == [BATCH, BATCH]
    finally:
        writer.close(timeout=30)
    assert threads == {"loopkit-writer-0", "loopkit-writer-1"}
    assert count(store, pid) == accepted(store, pid) == 2 * BATCH


def test_racing_requests_of_one_project_over_two_threads_store_each_span_once_and_count_exactly(store: Store, pid: str):
    # 40 requests of 300 spans, each sharing half its spans with the next one: 6,150 distinct spans.
    def numbered(n: int) -> Record:
        r = span(n % BATCH, trace=1 + n // BATCH, ts_ns=NOW - n * 1000, end_ns=NOW - n * 1000 + 5_000_000)
        r.record_id = record_id_for_span("p", r.trace_id, r.span_id, r.ts_ns)
        return r

    requests = [[numbered(n * BATCH // 2 + i) for i in range(BATCH)] for n in range(40)]
    distinct = {(r.trace_id, r.span_id) for batch in requests for r in batch}
    writer = Writer(store, threads=2)
    try:
        futures = [writer.submit(pid, to_rows(b, NOW), resources=resource_rows(b)) for b in requests]
        acks = [f.result(timeout=120) for f in futures]
    finally:
        writer.close(timeout=30)
    assert sum(a.inserted for a in acks) == len(distinct) == count(store, pid) == accepted(store, pid)


def test_two_threads_adding_the_same_new_signatures_in_opposite_orders_both_commit(store: Store, pid: str, monkeypatch):
    # Each commit adds its first description, then waits (up to 2 s) for the other to have added its first. Taken
    # in the orders given, each would then wait for the other's: PostgreSQL fails one as a deadlock.
    meet = threading.Barrier(2, timeout=2)
    real = writer_module.insert_signatures

    def one_by_one(conn: Connection, rows: list) -> None:
        for n, row in enumerate(rows):
            real(conn, [row])
            if n == 0:
                # Broken when the other is queued behind this one's first description, as it should be.
                with contextlib.suppress(threading.BrokenBarrierError):
                    meet.wait()

    def described(signature: str) -> dict[str, str]:
        return {"signature": signature, "template": f"failure {signature}", "type": "error", "operation": "op",
                "service": "svc", "exception_type": ""}  # fmt: skip

    first, second = described("a" * 32), described("b" * 32)
    batches = two_batches_after_their_resource(store, pid)
    monkeypatch.setattr(writer_module, "insert_signatures", one_by_one)
    writer = Writer(store, threads=2)
    try:
        futures = [
            writer.submit(pid, to_rows(batch, NOW), signatures=order, resources=resource_rows(batch))
            for batch, order in zip(batches, ([first, second], [second, first]), strict=True)
        ]
        assert [f.result(timeout=60).inserted for f in futures] == [BATCH, BATCH]
    finally:
        writer.close(timeout=30)
    with store.project(pid).connect() as conn:
        stored_signatures = conn.execute(select(signatures.c.signature).order_by(signatures.c.signature)).scalars()
        assert list(stored_signatures) == ["a" * 32, "b" * 32]
