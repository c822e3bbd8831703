"""`sqlite_wal_autocheckpoint`: when SQLite copies a project's write-ahead log back into its database file.

SQLite only: PostgreSQL keeps its own WAL. The observable difference is where committed rows are: below the mark
they wait in the `-wal` file, past it the committing connection copies them into the database file.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import make_settings, needs_sqlite
from sqlalchemy import func, select

from loopkit_core.model import record_id_for_span
from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.schema import RECORD_COLUMNS, records
from loopkit_core.store.writer import Writer

pytestmark = needs_sqlite
NOW = time.time_ns()
ROWS_PER_REQUEST = 500
REQUESTS = 12  # 6,000 rows of ~1.2 KB: ~7 MB of table pages alone


def rows(project_id: str, request: int) -> list[tuple]:
    """One request's spans as writer rows, each with its own trace and span ID and ~1 KB of attributes."""
    out = []
    for i in range(ROWS_PER_REQUEST):
        trace_id, span_id = f"{request:016x}{i:016x}", f"{i + 1:016x}"
        ts = NOW - (request * ROWS_PER_REQUEST + i) * 1000
        values = {
            "record_id": record_id_for_span(project_id, trace_id, span_id, ts),
            "ts_ns": ts,
            "end_ns": ts + 1_000_000,
            "duration_ms": 1.0,
            "received_ns": NOW,
            "type": "span",
            "name": "op",
            "service": "svc",
            "status": "ok",
            "message": "",
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": None,
            "session_id": None,
            "user_id": None,
            "kind": "server",
            "scope": "lib",
            "exception_type": None,
            "attributes": '{"pad": "' + "x" * 1000 + '"}',
            "resource": "{}",
            "events": "[]",
            "links": "[]",
            "signature": None,
            "resource_key": None,
        }
        out.append(tuple(values[c] for c in RECORD_COLUMNS))
    return out


def write(data_dir: Path, project_id: str, **settings: object) -> tuple[float, float, int]:
    """Write REQUESTS requests through the writer; the database file's and the log's MB, and the rows stored."""
    store = Store(make_settings(data_dir, **settings))
    writer = Writer(store, threads=1)
    try:
        for request in range(REQUESTS):
            assert writer.submit(project_id, rows(project_id, request)).result(timeout=30).inserted == ROWS_PER_REQUEST
        base = data_dir / "projects" / f"{project_id}.db"
        db_mb = base.stat().st_size / 2**20
        wal_mb = base.with_name(base.name + "-wal").stat().st_size / 2**20
        with store.project(project_id).connect() as conn:
            stored = conn.execute(select(func.count()).select_from(records)).scalar()
            mark = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert mark == store.settings.sqlite_wal_autocheckpoint
    finally:
        writer.close(timeout=30)
        store.close()
    return db_mb, wal_mb, stored


def test_below_the_default_mark_committed_rows_wait_in_the_log(tmp_path: Path) -> None:
    db_mb, wal_mb, stored = write(tmp_path / "data", "default-mark")
    assert Settings().sqlite_wal_autocheckpoint == 50_000
    assert stored == REQUESTS * ROWS_PER_REQUEST
    assert db_mb < 1  # the schema only: nothing copied back yet
    assert wal_mb > 7


def test_past_a_low_mark_the_rows_are_copied_into_the_database_file(tmp_path: Path) -> None:
    db_mb, wal_mb, stored = write(tmp_path / "data", "low-mark", sqlite_wal_autocheckpoint=500)
    assert stored == REQUESTS * ROWS_PER_REQUEST
    assert db_mb > 6  # checkpointed: the rows are in the database file proper
    # The log is restarted after each checkpoint, so it never holds much more than the mark and one commit.
    assert wal_mb < 500 * 4096 / 2**20 + 3


@pytest.mark.parametrize("value", ["99", "-1", "x"])
def test_a_bad_mark_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="(?i)sqlite_wal_autocheckpoint"):
        Settings.from_env({"LOOPKIT_SQLITE_WAL_AUTOCHECKPOINT": value}, data_dir=tmp_path)
