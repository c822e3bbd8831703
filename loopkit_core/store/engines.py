"""Engines: one control database and one SQLite file per project, opened lazily and tuned once."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

from loopkit_core.settings import Settings
from loopkit_core.store.schema import control_metadata, project_metadata

PROJECT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,78}[a-z0-9]$")


class Store:
    """Owns every engine of one LoopKit process; project IDs never become paths unchecked."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        (self.data_dir / "projects").mkdir(parents=True, exist_ok=True)
        self.control = self._sqlite_engine(self.data_dir / "control.db")
        control_metadata.create_all(self.control)
        self._projects: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._dropped: set[str] = set()

    def project(self, project_id: str) -> Engine:
        """The engine of one project's record store, created with its schema on first use."""
        engine = self._projects.get(project_id)
        if engine is not None:
            return engine
        if not PROJECT_ID_RE.match(project_id):
            raise ValueError(f"invalid project id {project_id!r}")
        with self._lock:
            if project_id in self._dropped:
                raise LookupError(f"project {project_id} was deleted")
            engine = self._projects.get(project_id)
            if engine is None:
                engine = self._sqlite_engine(self.data_dir / "projects" / f"{project_id}.db")
                project_metadata.create_all(engine)
                self._projects[project_id] = engine
        return engine

    def drop(self, project_id: str) -> None:
        """Close a deleted project's engine and remove its files; it can never be reopened here."""
        if not PROJECT_ID_RE.match(project_id):
            raise ValueError(f"invalid project id {project_id!r}")
        with self._lock:
            self._dropped.add(project_id)
            engine = self._projects.pop(project_id, None)
        if engine is not None:
            engine.dispose()
        base = self.data_dir / "projects" / f"{project_id}.db"
        for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Dispose of every engine."""
        with self._lock:
            engines, self._projects = list(self._projects.values()), {}
        for engine in engines:
            engine.dispose()
        self.control.dispose()

    def _sqlite_engine(self, path: Path) -> Engine:
        engine = create_engine(f"sqlite:///{path}", pool_size=8, max_overflow=8)
        synchronous = self.settings.sqlite_synchronous.upper()

        @event.listens_for(engine, "connect")
        def _tune(dbapi_connection, _record) -> None:  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            # WAL: readers never block the writer; busy_timeout: brief lock waits instead of errors.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute("PRAGMA cache_size=-32000")
            cursor.close()

        return engine
