"""Versioned migrations: old stores are stamped, later steps run exactly once however many processes open."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import PG_URL, make_settings
from sqlalchemy import Column, Connection, Index, Integer, MetaData, String, Table, create_engine, inspect, select

from loopkit_core.fingerprint_rules import parse_rules
from loopkit_core.model import DAY_NS, rfc3339
from loopkit_core.projects import create_project, get_project
from loopkit_core.store import day_tables, eval_runs, grouping_rules, memory, migrations, stages
from loopkit_core.store.accepted import accepted_count
from loopkit_core.store.engines import Store
from loopkit_core.store.eval_runs import EvalRun
from loopkit_core.store.migrations import current_version, latest, schema_version
from loopkit_core.store.records import get_record, insert_records, to_rows
from loopkit_core.store.resends import stored_ids
from loopkit_core.store.schema import control_metadata, issues, packets, project_metadata, records
from loopkit_receivers import records_shape

# What a later LoopKit version would add; the test registers it as the next project step.
runs_metadata = MetaData()
step_runs = Table("test_step_runs", runs_metadata, Column("n", Integer, primary_key=True), Column("by", String(40)))


@pytest.fixture
def next_step(monkeypatch: pytest.MonkeyPatch) -> int:
    """Register a fake project step (version latest+1) for this test only; it records every run."""
    monkeypatch.setitem(migrations.STEPS, "project", list(migrations.STEPS["project"]))
    version = latest("project") + 1

    @migrations.step("project", version, "test: index user_id, record the run")
    def _slow_step(conn: Connection) -> None:
        Index("ix_records_user_test", records.c.user_id).create(conn)
        runs_metadata.create_all(conn)
        conn.execute(step_runs.insert().values(by=threading.current_thread().name))
        time.sleep(0.3)  # widens the race: a second opener arrives while this one is still migrating

    return version


def to_previous_layout(conn: Connection, schema: str | None = None) -> None:
    """Undo project steps 2 to 8 and 11: records deduplicated on record_id alone with a plain trace_id index, each
    record's resource kept in its row, no stages table, no issues.first_packet_id, no eval_runs table, no
    grouping_rules table, no issue_merges table, and (PostgreSQL) one records table, not partitioned."""
    prefix = f'"{schema}".' if schema else ""
    if schema:
        conn.exec_driver_sql(f"DROP TABLE {prefix}records")  # and its partitions
        records.create(conn)
    conn.exec_driver_sql(f"DROP TABLE {prefix}issue_merges")
    conn.exec_driver_sql(f"DROP TABLE {prefix}grouping_rules")
    conn.exec_driver_sql(f"DROP TABLE {prefix}eval_runs")
    conn.exec_driver_sql(f"DROP TABLE {prefix}stages")
    conn.exec_driver_sql(f"ALTER TABLE {prefix}issues DROP COLUMN first_packet_id")
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}ux_records_span")  # PostgreSQL's, and SQLite's before 11
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {prefix}ix_records_trace_run")  # SQLite's since 11
    conn.exec_driver_sql(f"ALTER TABLE {prefix}records DROP COLUMN trace_run")
    conn.exec_driver_sql(f"CREATE INDEX ix_records_trace ON {prefix}records (trace_id)")
    conn.exec_driver_sql(f"ALTER TABLE {prefix}records DROP COLUMN resource_key")
    conn.exec_driver_sql(f"DROP TABLE {prefix}resources")


@pytest.mark.skipif(PG_URL is not None, reason="builds SQLite files the way the previous LoopKit version did")
def test_a_store_made_by_the_previous_version_opens_and_is_stamped(tmp_path: Path):
    data = tmp_path / "data"
    (data / "projects").mkdir(parents=True)
    # "The old code": create_all of the v1 tables, no version table, and some data in both stores.
    control = create_engine(f"sqlite:///{data / 'control.db'}")
    control_metadata.create_all(control)
    control.dispose()
    old_settings = make_settings(data)
    created = create_project(Store(old_settings).control, "old app")
    project_file = data / "projects" / f"{created['project_id']}.db"
    old = create_engine(f"sqlite:///{project_file}")
    project_metadata.create_all(old)
    with old.begin() as conn:
        to_previous_layout(conn)
        conn.execute(
            records.insert().values(
                record_id="rec_old",
                ts_ns=1,
                end_ns=2,
                duration_ms=0.0,
                received_ns=3,
                type="span",
                name="n",
                service="s",
                status="ok",
                message="",
                attributes="{}",
                resource='{"service.name": "old"}',
                events="[]",
                links="[]",
            )
        )
    old.dispose()
    with create_engine(f"sqlite:///{project_file}").connect() as conn:
        assert not inspect(conn).has_table("loopkit_schema_version")

    store = Store(make_settings(data))
    try:
        engine = store.project(created["project_id"])
        assert current_version(store.control) == latest("control") == 3  # 2: project_retention, 3: server_secrets
        # 2: (trace_id, span_id) is the span key; 3: resources stored once; 4: stages, issues.first_packet_id;
        # 5: eval_runs; 6: grouping_rules; 7: issue_merges; 8-12: the records' day layout
        assert current_version(engine) == latest("project") == 12
        assert get_record(engine, "rec_old")["resource"] == {"service.name": "old"}
        with engine.connect() as conn:
            assert conn.execute(select(records.c.record_id)).scalars().all() == ["rec_old"]
            stamped = conn.execute(select(schema_version.c.version, schema_version.c.description)).all()
            indexes = {ix["name"]: ix["unique"] for ix in inspect(conn).get_indexes("records")}
        assert [v for v, _ in stamped] == list(range(1, 13)) and stamped[0][1].startswith("initial schema")
        # 11: SQLite keeps the span key by a lookup through its partial trace index (not unique), not an index.
        assert indexes == {**indexes, "ix_records_trace_run": False} and "ux_records_span" not in indexes
        assert "ix_records_trace" not in indexes
        assert get_project(store.control, created["project_id"])["project_name"] == "old app"
        # 9: the quota counter starts from the rows stored; a new record goes to its day's table, and readers see
        # the old table's rows and the day's together.
        assert accepted_count(engine) == 1
        now = time.time_ns()
        new = records_shape.decode({"records": [{"type": "event", "name": "new"}]}, created["project_id"], now).records
        with engine.begin() as conn:
            assert insert_records(conn, new, now) == 1
        assert day_tables.layout(engine) == {"days": [now // DAY_NS], "tables": 1, "base_records": 1}
        with engine.connect() as conn:
            assert sorted(conn.execute(select(records.c.name)).scalars()) == ["n", "new"]
    finally:
        store.close()


def test_a_new_step_runs_exactly_once_across_concurrent_opens(tmp_path: Path, next_step: int):
    settings = make_settings(tmp_path / "data")
    first = Store(settings)
    project_id = create_project(first.control, "migrating")["project_id"]
    assert current_version(first.control) == latest("control")
    first.close()
    # Two "processes" (separate stores, separate connections) open the same project store at the same moment.
    stores = [Store(settings) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def open_project(store: Store) -> None:
        try:
            barrier.wait(timeout=10)
            store.project(project_id)
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=open_project, args=(s,), name=f"opener-{i}") for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        engine = stores[0].project(project_id)
        schema = stores[0].project_schema(project_id) if PG_URL else None
        with engine.connect() as conn:
            runs = conn.execute(select(step_runs.c.by)).scalars().all()
            versions = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version)).all()
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("records", schema=schema)}
        assert len(runs) == 1 and runs[0] in {"opener-0", "opener-1"}
        assert [v for (v,) in versions] == [*range(1, next_step), next_step]
        assert "ix_records_user_test" in indexes
        # A third open (a restart) finds nothing to do.
        assert migrations.migrate(engine, "project", schema) == []
        again = Store(settings)
        try:
            again.project(project_id)
            assert current_version(again.project(project_id)) == next_step
        finally:
            again.close()
        with engine.connect() as conn:
            assert conn.execute(select(step_runs.c.by)).scalars().all() == runs
    finally:
        for s in stores:
            s.close()


def test_registering_a_version_twice_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(migrations.STEPS, "control", list(migrations.STEPS["control"]))
    with pytest.raises(ValueError, match="control migration 1 is registered twice"):
        migrations.step("control", 1, "again")(lambda conn: None)


def test_a_store_from_a_newer_version_opens_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = make_settings(tmp_path / "data")
    store = Store(settings)
    project_id = create_project(store.control, "from the future")["project_id"]
    engine = store.project(project_id)
    with engine.begin() as conn:  # what a newer LoopKit's next step would have left behind
        conn.execute(schema_version.insert().values(version=latest("project") + 5, description="later", applied_at=0))
    store.close()
    again = Store(settings)
    try:
        with caplog.at_level("WARNING", logger="loopkit.migrations"):
            assert current_version(again.project(project_id)) == latest("project") + 5
        [message] = [r.getMessage() for r in caplog.records if r.name == "loopkit.migrations"]
        assert f"is at schema version {latest('project') + 5}; this LoopKit knows {latest('project')}" in message
    finally:
        again.close()


def test_a_project_store_of_the_previous_layout_is_upgraded_on_either_backend(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    store = Store(settings)
    project_id = create_project(store.control, "layout")["project_id"]
    engine = store.project(project_id)
    schema = store.project_schema(project_id) if PG_URL else None
    table = f'"{schema}".records' if schema else "records"
    prefix = f'"{schema}".' if schema else ""
    with engine.begin() as conn:
        to_previous_layout(conn, schema)
        conn.exec_driver_sql(f"DELETE FROM {prefix}loopkit_schema_version WHERE version >= 2")
        conn.exec_driver_sql(
            f"INSERT INTO {table} (record_id, ts_ns, end_ns, duration_ms, received_ns, type, name, service, status,"
            " message, trace_id, span_id, attributes, resource, events, links) VALUES ('rec_old', 1, 2, 0, 3,"
            f" 'span', 'n', 's', 'ok', '', '{'ab' * 16}', '{'cd' * 8}', '{{}}', '{{\"host\": \"old\"}}', '[]', '[]')"
        )
        # An issue tracked, and a packet approved, by the previous version.
        conn.exec_driver_sql(
            f"INSERT INTO {prefix}issues (fingerprint, issue_id, diagnoser, signal_type, title, selector, status,"
            " first_seen_ns, last_seen_ns, last_packet_id) VALUES ('fp_old', 'iss_old', 'd', 'error', 't', '{}',"
            " 'approved', 1, 2, 'pkt_old')"
        )
        body = (
            '{"packet_id": "pkt_old", "issues": [{"issue_id": "iss_old", "fingerprint": "fp_old", "title": "t",'
            ' "eval_candidate": "old-v1"}]}'
        )
        conn.execute(packets.insert().values(packet_id="pkt_old", created_ns=10, status="approved", body=body))
        conn.exec_driver_sql(
            f"INSERT INTO {prefix}approvals (packet_id, decision, note, actor, decided_ns)"
            " VALUES ('pkt_old', 'approved', 'ok', 'dashboard key x', 20)"
        )
    store.close()

    again = Store(settings)
    try:
        engine = again.project(project_id)
        assert current_version(engine) == latest("project") == 12
        # 6: the grouping_rules table, empty (version 0), and a first version can be saved.
        assert grouping_rules.current(engine) == {"version": 0, "rules": [], "updated_at": None, "updated_by": None}
        rule = parse_rules([{"match": {"name": "seed"}, "fingerprint": "{name}"}])
        saved = grouping_rules.save(engine, rule, "dashboard key z", 50, expected=0)
        assert isinstance(saved, dict) and (saved["version"], saved["rules"]) == (1, [rule[0].to_json()])
        # 5: the eval_runs table, empty, and eval runs can be recorded on a packet of the previous version.
        assert eval_runs.for_packets(engine, ["pkt_old"]) == {"pkt_old": []}
        reported = EvalRun("pkt_old", "old-v1", None, 1, 0, 0, "abc", None, None)
        run = eval_runs.record(engine, reported, "agent key y", 40)
        assert isinstance(run, dict) and (run["issue_id"], run["result"]) == ("iss_old", "passed")
        assert eval_runs.for_packets(engine, ["pkt_old"]) == {"pkt_old": [run]}
        # 4: the stages table, and issues.first_packet_id (NULL for issues tracked before: none counts as new).
        recorded = stages.record(engine, "pkt_old", "merged", None, None, "iss_old", "agent key y", 30)
        assert isinstance(recorded, dict) and recorded["created_at"] == rfc3339(30)
        assert [s["stage_id"] for s in stages.for_packets(engine, ["pkt_old"])["pkt_old"]] == [recorded["stage_id"]]
        assert memory.recall(engine, "pkt_old")["new_issues"] == 0
        with engine.connect() as conn:
            assert conn.execute(select(issues.c.first_packet_id)).scalars().all() == [None]
        assert get_record(engine, "rec_old")["resource"] == {"host": "old"}
        # 8 (PostgreSQL): the old table is the legacy partition, its indexes renamed; the span key is its own.
        # 11 (SQLite): the span key is a lookup through the partial trace index, which `records` has now.
        table, span_key = (
            ("records_legacy", "ux_records_span_legacy") if schema else ("records", "ix_records_trace_run")
        )
        with engine.connect() as conn:
            indexes = {ix["name"]: ix["unique"] for ix in inspect(conn).get_indexes(table, schema=schema)}
            columns = {c["name"] for c in inspect(conn).get_columns("records", schema=schema)}
        assert indexes[span_key] == bool(schema) and "ix_records_trace" not in indexes
        assert {"resource_key", "trace_run"} <= columns
        # The old span re-sent gets a new-style ID, and is recognised as stored: the pair is the key now.
        item = {"type": "event", "name": "n", "trace_id": "ab" * 16, "span_id": "cd" * 8}
        resent = records_shape.decode({"records": [item]}, project_id, 5).records
        assert resent[0].record_id != "rec_old"
        with engine.begin() as conn:
            assert insert_records(conn, resent, 5) == 0
            assert stored_ids(conn, to_rows(resent, 5)) == {0: "rec_old"}
    finally:
        again.close()
