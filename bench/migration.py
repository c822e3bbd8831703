"""The time project migration 8 (records into partitions behind a view) takes on a store made before it.

Builds a project store as the previous version left it: schema version 7 and one `records` table with its indexes,
filled with `--records` rows (the realistic spans of `bench/payloads.py`, decoded by the OTLP protobuf receiver,
copied with new trace IDs and times over the last day). Then a new `Store` opens the project, which applies the
migration, and the time that takes is reported, with a check that every record reads back through the view.

Usage: `python bench/migration.py --records 1000000 [--database-url postgresql+psycopg://...]` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import func, select  # noqa: E402
from write_growth import restamp, template  # noqa: E402

from loopkit_core.projects import create_project  # noqa: E402
from loopkit_core.settings import Settings  # noqa: E402
from loopkit_core.store import dialect, pg_copy  # noqa: E402
from loopkit_core.store.engines import Store  # noqa: E402
from loopkit_core.store.migrations import current_version, schema_version  # noqa: E402
from loopkit_core.store.records import insert_resources  # noqa: E402
from loopkit_core.store.schema import RECORD_COLUMNS, record_partitions, records  # noqa: E402

KEYS = tuple(RECORD_COLUMNS)


def to_version_7(conn: Any) -> None:
    """Undo migration 8 on a new, empty store: the `records` table again, no catalog, version 7."""
    schema = dialect.schema_of(conn)
    prefix = f'"{schema}".' if schema else ""
    conn.exec_driver_sql(f"DROP VIEW {prefix}records")
    conn.exec_driver_sql(f"DROP TABLE {prefix}record_partitions")
    records.create(conn)
    conn.execute(schema_version.delete().where(schema_version.c.version >= 8))


def build(settings: Settings, count: int) -> str:
    """A version-7 project holding `count` records; its project ID."""
    store = Store(settings)
    project_id = create_project(store.control, "migration bench")["project_id"]
    engine = store.project(project_id)
    now = time.time_ns()
    rows, resources = template(50_000, now)
    with engine.begin() as conn:
        to_version_7(conn)
        insert_resources(conn, resources)
    sql = None
    written = rnd = 0
    while written < count:
        # Rounds of 50,000 rows, each ~4 s later: the whole store spans the last day at 1M records.
        batch = restamp(rows, rnd, now - 86_400 * 10**9, 10 * 10**9, 4 * 10**9)[: count - written]
        rnd += 1
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                pg_copy.insert_copy(conn, records, KEYS, batch)
            else:
                sql = sql or dialect.insert_ignoring_sql(conn, records, (), KEYS)
                conn.exec_driver_sql(sql, batch)
        written += len(batch)
        if rnd % 5 == 0:
            print(f"built {written}/{count}", file=sys.stderr, flush=True)
    assert current_version(engine) == 7
    store.close()
    return project_id


def main(argv: list[str] | None = None) -> int:
    """Build, migrate (timed), check, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--database-url", default=None)
    args = p.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-migration-"))
    prefix = f"bench_mig_{int(time.time())}_"
    settings = Settings(data_dir=data_dir, database_url=args.database_url, database_schema_prefix=prefix)
    try:
        t0 = time.perf_counter()
        project_id = build(settings, args.records)
        built = time.perf_counter() - t0
        store = Store(settings)
        try:
            t0 = time.perf_counter()
            engine = store.project(project_id)  # applies migration 8
            migrated = time.perf_counter() - t0
            with engine.connect() as conn:
                version = current_version(engine)
                through_view = conn.execute(select(func.count()).select_from(records)).scalar()
                catalog = [dict(r._mapping) for r in conn.execute(select(record_partitions))]
            if args.database_url:
                with store._pg.begin() as conn:
                    for schema in (store.control_schema, store.project_schema(project_id)):
                        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    result = {
        "benchmark": "migration-8",
        "database": "postgresql" if args.database_url else "sqlite",
        "records": args.records,
        "build_s": round(built, 1),
        "migration_s": round(migrated, 3),
        "schema_version": version,
        "records_through_view": through_view,
        "catalog": catalog,
        "load_average_end": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(result, indent=2))
    return 0 if through_view == args.records and version == 8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
