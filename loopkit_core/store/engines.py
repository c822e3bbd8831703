"""Engines: the control store and one store per project, in SQLite files or PostgreSQL schemas, migrated on open."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, select

from loopkit_core.settings import Settings
from loopkit_core.store import day_tables, dialect, partitions
from loopkit_core.store.cursors import cursor_key
from loopkit_core.store.migrations import CURSOR_SECRET, migrate
from loopkit_core.store.schema import projects, server_secrets

PROJECT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,78}[a-z0-9]")  # fullmatch only: "$" admits a final newline
BUSY_TIMEOUT_MS = 10_000  # how long a SQLite connection waits for a lock before it errors
# A pooled PostgreSQL connection idle this long is pinged before reuse (one that was just used is not).
PG_PING_AFTER_IDLE_S = 1.0
PG_MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names silently; LoopKit never lets it


class Store:
    """Owns every engine of one LoopKit process; project IDs never become paths or schema names unchecked.

    SQLite (no database_url): data_dir/control.db and data_dir/projects/<project id>.db.
    PostgreSQL: one schema `<prefix>loopkit` for the control tables and one schema per project
    (`<prefix>lk_p_<project id, - as _>`) with the same tables, reached through schema_translate_map,
    so every caller keeps using `store.project(pid).begin()` / `.connect()` whichever backend is configured.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.postgres = bool(settings.database_url)
        # Most recently used last; beyond max_open_projects the first is closed (reopened on its next use).
        self._projects: OrderedDict[str, Engine] = OrderedDict()
        self._max_open = settings.max_open_projects
        self._lock = threading.Lock()
        self._dropped: set[str] = set()
        if self.postgres:
            self._pg = create_engine(settings.database_url, pool_size=8, max_overflow=8, pool_recycle=3600)
            event.listen(self._pg, "connect", _session_settings(settings.database_work_mem_mb))
            event.listen(self._pg, "checkin", _note_checkin)
            event.listen(self._pg, "checkout", _ping_if_idle)
            self.control_schema = settings.database_schema_prefix + "loopkit"
            self.control = self._pg.execution_options(schema_translate_map={None: self.control_schema})
            migrate(self.control, "control", self.control_schema)
        else:
            (self.data_dir / "projects").mkdir(parents=True, exist_ok=True)
            self.control = self._sqlite_engine(self.data_dir / "control.db")
            migrate(self.control, "control")
        self._cursor_secret = load_secret(self.control, CURSOR_SECRET)

    def autovacuum_off(self) -> bool:
        """Whether this is PostgreSQL with autovacuum off (day partitions then get no VACUUM; `serve` warns)."""
        if not self.postgres:
            return False
        with self._pg.connect() as conn:
            return conn.exec_driver_sql("SHOW autovacuum").scalar() != "on"

    def cursor_key(self, project_id: str) -> bytes:
        """The key that signs and checks one project's telemetry cursors (the same in every process)."""
        return cursor_key(self._cursor_secret, project_id)

    def project(self, project_id: str) -> Engine:
        """The engine of one project's record store, created (or migrated) on first use in this process."""
        with self._lock:
            engine = self._projects.get(project_id)
            if engine is not None:
                self._projects.move_to_end(project_id)
                return engine
        if not PROJECT_ID_RE.fullmatch(project_id):
            raise ValueError(f"invalid project id {project_id!r}")
        with self._lock:
            if project_id in self._dropped:
                raise LookupError(f"project {project_id} was deleted")
            engine = self._projects.get(project_id)
            if engine is None:
                if self.postgres:
                    # Another process may have deleted it: never recreate the schema of a deleted project.
                    with self.control.connect() as conn:
                        deleted = conn.execute(
                            select(projects.c.deleted_at).where(projects.c.project_id == project_id)
                        ).scalar()
                    if deleted is not None:
                        raise LookupError(f"project {project_id} was deleted")
                    schema = self.project_schema(project_id)
                    engine = self._pg.execution_options(schema_translate_map={None: schema})
                    migrate(engine, "project", schema)
                else:
                    engine = self._sqlite_engine(self.data_dir / "projects" / f"{project_id}.db", records=True)
                    migrate(engine, "project")
                self._projects[project_id] = engine
                evicted = self._evict()
            else:
                self._projects.move_to_end(project_id)
                evicted = []
        for old in evicted:
            # Closes only the idle pooled connections (SQLite: ~3 file descriptors each). A request or the writer
            # still holding the engine keeps its checked-out connection; a later use opens a fresh pool, and the
            # next store.project() call makes a new engine, so nothing in flight breaks.
            old.dispose()
        return engine

    def open_projects(self) -> int:
        """How many project engines this process keeps open (at most max_open_projects)."""
        with self._lock:
            return len(self._projects)

    def _evict(self) -> list[Engine]:
        # Called with the lock held. On PostgreSQL every project shares one pool: forgetting the engine is enough
        # (disposing it would close the shared pool).
        evicted = []
        while len(self._projects) > self._max_open:
            _, engine = self._projects.popitem(last=False)
            if not self.postgres:
                evicted.append(engine)
        return evicted

    def project_schema(self, project_id: str) -> str:
        """The PostgreSQL schema of a project: readable, unique, and within PostgreSQL's 63-byte limit."""
        if not PROJECT_ID_RE.fullmatch(project_id):
            raise ValueError(f"invalid project id {project_id!r}")
        name = self.settings.database_schema_prefix + "lk_p_" + project_id.replace("-", "_")
        if len(name) > PG_MAX_IDENTIFIER:
            # Two long IDs could share a truncated stem (and - vs _ could collide): the digest keeps them apart.
            digest = hashlib.blake2b(project_id.encode(), digest_size=6).hexdigest()
            name = name[: PG_MAX_IDENTIFIER - len(digest) - 1] + "_" + digest
        return name

    def drop(self, project_id: str) -> None:
        """Close a deleted project's engine and remove its data; it can never be reopened here."""
        if not PROJECT_ID_RE.fullmatch(project_id):
            raise ValueError(f"invalid project id {project_id!r}")
        with self._lock:
            self._dropped.add(project_id)
            engine = self._projects.pop(project_id, None)
        if self.postgres:
            with self._pg.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.project_schema(project_id)}" CASCADE')
            partitions.forget(self.project_schema(project_id))
            return
        if engine is not None:
            engine.dispose()
        base = self.data_dir / "projects" / f"{project_id}.db"
        for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Dispose of every engine."""
        with self._lock:
            engines, self._projects = list(self._projects.values()), {}
        if self.postgres:
            self._pg.dispose()
            return
        for engine in engines:
            engine.dispose()
        self.control.dispose()

    def _sqlite_engine(self, path: Path, records: bool = False) -> Engine:
        engine = create_engine(f"sqlite:///{path}", pool_size=8, max_overflow=8)
        if records:  # a project store: reads of `records` go to its day tables (store/day_tables.py)
            day_tables.install(engine)
        synchronous = self.settings.sqlite_synchronous.upper()

        @event.listens_for(engine, "connect")
        def _tune(dbapi_connection, record) -> None:  # noqa: ANN001
            record.info[day_tables.ROWS_KEY] = self.settings.sqlite_table_rows
            cursor = dbapi_connection.cursor()
            # busy_timeout: brief lock waits instead of errors; WAL: readers never block the writer.
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute("PRAGMA cache_size=-32000")
            # Debian's SQLite is built with secure_delete on: dropping a day's table then wrote ~0.8 GB of zeros
            # (3.3 s against 0.22 s, bench/drop_day.py). FAST still clears deleted rows within the pages it writes.
            cursor.execute("PRAGMA secure_delete=FAST")
            # Checkpoint every ~200 MB of WAL (the default), not SQLite's 4 MB: under ingest a hot index page is
            # copied back once per many commits. 10,000 pages cut writer CPU 15-20% against 1,000; 50,000 gave
            # another 5-23% sustained spans/s against 10,000 (docs/benchmarks.md). Commits stay durable.
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(self.settings.sqlite_wal_autocheckpoint)}")
            cursor.close()

        return engine


def _note_checkin(_dbapi_connection, record) -> None:  # noqa: ANN001
    """Pool checkin: remember when this PostgreSQL connection went idle."""
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy) -> None:  # noqa: ANN001
    """Pool checkout: ping a PostgreSQL connection that sat idle, so a dead one is replaced, not handed out.

    SQLAlchemy's pool_pre_ping pings on every checkout: a diagnosis checks a connection out for nearly every read,
    and py-spy found 7% of it in those pings (docs/benchmarks.md). A connection returned within the last second
    has just worked; one idle longer may have been closed by the server, a restart or a proxy's idle timeout.
    """
    idle_since = record.info.get("idle_since")  # None: opened for this checkout (record.info is per connection)
    if idle_since is None or time.monotonic() - idle_since < PG_PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        if not dbapi_connection.autocommit:
            dbapi_connection.rollback()  # the ping's implicit transaction must not be the caller's
    except Exception as error:
        raise exc.DisconnectionError(f"pooled connection is gone: {error}") from error  # the pool retries anew


def _session_settings(work_mem_mb: int) -> Callable[[Any, Any], None]:
    """The pool's connect hook: custom plans, and at least `work_mem_mb` of work_mem (0: the server's own)."""

    def connect(dbapi_connection, _record) -> None:  # noqa: ANN001
        # psycopg prepares a statement on its fifth run, and PostgreSQL then tries a generic plan, which cannot
        # prune day partitions at plan time or size a 500-value IN list: a diagnosis's trace reads went from
        # ~10 ms to ~200 ms each that way (docs/benchmarks.md). A custom plan costs well under a millisecond here.
        statements = ["SET plan_cache_mode = force_custom_plan"]
        if work_mem_mb:
            # Raised, never lowered. At the default 4 MB the planner sorted a diagnosis's grouped read of the window
            # on disk rather than hash it (it guessed 100,000 groups for 336), at twice the time (docs/benchmarks.md).
            statements.append(
                f"SELECT set_config('work_mem', '{int(work_mem_mb)}MB', false) "
                f"WHERE pg_size_bytes(current_setting('work_mem')) < {int(work_mem_mb)} * 1024 * 1024"
            )
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute("; ".join(statements))  # one round trip (no parameters: the simple query protocol)
        cursor.close()
        dbapi_connection.autocommit = autocommit

    return connect


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Put a SQLite file in WAL mode, waiting out other connections that are doing the same to a new file."""
    # Switching a new file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at once instead of
    # calling the busy handler (processes starting together on an empty data dir met this), so wait here.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def load_secret(control: Engine, name: str) -> bytes:
    """A secret of this installation from the control store, made (once, whoever comes first) if missing."""
    query = select(server_secrets.c.value).where(server_secrets.c.name == name)
    with control.begin() as conn:
        value = conn.execute(query).scalar()
        if value is None:
            row = {"name": name, "value": secrets.token_hex(32), "created_at": int(time.time())}
            conn.execute(dialect.insert(conn, server_secrets).values(**row).on_conflict_do_nothing())
            value = conn.execute(query).scalar()
    return bytes.fromhex(value)
