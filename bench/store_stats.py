"""A project store seen from outside the server: how many records it holds and how many bytes it takes on disk.

The benchmarks (bench/ingest.py sustained mode, bench/big_store.py) watch a store while a server writes to it,
so they read it in a separate connection: the SQLite files read-only, or the project's PostgreSQL schema. Only
`StoreStats.records` knows how records are laid out (the one count in SQL on `records`); `disk_bytes` adds up
whatever the project owns (every file named after it, every table of its schema with indexes and TOAST), so both
keep working when the storage layout changes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from loopkit_core.store import day_tables


class StoreStats:
    """Record count and size on disk of one project, on SQLite (data_dir) or PostgreSQL (env's database URL)."""

    def __init__(self, data_dir: Path, project_id: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.project_id = project_id
        self.env = dict(env or {})
        self.postgres = bool(self.env.get("LOOPKIT_DATABASE_URL"))
        self._store: Any = None

    def _pg_store(self) -> Any:
        if self._store is None:
            from loopkit_core.settings import Settings
            from loopkit_core.store.engines import Store

            self._store = Store(Settings.from_env(self.env, data_dir=self.data_dir))
        return self._store

    @property
    def schema(self) -> str:
        """The project's PostgreSQL schema."""
        return self._pg_store().project_schema(self.project_id)

    def records(self) -> int:
        """Records stored in the project (0 while it has no store yet): the one count that knows the layout."""
        if not self.postgres:
            path = self.data_dir / "projects" / f"{self.project_id}.db"
            if not path.exists():
                return 0
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
                return sum(day_tables.record_counts(conn).values())
        store = self._pg_store()
        with store._pg.connect() as conn:
            exists = conn.exec_driver_sql("SELECT to_regclass(%s)", (f'"{self.schema}".records',)).scalar()
            return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{self.schema}".records').scalar()) if exists else 0

    def disk_bytes(self) -> int:
        """Bytes the project takes: its SQLite files (database, WAL, shared memory, anything named after it), or
        every table of its PostgreSQL schema with its indexes and TOAST."""
        if not self.postgres:
            total = 0
            for path in (self.data_dir / "projects").glob(f"{self.project_id}*"):
                files = path.rglob("*") if path.is_dir() else [path]
                total += sum(f.stat().st_size for f in files if f.is_file())
            return total
        query = (
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')"
        )
        with self._pg_store()._pg.connect() as conn:
            return int(conn.exec_driver_sql(query, (self.schema,)).scalar())

    def close(self) -> None:
        """Close the PostgreSQL connections (SQLite connections are closed after each reading)."""
        if self._store is not None:
            self._store.close()
            self._store = None


def drop_schemas(store: Any, prefix: str) -> None:
    """Drop every PostgreSQL schema whose name starts with `prefix` (a benchmark's own), through a LoopKit Store."""
    with store._pg.begin() as conn:
        query = "SELECT nspname FROM pg_namespace WHERE left(nspname, length(%s)) = %s"
        for (name,) in conn.exec_driver_sql(query, (prefix, prefix)).all():
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
