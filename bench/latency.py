"""Cost of the latency outlier detector on a large window (see docs/benchmarks.md, "Diagnosis cost").

Builds one project store with LoopKit's own schema (`Store`): a one-hour window of N records over
K operations (routes in 20 services, lognormal durations with per-route medians of 5-500 ms and
sigma 0.3-0.9, 1% of calls 5-20x slower) and B window-lengths of history before it at the same
rate, which is the detector's baseline; R busier-than-average operations are 2.5x slower in the window. Rows are
bulk-loaded with sqlite3 and the indexes built afterwards (building the fixture is not what is
measured). Then, in a fresh process each time, `loopkit_plugins.latency_outliers.diagnose` runs
over the window through the project's engine as the server opens it (same PRAGMAs), and the
process reports the wall time of the call, its peak RSS and how much the call added to it.

Usage (JSON on stdout, progress on stderr):

    python bench/latency.py --window-records 1000000 --operations 200 --repeat 3
    python bench/latency.py --window-records 100000 --keep /tmp/lat-100k   # reuse the store next time
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine

from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.schema import RECORD_COLUMNS, records

PROJECT = "bench-latency"
HOUR_NS = 3600 * 10**9
END_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
FACTOR = 2.5


def build(data_dir: Path, window_records: int, operations: int, baseline_windows: int, regressed: int) -> list[str]:
    """Write the fixture store; return the names of the regressed operations."""
    store = Store(Settings(data_dir=data_dir))
    store.project(PROJECT)
    store.close()
    path = data_dir / "projects" / f"{PROJECT}.db"
    rnd = random.Random(1)
    ops = []
    for i in range(operations):
        ops.append((f"GET /api/v1/route{i}", f"svc-{i % 20}", math.exp(rnd.uniform(math.log(5), math.log(500)))))
    sigmas = [rnd.uniform(0.3, 0.9) for _ in ops]
    weights = [rnd.uniform(0.2, 1.8) for _ in ops]
    cumulative = [sum(weights[: i + 1]) / sum(weights) for i in range(len(weights))]
    # Regress busier-than-average operations, so that small windows still give them enough calls to judge.
    slow = set(rnd.sample([i for i in range(operations) if weights[i] >= 1.0], regressed))
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    # Bulk load without the indexes, then build them (much faster than maintaining them row by row).
    for index in records.indexes:
        con.execute(f"DROP INDEX IF EXISTS {index.name}")
    sql = f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
    total = window_records * (1 + baseline_windows)
    start_ns = END_NS - (1 + baseline_windows) * HOUR_NS
    window_start = END_NS - HOUR_NS
    step = (END_NS - start_ns) / total
    batch: list[tuple[Any, ...]] = []
    for k in range(total):
        ts = start_ns + int(k * step)
        i = min(bisect.bisect_left(cumulative, rnd.random()), operations - 1)
        name, service, median_ms = ops[i]
        ms = median_ms * math.exp(rnd.gauss(0, sigmas[i]))
        if rnd.random() < 0.01:
            ms *= rnd.uniform(5, 20)
        if ts >= window_start and i in slow:
            ms *= FACTOR
        duration_ns = int(ms * 1e6)
        attributes = {"http.route": name[4:], "http.request.method": "GET", "http.response.status_code": 200}
        resource_json = f'{{"service.name":"{service}","service.version":"1.4.2"}}'
        batch.append(
            (
                f"rec_{rnd.getrandbits(96):024x}",
                ts,
                ts + duration_ns,
                duration_ns / 1e6,
                ts,
                "span",
                name,
                service,
                "ok",
                "",
                f"{rnd.getrandbits(128):032x}",
                f"{rnd.getrandbits(64):016x}",
                None,
                None,
                None,
                "server",
                "bench",
                None,
                orjson.dumps(attributes).decode(),
                resource_json,
                "[]",
                "[]",
                None,
                None,  # resource_key: the resource is inline, as in rows stored before `resources`
                None,  # session_repeat
                None,  # trace_run
            )
        )
        if len(batch) == 100_000:
            con.executemany(sql, batch)
            batch = []
            print(f"built {k + 1}/{total}", file=sys.stderr, flush=True)
    con.executemany(sql, batch)
    con.commit()
    con.close()
    engine = create_engine(f"sqlite:///{path}")
    for index in records.indexes:
        index.create(engine)
    engine.dispose()
    return sorted(ops[i][0] for i in slow)


def measure(data_dir: Path) -> dict[str, Any]:
    """In this process: diagnose the window once, timed; peak RSS of the process."""
    from loopkit_core.window import Window
    from loopkit_plugins import latency_outliers

    store = Store(Settings(data_dir=data_dir))
    window = Window(PROJECT, END_NS - HOUR_NS, END_NS, store.project(PROJECT))
    rss_before = _rss_mb()  # after imports and engine setup
    started = time.perf_counter()
    issues = latency_outliers.diagnose(window=window, options={"min_count": 3, "max_issues": 20})
    seconds = time.perf_counter() - started
    store.close()
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(rss_before, 1),
        "found": sorted(i.selector["name"] for i in issues),
        "counts": {i.selector["name"]: i.count for i in issues},
    }


def _rss_mb() -> float:
    """The current resident set size of this process (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-records", type=int, default=1_000_000)
    parser.add_argument("--operations", type=int, default=200)
    parser.add_argument("--baseline-windows", type=int, default=6)
    parser.add_argument("--regressed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="store directory to reuse (built there if missing)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="loopkit-bench-latency-"))
    meta_path = data_dir / "bench-latency.json"
    started = time.perf_counter()
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        regressed = build(data_dir, args.window_records, args.operations, args.baseline_windows, args.regressed)
        meta = {
            "window_records": args.window_records,
            "baseline_records": args.window_records * args.baseline_windows,
            "operations": args.operations,
            "regressed": regressed,
            "factor": FACTOR,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        meta_path.write_text(json.dumps(meta))
    try:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(data_dir)], check=True, capture_output=True, text=True
            )
            runs.append(json.loads(out.stdout))
            print(f"run: {runs[-1]['seconds']} s", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    result = {
        **meta,
        "runs_seconds": [r["seconds"] for r in runs],
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_rss_growth_mb": max(round(r["peak_rss_mb"] - r["rss_before_mb"], 1) for r in runs),
        "found": runs[-1]["found"],
        "false_positives": sorted(set(runs[-1]["found"]) - set(meta["regressed"])),
        "missed": sorted(set(meta["regressed"]) - set(runs[-1]["found"])),
        "counts": runs[-1]["counts"],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
