"""Retention: records older than a project's retention period are deleted in the background, in small batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Engine, MetaData, Table, delete, select

from loopkit_core.jobs import PeriodicJob
from loopkit_core.model import DAY_NS
from loopkit_core.projects import list_projects
from loopkit_core.store import day_tables, partitions
from loopkit_core.store.engines import Store
from loopkit_core.store.schema import project_retention, projects, records

log = logging.getLogger("loopkit.retention")
# Between two delete batches: the writer (and readers) get the database in the meantime.
PAUSE_SECONDS = 0.01


@dataclass(frozen=True)
class PurgeResult:
    """What one pass over one project did."""

    project_id: str
    retention_days: float
    cutoff_ns: int
    deleted: int
    batches: int
    partitions_dropped: int = 0  # PostgreSQL: whole day partitions dropped (their records are in `deleted`)


def set_retention(control: Engine, project_id: str, days: float | None, now: float | None = None) -> None:
    """Set a project's retention period in days (0: forever; None: back to the server default)."""
    if days is not None and (days < 0 or days != days or days == float("inf")):
        raise ValueError("retention days must be a finite number, 0 or more")
    with control.begin() as conn:
        found = conn.execute(
            select(projects.c.project_id).where(projects.c.project_id == project_id, projects.c.deleted_at.is_(None))
        ).first()
        if found is None:
            raise LookupError(f"no project {project_id!r}")
        conn.execute(delete(project_retention).where(project_retention.c.project_id == project_id))
        if days is not None:
            stamp = int(now if now is not None else time.time())
            conn.execute(
                project_retention.insert().values(project_id=project_id, retention_days=float(days), updated_at=stamp)
            )


def overrides(control: Engine) -> dict[str, float]:
    """Every per-project retention override, by project ID."""
    with control.connect() as conn:
        rows = conn.execute(select(project_retention.c.project_id, project_retention.c.retention_days)).all()
    return {row.project_id: row.retention_days for row in rows}


def retention_days(control: Engine, project_id: str, default: float) -> float:
    """A project's effective retention period: its override, else the server's `retention_days`."""
    return overrides(control).get(project_id, default)


def purge_project(
    engine: Engine, cutoff_ns: int, batch_rows: int, pause: float = PAUSE_SECONDS, stop: threading.Event | None = None
) -> tuple[int, int, int]:
    """Delete a project's records with ts_ns < cutoff_ns; returns (deleted, batches, day partitions dropped).

    Day tables (SQLite, store/day_tables.py) and day partitions (PostgreSQL) wholly older than the cutoff are dropped
    in one statement each, and a day is kept whole until its last record expires (retention is day-granular there).
    Other rows (SQLite's `records`; PostgreSQL's default and legacy partitions) go `batch_rows` per transaction,
    each batch a short transaction that picks the oldest rows through the (ts_ns, record_id) index, so the writer
    waits at most one batch for the database, and ingest carries on between batches.
    """
    dropped = deleted = batches = 0
    tables = [records]
    if engine.dialect.name == "sqlite":
        dropped, deleted = day_tables.drop_expired(engine, cutoff_ns)
    if engine.dialect.name == "postgresql":
        dropped, deleted = partitions.drop_expired(engine, cutoff_ns)
        names = partitions.row_delete_tables(engine)
        if names is not None:
            tables = [Table(name, MetaData(), Column("seq"), Column("ts_ns")) for name in names]
    for table in tables:
        oldest = select(table.c.seq).where(table.c.ts_ns < cutoff_ns).order_by(table.c.ts_ns).limit(batch_rows)
        while True:
            with engine.begin() as conn:
                count = conn.execute(delete(table).where(table.c.seq.in_(oldest))).rowcount
            deleted += count
            batches += 1
            if stop is not None and stop.is_set():
                return deleted, batches, dropped
            if count < batch_rows:
                break
            time.sleep(pause)
    return deleted, batches, dropped


def purge_expired_records(store: Store, now: float, stop: threading.Event | None = None) -> list[PurgeResult]:
    """One retention pass over every live project; stops early (between projects) when `stop` is set.

    On PostgreSQL it also brings the statistics of each project's day partitions up to date (see
    partitions.analyze_stale), whatever the project's retention.
    """
    settings = store.settings
    custom = overrides(store.control)
    results = []
    for project in list_projects(store.control):
        if stop is not None and stop.is_set():
            break
        project_id = project["project_id"]
        days = custom.get(project_id, settings.retention_days)
        if days <= 0 and not store.postgres:
            continue
        try:
            engine = store.project(project_id)
        except LookupError:  # deleted meanwhile
            continue
        if store.postgres:  # the same periodic pass keeps day partitions' planner statistics current
            partitions.analyze_stale(engine)
        if days <= 0:
            continue
        cutoff_ns = int(now * 1e9) - int(days * DAY_NS)
        deleted, batches, dropped = purge_project(engine, cutoff_ns, settings.retention_batch_rows, stop=stop)
        if deleted:
            log.info(
                "retention: deleted %d record(s) of %s older than %s days (%d whole day partition(s) dropped)",
                deleted,
                project_id,
                days,
                dropped,
            )
        results.append(PurgeResult(project_id, days, cutoff_ns, deleted, batches, dropped))
    return results


class RetentionPurger(PeriodicJob):
    """Runs purge_expired_records every `interval` seconds (and once at start) until stopped.

    stop() ends a pass early, between two batches, so shutdown waits for at most one batch.
    """

    def __init__(self, store: Store, clock: Callable[[], float], interval: float) -> None:
        super().__init__(
            "loopkit-retention",
            interval,
            lambda stop: purge_expired_records(store, clock(), stop),
            run_at_start=True,
        )
