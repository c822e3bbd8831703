"""What a crash costs at the next start on SQLite: reopening a project whose write-ahead log is full.

A child process writes the realistic spans of `bench/payloads.py` (as `bench/write_growth.py` does: new trace IDs
each round) through LoopKit's `Writer` with default settings until the project's `-wal` file holds `--wal-mb`, and
is then killed with SIGKILL: nothing is checkpointed on the way out. This process then opens the store as a
restarted server would (`Store`, `store.project`, which migrates and so reads the database) and counts the
records; SQLite replays the log while opening. The log is still in the OS page cache, as after a process crash
(after a power loss it would come from the disk).

Usage: `python bench/wal_replay.py --wal-mb 190` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

PROJECT = "bench-growth"  # write_growth's project: its record IDs are derived from it


def child(data_dir: Path, wal_mb: float, spans: int) -> None:
    """Write until the log holds `wal_mb`, say so on stdout, then wait to be killed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import write_growth

    from loopkit_core.settings import Settings
    from loopkit_core.store.engines import Store
    from loopkit_core.store.writer import Writer

    now = time.time_ns()
    rows, resources = write_growth.template(spans, now)
    store = Store(Settings.from_env({}, data_dir=data_dir, retention_days="0"))
    writer = Writer(store, threads=1)
    wal = data_dir / "projects" / f"{PROJECT}.db-wal"
    written, rnd = 0, 0
    while True:
        batch = write_growth.restamp(rows, rnd, now, 10**10, 2_500_000_000)
        rnd += 1
        for start in range(0, len(batch), 512):
            written += writer.submit(PROJECT, batch[start : start + 512], resources=resources).result(60).inserted
            if wal.exists() and wal.stat().st_size >= wal_mb * 2**20:
                print(written, flush=True)
                time.sleep(600)


def main(argv: list[str] | None = None) -> int:
    """Fill the log in a child, kill it, time the reopen; print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wal-mb", type=float, default=190.0)
    p.add_argument("--spans", type=int, default=50_000, help="distinct spans in the payload, re-sent each round")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.child, args.wal_mb, args.spans)
        return 0
    from loopkit_core.settings import Settings
    from loopkit_core.store.engines import Store
    from loopkit_core.store.schema import records

    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-wal-replay-"))
    command = [sys.executable, __file__, "--wal-mb", str(args.wal_mb), "--spans", str(args.spans)]
    proc = subprocess.Popen([*command, "--child", str(data_dir)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the child exits (EOF) if a write fails: its writes time out after 60 s
        if not line:
            raise RuntimeError(f"the writing child exited early with status {proc.wait(timeout=30)}")
        acknowledged = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        base = data_dir / "projects" / f"{PROJECT}.db"
        sizes = {
            "wal_mb": round(base.with_name(base.name + "-wal").stat().st_size / 2**20, 1),
            "db_mb": round(base.stat().st_size / 2**20, 1),
        }
        t0 = time.perf_counter()
        store = Store(Settings.from_env({}, data_dir=data_dir, retention_days="0"))
        with store.project(PROJECT).connect() as conn:
            opened = time.perf_counter() - t0
            stored = conn.execute(select(func.count()).select_from(records)).scalar()
        total = time.perf_counter() - t0
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
    report = {
        "benchmark": "wal-replay",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "acknowledged_records": acknowledged,
        "stored_records": stored,
        **sizes,
        "open_s": round(opened, 3),
        "open_and_count_s": round(total, 3),
    }
    print(json.dumps(report, indent=2))
    return 0 if stored >= acknowledged else 1


if __name__ == "__main__":
    raise SystemExit(main())
