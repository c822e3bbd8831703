"""Diagnosis cost on windows of 10k, 100k and 1M records (see docs/benchmarks.md).

For each size N a project store is filled through LoopKit's own ingest steps (signature hook,
row conversion, the batching writer) with a synthetic window: 20% errors and tool failures from
50 faults with heavy variable parts, the rest latency spans on 200 operations over the window and
a baseline before it, with one operation 3x slower in the window. Then a fresh process runs the
diagnosis (`loopkit_core.diagnose.run`, the code behind POST /v1/runs/diagnose) and reports its wall
time, its CPU time (steadier than wall time on a shared machine) and its own peak RSS, so the fill does
not count. With --database-url the store is PostgreSQL (this run's schemas are dropped at the end). With
--table-rows N the records are written in time order, as live ingest writes them, into SQLite day tables of at
most N records each (the `sqlite_table_rows` setting), so that a diagnosis reads a window divided between tables.

    python bench/diagnose.py --sizes 10000 100000 1000000
    python bench/diagnose.py --sizes 1000000 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/diagnose.py --sizes 1000000 --table-rows 100000     # the window in ~15 tables
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import store_stats

from loopkit_core.app import create_app
from loopkit_core.diagnose import DiagnoseRequest, run
from loopkit_core.model import Record, new_record_id
from loopkit_core.projects import create_project
from loopkit_core.settings import Settings
from loopkit_core.store import day_tables
from loopkit_core.store.engines import Store
from loopkit_core.store.records import resource_rows, to_rows

FAULTS = 50
OPERATIONS = 200
WINDOW_MINUTES = 60
BATCH = 5000


def fault_message(fault: int, rng: random.Random) -> tuple[str, str, str]:
    """(operation, exception type, message) of one occurrence of a fault, variable parts random."""
    kinds = [
        ("TimeoutError", "upstream {svc} timed out after {ms} ms for request req_{hex}"),
        ("ConnectionError", "connection refused by {ip}:{port} while calling {svc}"),
        ("KeyError", "missing key 'user_{n}' in session {uuid}"),
        ("ValueError", "invalid quantity {n} for sku SKU-{n2} in cart {hex}"),
        ("PermissionError", "user {email} is not allowed to access /files/{n}/report.pdf"),
    ]
    exc, text = kinds[fault % len(kinds)]
    message = text.format(
        svc=f"svc{fault}",
        ms=rng.randint(100, 30000),
        hex=f"{rng.getrandbits(48):012x}",
        ip=f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        port=rng.randint(1024, 65535),
        n=rng.randint(1, 10**6),
        n2=rng.randint(1, 10**4),
        uuid=f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-a{rng.getrandbits(12):03x}-"
        f"{rng.getrandbits(48):012x}",
        email=f"user{rng.randint(1, 9999)}@example.com",
    )
    return f"POST /api/op{fault}", exc, message


def settings(data_dir: Path, database: dict[str, str], **more: int) -> Settings:
    """The bench's settings: SQLite in data_dir, or the given PostgreSQL URL and schema prefix."""
    return Settings(data_dir=data_dir, **database, **more)  # type: ignore[arg-type]


def fill(
    data_dir: Path, size: int, seed: int = 7, database: dict[str, str] | None = None, table_rows: int | None = None
) -> tuple[str, int]:
    """Fill a project with `size` records in the window (plus a baseline); returns (project_id, until_ns).

    With `table_rows`, in time order into day tables of at most that many records; else in random time order.
    """
    rng = random.Random(seed)
    bound = {} if table_rows is None else {"sqlite_table_rows": table_rows}
    app = create_app(settings(data_dir, database or {}, writer_max_pending_rows=10_000_000, **bound))
    project_id = create_project(app.store.control, "bench")["project_id"]
    until = time.time_ns()
    window_ns = WINDOW_MINUTES * 60 * 1_000_000_000
    baseline = size // 2  # spans before the window, for the latency baseline
    made: list[Record] = []
    for i in range(size + baseline):
        in_window = i < size
        ts = until - rng.randrange(window_ns) if in_window else until - window_ns - rng.randrange(6 * window_ns)
        if in_window and i % 5 == 0:
            fault = rng.randrange(FAULTS)
            operation, exc, message = fault_message(fault, rng)
            rtype = "tool_failure" if fault % 10 == 0 else "error"
            record = Record(
                new_record_id(), ts, ts + 1_000_000, rtype, operation, "shop", "error", message, exception_type=exc
            )
        else:
            op = rng.randrange(OPERATIONS)
            ms = rng.lognormvariate(3.5, 0.4) * (3 if op == 7 and in_window else 1)
            record = Record(new_record_id(), ts, ts + int(ms * 1e6), "span", f"GET /api/route{op}", "shop", "ok", "")
        made.append(record)
    if table_rows is not None:
        made.sort(key=lambda r: r.ts_ns)
    futures = [_submit(app, project_id, made[i : i + BATCH]) for i in range(0, len(made), BATCH)]
    for future in futures:
        future.result()
    app.close()
    return project_id, until


def _submit(app, project_id: str, batch: list[Record]):  # noqa: ANN001, ANN202
    signatures = app.loop.sign(batch)
    return app.writer.submit(project_id, to_rows(batch, time.time_ns()), None, signatures, resource_rows(batch))


def diagnose_once(data_dir: Path, project_id: str, until: int, database: dict[str, str] | None = None) -> dict:
    """Run one diagnosis in this process; wall time, CPU time and this process's peak RSS."""
    app = create_app(settings(data_dir, database or {}))
    started, cpu = time.perf_counter(), time.process_time()
    packet = run(app.store, app.plugins, project_id, DiagnoseRequest(WINDOW_MINUTES, until, None, 3, 100), until)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    app.close()
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_mb": peak_rss_mb(),
        "telemetry_read": packet["telemetry_read"],
        "issues": len(packet["issues"]),
        "by_diagnoser": {d: sum(i["diagnoser"] == d for i in packet["issues"]) for d in packet["diagnosers"]},
        "errors": packet["diagnoser_errors"],
    }


def record_tables(data_dir: Path, project_id: str) -> dict[str, int]:
    """SQLite: each table of the project's records and its row count."""
    with sqlite3.connect(data_dir / "projects" / f"{project_id}.db") as db:
        return day_tables.record_counts(db)


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's, inherited over fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    """Fill and diagnose each size; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="store in PostgreSQL (postgresql+psycopg://...), not SQLite")
    parser.add_argument("--table-rows", type=int, help="SQLite: fill in time order, day tables of at most N records")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data_dir, project_id, until, database = args.child
        print(json.dumps(diagnose_once(Path(data_dir), project_id, int(until), json.loads(database))))
        return
    results = []
    for size in args.sizes:
        database: dict[str, str] = {}
        if args.database_url:
            prefix = f"bench_{os.urandom(4).hex()}_"
            database = {"database_url": args.database_url, "database_schema_prefix": prefix}
        with tempfile.TemporaryDirectory() as tmp:
            try:
                t = time.perf_counter()
                project_id, until = fill(Path(tmp), size, database=database, table_rows=args.table_rows)
                print(f"filled {size} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
                tables = None if database else record_tables(Path(tmp), project_id)
                runs = []
                for _ in range(args.repeat):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", tmp, project_id, str(until), json.dumps(database)],
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=600,
                    )
                    runs.append(json.loads(out.stdout))
            finally:
                if database:
                    drop_schemas(Path(tmp), database)
            seconds = sorted(r["seconds"] for r in runs)
            cpu = sorted(r["cpu_seconds"] for r in runs)
            results.append(
                {
                    "records_in_window": size,
                    "median_seconds": seconds[len(seconds) // 2],
                    "median_cpu_seconds": cpu[len(cpu) // 2],
                    "record_tables": tables,
                    "runs": runs,
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
    report = {
        "benchmark": "diagnose",
        "database": "postgresql" if args.database_url else "sqlite",
        "faults": FAULTS,
        "operations": OPERATIONS,
        "load_average": os.getloadavg(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


def drop_schemas(data_dir: Path, database: dict[str, str]) -> None:
    """Drop this run's PostgreSQL schemas (those named with its prefix)."""
    prefix = database["database_schema_prefix"]
    store = Store(settings(data_dir, database))
    try:
        store_stats.drop_schemas(store, prefix)
    finally:
        store.close()


if __name__ == "__main__":
    main()
