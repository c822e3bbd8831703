"""`sqlite_wal_autocheckpoint`: when SQLite copies a project's write-ahead log back into its database file.

SQLite only: PostgreSQL keeps its own WAL. The observable difference is where committed rows are: below the mark
they wait in the `-wal` file, past it the committing connection copies them into the database file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NOW, make_settings, needs_sqlite, span
from sqlalchemy import func, select

from loopkit_core.model import Record
from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.records import resource_rows, to_rows
from loopkit_core.store.schema import records
from loopkit_core.store.writer import Writer

pytestmark = needs_sqlite
ROWS_PER_REQUEST = 500
REQUESTS = 12  # 6,000 rows of ~1.2 KB: ~7 MB of table pages alone


def request_records(request: int) -> list[Record]:
    """One request's spans, a trace of their own, each with ~1 KB of attributes."""
    return [span(i, trace=request + 1, attributes={"pad": "x" * 1000}) for i in range(ROWS_PER_REQUEST)]


def write(data_dir: Path, project_id: str, **settings: object) -> tuple[float, float, int]:
    """Write REQUESTS requests through the writer; the database file's and the log's MB, and the rows stored."""
    store = Store(make_settings(data_dir, **settings))
    writer = Writer(store, threads=1)
    try:
        for request in range(REQUESTS):
            batch = request_records(request)
            ack = writer.submit(project_id, to_rows(batch, NOW), resources=resource_rows(batch)).result(timeout=30)
            assert ack.inserted == ROWS_PER_REQUEST
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
