"""Shared fixtures: a real LoopKit (HTTP + gRPC) on free loopback ports over real SQLite files."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, event

from loopkit_core.model import Record, record_id_for_span
from loopkit_core.projects import create_project
from loopkit_core.server import Running, in_thread
from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store

# tests/data holds fixtures, e.g. the example third-party plugin package and its own tests (run by test_plugins.py
# in a subprocess against a throwaway distribution), never collected as LoopKit tests.
collect_ignore = ["data"]

# Set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run every server and store of the suite on
# PostgreSQL: each data_dir a test uses maps to its own schemas (a prefix derived from the path), which the
# test (or module, for module-scoped servers) drops when it ends.
PG_URL = os.environ.get("LOOPKIT_TEST_DATABASE_URL") or None
_RUN = secrets.token_hex(3)  # keeps concurrent runs against one database apart
_prefixes: list[str] = []


def query_plans(engine: Engine, read: Callable[[], object], marker: str) -> list[tuple[str, list[str]]]:
    """(statement, EXPLAIN QUERY PLAN lines) of each SELECT containing `marker` that `read` runs on a SQLite engine.

    Each plan is read on the statement's own connection just after it ran, with its parameters.
    """
    found: list[tuple[str, list[str]]] = []

    def note(_conn, cursor, statement, parameters, _context, _many) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT") and marker in statement:
            plan = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            found.append((statement, [row[3] for row in plan]))

    event.listen(engine, "after_cursor_execute", note)
    try:
        read()
    finally:
        event.remove(engine, "after_cursor_execute", note)
    return found


def sqlite_only(reason: str) -> pytest.MarkDecorator:
    """Skip on a PostgreSQL run: the test is about the SQLite layout (files in data_dir) itself."""
    return pytest.mark.skipif(PG_URL is not None, reason=f"SQLite layout only: {reason}")


needs_sqlite = sqlite_only("reads or alters the SQLite files in data_dir directly")


def pg_prefix(data_dir: Path) -> str:
    """The schema prefix of a data_dir in this run (registered for cleanup)."""
    digest = hashlib.blake2b(f"{_RUN}:{Path(data_dir).resolve()}".encode(), digest_size=5).hexdigest()
    prefix = f"t{digest}_"
    if prefix not in _prefixes:
        _prefixes.append(prefix)
    return prefix


def store_env(data_dir: Path) -> dict[str, str]:
    """Environment variables a `loopkit` subprocess needs to use the same store as make_settings(data_dir)."""
    if PG_URL is None:
        return {}
    return {"LOOPKIT_DATABASE_URL": PG_URL, "LOOPKIT_DATABASE_SCHEMA_PREFIX": pg_prefix(data_dir)}


def store_exists(running: Running, project_id: str) -> bool:
    """Whether a project's store exists: its SQLite file, or its PostgreSQL schema."""
    store = running.app.store
    if not store.postgres:
        return (Path(running.settings.data_dir) / "projects" / f"{project_id}.db").is_file()
    with store.control.connect() as conn:
        query = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
        return conn.exec_driver_sql(query, (store.project_schema(project_id),)).first() is not None


def _drop_schemas(prefixes: list[str]) -> None:
    import psycopg

    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for prefix in prefixes:
            names = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE left(nspname, length(%s)) = %s", (prefix, prefix)
            ).fetchall()
            for (name,) in names:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(autouse=True, scope="module")
def _pg_module_cleanup() -> Iterator[None]:
    """Drop the schemas of module-scoped servers once the module is done (PostgreSQL runs only)."""
    start = len(_prefixes)
    yield
    if PG_URL is not None and len(_prefixes) > start:
        _drop_schemas(_prefixes[start:])
        del _prefixes[start:]


@pytest.fixture(autouse=True)
def _pg_test_cleanup() -> Iterator[None]:
    """Drop the schemas a test made, after its own fixtures have stopped (PostgreSQL runs only)."""
    start = len(_prefixes)
    yield
    if PG_URL is not None and len(_prefixes) > start:
        _drop_schemas(_prefixes[start:])
        del _prefixes[start:]


@dataclass
class Project:
    """A project created through the real control store, with its secrets."""

    project_id: str
    producer_key: str
    agent_key: str
    dashboard_key: str
    recovery_code: str

    def auth(self, kind: str = "producer") -> dict[str, str]:
        """The authorization header for one of the project's keys."""
        return {"authorization": f"Bearer {getattr(self, kind + '_key')}"}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test server: loopback only, ports chosen by the OS; on PostgreSQL when the run is."""
    if PG_URL is not None and "database_url" not in overrides:
        overrides = {"database_url": PG_URL, "database_schema_prefix": pg_prefix(data_dir), **overrides}
    return Settings.from_env(
        {},
        data_dir=data_dir,
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        log_level="warning",
        shutdown_grace_seconds=5.0,
        **overrides,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    """A running LoopKit with its own data dir; stopped (and drained) after the test."""
    with in_thread(make_settings(tmp_path / "data")) as running:
        yield running


def new_project(running: Running, name: str = "test app") -> Project:
    """Create a project on a running server's control store."""
    created = create_project(running.app.store.control, name)
    return Project(**{k: created[k] for k in Project.__dataclass_fields__})


@pytest.fixture
def project(server: Running) -> Project:
    """A fresh project on `server`."""
    return new_project(server)


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client for `server`."""
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A Store on this test's own data dir (PostgreSQL: its own schemas), closed after the test."""
    s = Store(make_settings(tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def pid(store: Store) -> str:
    """A fresh project in `store`."""
    return create_project(store.control, "test app")["project_id"]


NOW = time.time_ns()  # the test run's reference time, for records built by span()


def span(i: int, trace: int = 1, **fields: object) -> Record:
    """Span `i` of trace `trace`, started i microseconds before NOW; `fields` override any attribute."""
    trace_id, span_id = f"{trace:032x}", f"{i + 1:016x}"
    ts = NOW - i * 1000
    values: dict[str, object] = {
        "record_id": record_id_for_span("p", trace_id, span_id, ts),
        "ts_ns": ts,
        "end_ns": ts + 5_000_000,
        "type": "span",
        "name": f"op {i}",
        "service": "svc",
        "status": "ok",
        "message": "",
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": None,
        "session_id": f"s{i % 7}",
        "user_id": None,
        "kind": "server",
        "scope": "lib",
        "exception_type": None,
        "attributes": {"i": i, "http.route": "/a"},
        "resource": {"service.name": "svc"},
        "events": [],
        "links": [],
        "signature": None,
    }
    values.update(fields)
    return Record(**values)  # type: ignore[arg-type]
