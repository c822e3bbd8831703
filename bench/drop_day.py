"""What dropping a day of records costs on SQLite, by `secure_delete` setting, against deleting the same rows.

Builds a project file with LoopKit's schema (migrated as a server would) and two day tables of `--records` records
each (random trace, span and session IDs, a ~700-byte attributes object: about the 1.2 KB a record of
bench/big_store.py takes with its indexes), checkpoints it, then times, on a fresh connection with LoopKit's page
cache, `DROP TABLE` of one day under each `secure_delete` setting and the batched row deletes retention used
before day tables (5,000 rows a transaction, oldest first). Every variant gets its own fresh copy of the file.

    python bench/drop_day.py                        # 650,000 records a day (a day of the 20M-record store)
    python bench/drop_day.py --records 100000

JSON on stdout. Debian's SQLite is compiled with secure_delete on; LoopKit's project connections set FAST.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine

from loopkit_core.store import day_tables
from loopkit_core.store.migrations import migrate
from loopkit_core.store.schema import RECORD_COLUMNS

DAY_NS = 86_400 * 10**9


def build(path: Path, per_day: int, seed: int = 7) -> list[str]:
    """A migrated project file with two day tables of `per_day` records; their names, oldest first."""
    engine = create_engine(f"sqlite:///{path}")
    migrate(engine, "project")
    engine.dispose()
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1048576")
    today = time.time_ns() // DAY_NS
    names = []
    padding = json.dumps({f"attr.{i}": "x" * 20 for i in range(24)})
    for day in (today - 2, today - 1):
        name = day_tables.table_name(day)
        day_tables.ensure(conn, {}, name)
        placeholders = ", ".join("?" * len(RECORD_COLUMNS))
        sql = f"INSERT INTO {name} ({', '.join(RECORD_COLUMNS)}) VALUES ({placeholders})"
        for start in range(0, per_day, 10_000):
            rows = []
            for i in range(start, min(start + 10_000, per_day)):
                ts = day * DAY_NS + i * (DAY_NS // per_day)
                values = {
                    "record_id": f"rec_{ts // 10**6:011x}{rng.getrandbits(52):013x}",
                    "ts_ns": ts, "end_ns": ts + 10**6, "duration_ms": 1.0, "received_ns": ts,
                    "type": "latency", "name": f"op-{i % 40}", "service": f"svc-{i % 16}", "status": "ok",
                    "message": "", "trace_id": f"{rng.getrandbits(128):032x}", "span_id": f"{rng.getrandbits(64):016x}",
                    "parent_span_id": None, "session_id": f"s-{rng.getrandbits(40):010x}", "user_id": f"u-{i % 5000}",
                    "kind": "server", "scope": "bench", "exception_type": None, "attributes": padding,
                    "resource": "", "events": "[]", "links": "[]", "signature": None, "resource_key": "r1",
                    "session_repeat": None, "trace_run": None,
                }  # fmt: skip
                rows.append(tuple(values[c] for c in RECORD_COLUMNS))
            conn.executemany(sql, rows)
            conn.commit()
        names.append(name)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return names


def measure(path: Path, table: str, variant: str) -> dict[str, float]:
    """Remove one day's records from a copy of the file: DROP TABLE under a secure_delete setting, or row deletes."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA cache_size=-32000")  # LoopKit's
    conn.execute("PRAGMA synchronous=FULL")  # LoopKit's default
    setting = "ON" if variant == "rows" else variant
    conn.execute(f"PRAGMA secure_delete={setting}")
    started, cpu0 = time.perf_counter(), time.process_time()
    if variant == "rows":
        deleted = 0
        while True:
            cursor = conn.execute(
                f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} ORDER BY ts_ns LIMIT 5000)"
            )
            conn.commit()
            deleted += cursor.rowcount
            if cursor.rowcount < 5000:
                break
    else:
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    wal = path.with_name(path.name + "-wal")
    written = wal.stat().st_size if wal.exists() else 0
    exists = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    left = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if exists else 0
    conn.close()
    return {"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "wal_mb": round(written / 2**20, 1), "left": left}


def main(argv: list[str] | None = None) -> int:
    """Build once, then time each variant on its own copy, `--repeat` times, and print JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=650_000, help="records in each day's table (default 650000)")
    p.add_argument("--repeat", type=int, default=3, help="timings per variant (default 3)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="loopkit-drop-"))
    try:
        source = work / "source.db"
        started = time.perf_counter()
        oldest, _ = build(source, args.records)
        print(f"built in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        results: dict[str, list[dict[str, float]]] = {v: [] for v in ("ON", "FAST", "OFF", "rows")}
        for _ in range(args.repeat):
            for variant in results:  # interleaved, so drift on the machine hits every variant alike
                copy = work / "copy.db"
                shutil.copyfile(source, copy)
                results[variant].append(measure(copy, oldest, variant))
                for suffix in ("", "-wal", "-shm"):
                    Path(str(copy) + suffix).unlink(missing_ok=True)
        summary = {
            ("drop_table_secure_delete_" + v if v != "rows" else "row_deletes_secure_delete_ON"): {
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "wal_mb": runs[0]["wal_mb"],
                "records_left": max(r["left"] for r in runs),
                "runs": [r["seconds"] for r in runs],
            }
            for v, runs in results.items()
        }
        report = {
            "benchmark": "drop_day",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "records_per_day": args.records,
            "file_mb": round(source.stat().st_size / 2**20, 1),
            "sqlite": sqlite3.sqlite_version,
            "machine": {"nproc": os.cpu_count()},
            "load_average": list(os.getloadavg()),
            **summary,
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
