"""The store on either backend: dialect-neutral statements, NUL-safe text, schema names, cross-process changes.

Tests that need PostgreSQL skip without LOOPKIT_TEST_DATABASE_URL; the rest run on whichever backend the run uses.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from conftest import PG_URL, make_settings, pg_prefix, store_exists
from sqlalchemy import event, func, select

from loopkit_core.model import Record
from loopkit_core.projects import create_project, require, rotate_keys
from loopkit_core.purge import delete_project
from loopkit_core.settings import Settings
from loopkit_core.store import engines
from loopkit_core.store.dialect import escape_nul, escape_nul_rows, unescape_nul
from loopkit_core.store.engines import PG_MAX_IDENTIFIER, Store
from loopkit_core.store.records import WindowQuery, insert_records, read_window
from loopkit_core.store.schema import records

needs_pg = pytest.mark.skipif(PG_URL is None, reason="needs LOOPKIT_TEST_DATABASE_URL (PostgreSQL)")
NOW = time.time_ns()


def record(name: str, attributes: dict, i: int) -> Record:
    """A minimal event record at NOW - i microseconds."""
    return Record(
        record_id=f"rec_{i:024x}",
        ts_ns=NOW - i * 1000,
        end_ns=NOW - i * 1000,
        type="event",
        name=name,
        service="svc",
        status="ok",
        message="",
        trace_id=None,
        span_id=None,
        parent_span_id=None,
        session_id=None,
        user_id=None,
        kind=None,
        scope=None,
        exception_type=None,
        attributes=attributes,
        resource={},
        events=[],
        links=[],
        signature=None,
    )


def names(store: Store, project_id: str, **query: object) -> list[str]:
    """Names of the records a bounded read returns."""
    rows, _ = read_window(store.project(project_id), WindowQuery(NOW - 10**9, NOW + 1, limit=100, **query))
    return sorted(r["name"] for r in rows)


def test_attribute_selectors_compare_type_and_value(store: Store):
    pid = create_project(store.control, "attrs")["project_id"]
    batch = [
        record("int", {"n": 1}, 1),
        record("str", {"n": "1"}, 2),
        record("float", {"n": 1.5}, 3),
        record("true", {"flag": True}, 4),
        record("quoted key", {"a.b": "x"}, 5),
        record("nul inside", {"k": "v", "z": "a\x00b"}, 6),  # jsonb refuses \u0000: must not fail the query
    ]
    with store.project(pid).begin() as conn:
        assert insert_records(conn, batch, NOW) == 6
        assert insert_records(conn, batch[:2], NOW) == 0  # duplicates are skipped and not counted
    selector = {"type": "event"}
    assert names(store, pid, selectors=({**selector, "attributes": {"n": 1}},)) == ["int"]
    assert names(store, pid, selectors=({**selector, "attributes": {"n": "1"}},)) == ["str"]
    assert names(store, pid, selectors=({**selector, "attributes": {"n": 1.5}},)) == ["float"]
    assert names(store, pid, selectors=({**selector, "attributes": {"flag": True}},)) == ["true"]
    assert names(store, pid, selectors=({**selector, "attributes": {"a.b": "x"}},)) == ["quoted key"]
    assert names(store, pid, selectors=({**selector, "attributes": {"missing": "x"}},)) == []
    assert names(store, pid, selectors=({**selector, "attributes": {"k": "v"}},)) == ["nul inside"]


def test_nul_and_the_escape_character_round_trip_and_filter(store: Store):
    pid = create_project(store.control, "nul")["project_id"]
    odd = ["nul\x00byte", "escape \ufffe char", "both \ufffe0 and \x00", "\x00"]
    with store.project(pid).begin() as conn:
        assert insert_records(conn, [record(n, {}, i) for i, n in enumerate(odd, 1)], NOW) == 4
    assert names(store, pid) == sorted(odd)
    for name in odd:  # an equality filter binds the value escaped the same way
        assert names(store, pid, filters=(("name", (name,)),)) == [name]


def test_escaping_is_lossless_and_free_for_ordinary_text():
    for text in ["", "plain", "\x00", "\ufffe", "\ufffe0", "\x00\ufffe\x00", "a\ufffe\ufffeb"]:
        assert unescape_nul(escape_nul(text)) == text
        assert "\x00" not in escape_nul(text)
    rows = [("a", 1, None), ("b\x00", 2.5, "c")]
    escaped = escape_nul_rows(rows)
    assert escaped[0] is rows[0] and escaped[1] == ("b\ufffe0", 2.5, "c")
    plain = [("a",), ("b",)]
    assert escape_nul_rows(plain) is plain
    # Only the columns named are escaped (JSON text is stored as it is and read back without unescaping).
    assert escape_nul_rows([("\ufffe", "\ufffe", "\x00")], (0, 2)) == [("\ufffe\ufffe", "\ufffe", "\ufffe0")]
    assert escape_nul_rows([("a", "\ufffe")], (0,)) == [("a", "\ufffe")]


def test_schema_names_fit_postgresql_and_stay_distinct(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "unused", database_schema_prefix="tenant_a_")
    s = Store.__new__(Store)  # only the naming rule, no database
    s.settings = settings
    short = s.project_schema("shop-1a2b3c4d")
    assert short == "tenant_a_lk_p_shop_1a2b3c4d"
    long_a, long_b = "a" * 60 + "-0000000a", "a" * 60 + "-0000000b"
    name_a, name_b = s.project_schema(long_a), s.project_schema(long_b)
    assert len(name_a.encode()) <= PG_MAX_IDENTIFIER and len(name_b.encode()) <= PG_MAX_IDENTIFIER
    assert name_a != name_b and name_a.startswith("tenant_a_lk_p_aaaa")
    # "-" and "_" map to the same character; an ID can never contain "_", so the names cannot collide.
    with pytest.raises(ValueError):
        s.project_schema("bad_id")
    with pytest.raises(ValueError):  # "$" in a re.match admitted a final newline
        s.project_schema("shop-1a2b3c4d\n")


def test_bad_database_urls_and_prefixes_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="postgresql\\+psycopg://"):
        Settings.from_env({}, database_url="mysql://root@127.0.0.1/test")
    with pytest.raises(ValueError, match="database_schema_prefix"):
        Settings.from_env({}, database_url="postgresql+psycopg://x@127.0.0.1/db", database_schema_prefix="Bad-Prefix")
    plain = Settings.from_env({"LOOPKIT_DATABASE_URL": "postgresql://u@127.0.0.1:5432/db"})
    assert plain.database_url == "postgresql+psycopg://u@127.0.0.1:5432/db"  # psycopg 3, not psycopg2
    done = subprocess.run(
        [sys.executable, "-m", "loopkit_core.cli", "projects", "list", "--database-url", "sqlite:///x.db"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "loopkit: error: database_url must be a postgresql+psycopg:// URL" in done.stderr


@needs_pg
def test_a_rotation_in_one_process_is_seen_by_another_at_once(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    one, two = Store(settings), Store(settings)  # two processes' stores: separate engines and pools
    try:
        created = create_project(one.control, "rotating")
        header = f"Bearer {created['agent_key']}"
        assert require(two.control, header, "telemetry:read").project_id == created["project_id"]
        rotated = rotate_keys(one.control, created["project_id"])
        with pytest.raises(Exception, match="unknown or revoked key"):
            require(two.control, header, "telemetry:read")
        assert (
            require(two.control, f"Bearer {rotated['agent_key']}", "telemetry:read").project_id == created["project_id"]
        )
    finally:
        one.close()
        two.close()


@needs_pg
def test_a_project_deleted_by_one_process_is_never_recreated_by_another(tmp_path: Path, server):
    settings = make_settings(tmp_path / "data")
    one, two = Store(settings), Store(settings)
    try:
        pid = create_project(one.control, "doomed")["project_id"]
        one.project(pid)
        schema = one.project_schema(pid)
        assert delete_project(one, pid)
        with pytest.raises(LookupError, match="was deleted"):
            two.project(pid)
        with two.control.connect() as conn:
            found = conn.exec_driver_sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).first()
        assert found is None
    finally:
        one.close()
        two.close()
    assert not store_exists(server, pid)


def test_nul_in_ids_is_a_4xx_on_every_backend(client, project):
    """PostgreSQL refuses NUL in text parameters; IDs a client sends must never reach it raw (a 500)."""
    agent = project.auth("agent")
    assert client.get("/v1/records/rec_%00", headers=agent).status_code == 404
    assert client.get("/v1/packets/pkt_%00", headers=agent).status_code == 404
    recovered = client.post("/v1/recover", json={"project_id": "x\x00y", "recovery_code": "lk_recover_\x00"})
    assert recovered.status_code == 401
    listed = client.get("/v1/telemetry", params={"name": "a\x00b"}, headers=agent)
    assert listed.status_code == 400 and "must not contain NUL" in listed.json()["error"]["message"]


@needs_pg
def test_postgresql_connections_plan_each_statement_for_its_parameters(store: Store, pid: str):
    # psycopg prepares a statement on its fifth run; PostgreSQL would then switch to a generic plan, which cannot
    # prune day partitions at plan time (a diagnosis's trace reads took 20x longer so).
    engine = store.project(pid)
    with engine.begin() as conn:
        insert_records(conn, [record(f"op{i % 3}", {}, i) for i in range(30)], NOW)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
        schema = engine.get_execution_options()["schema_translate_map"][None]
        cursor = conn.connection.dbapi_connection.cursor()
        for i in range(12):
            cursor.execute(
                f"SELECT count(*) FROM {schema}.records WHERE name = %s AND ts_ns >= %s", (f"op{i % 3}", NOW - 10**9)
            )
            assert cursor.fetchone()[0] == 10
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
            (f"SELECT count(*) FROM {schema}.records WHERE name%",),
        )
        assert cursor.fetchall() == [(0, 7)]  # prepared on the fifth run, then planned anew for each of the 7 after it
    with store.control.connect() as conn:  # the control schema's connections too
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"


def _work_mem_bytes(data_dir: Path, **settings: object) -> int:
    """work_mem on a connection of a store opened with these settings (a project's, from the same pool)."""
    store = Store(make_settings(data_dir, **settings))
    try:
        pid = create_project(store.control, "work mem")["project_id"]
        with store.project(pid).connect() as conn:
            return conn.exec_driver_sql("SELECT pg_size_bytes(current_setting('work_mem'))").scalar()
    finally:
        store.close()


@needs_pg
def test_postgresql_connections_sort_with_at_least_the_configured_work_mem(tmp_path: Path):
    # At the server's default 4 MB a diagnosis's grouped read of the window sorted on disk (docs/benchmarks.md).
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://")) as raw:
        server_default = raw.execute("SELECT pg_size_bytes(current_setting('work_mem'))").fetchone()[0]
    mib = 1024 * 1024
    assert Settings().database_work_mem_mb == 32
    assert _work_mem_bytes(tmp_path / "default") == max(32 * mib, server_default)
    assert _work_mem_bytes(tmp_path / "more", database_work_mem_mb=100) == max(100 * mib, server_default)
    # 0 leaves the server's own; a value under the connection's own default never lowers it.
    assert _work_mem_bytes(tmp_path / "off", database_work_mem_mb=0) == server_default
    higher = PG_URL + ("&" if "?" in PG_URL else "?") + "options=-c%20work_mem%3D200MB"
    own = tmp_path / "own"
    assert _work_mem_bytes(own, database_url=higher, database_schema_prefix=pg_prefix(own)) == 200 * mib


@pytest.mark.parametrize("value", [-1, 2049])
def test_database_work_mem_out_of_range_is_refused(value: int):
    with pytest.raises(ValueError, match="database_work_mem_mb"):
        Settings(database_work_mem_mb=value).validate()
    assert Settings.from_env({"LOOPKIT_DATABASE_WORK_MEM_MB": "64"}).database_work_mem_mb == 64


@needs_pg
def test_a_pooled_connection_killed_while_idle_is_replaced_and_a_busy_one_is_not_pinged(
    store: Store, pid: str, monkeypatch: pytest.MonkeyPatch
):
    # py-spy put 7% of a diagnosis in pings before every checkout; only a connection that sat idle is pinged now.
    engine = store.project(pid)
    pings: list[str] = []
    original = engines._ping_if_idle

    class Counted:
        """The pooled DBAPI connection, counting the cursors the real ping opens on it."""

        def __init__(self, dbapi_connection):  # noqa: ANN001
            self._dbapi = dbapi_connection

        def cursor(self):  # noqa: ANN201
            pings.append("ping")
            return self._dbapi.cursor()

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self._dbapi, name)

    def counting(dbapi_connection, record, proxy):  # noqa: ANN001
        original(Counted(dbapi_connection), record, proxy)

    monkeypatch.setattr(engines, "PG_PING_AFTER_IDLE_S", 0.3)
    with engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    pings.clear()
    event.listen(store._pg, "checkout", counting)
    event.remove(store._pg, "checkout", original)
    try:
        for _ in range(20):  # back to back: the same connection, never pinged
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == backend
        assert pings == []
        # The server ends the pooled connection's backend while it idles.
        with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as other:
            assert other.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0] is True
        time.sleep(0.4)
        with engine.connect() as conn:  # pinged, found dead, replaced: the caller never sees the dead one
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != backend
            assert conn.execute(select(func.count()).select_from(records)).scalar() == 0
        assert pings == ["ping"]  # the dead one; its fresh replacement is not pinged
    finally:
        event.remove(store._pg, "checkout", counting)
        event.listen(store._pg, "checkout", original)
