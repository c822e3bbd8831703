"""Diagnosis cost with a flood of negative user signals (see docs/benchmarks.md).

One project: `--chats` root spans (`POST /chat`, each in its own session and trace) in an hour's window
plus as many in the hour before, and `--signals` thumbs-down user signals in the window, each in its
own trace and one of those sessions (so each is attributed through its session, the costlier path).
The diagnosis (`loopkit_core.diagnose.run`: every built-in diagnoser, the packet's impact) is timed
`--repeat` times in this process after the fill.

    python bench/user_signals.py --chats 100000 --signals 10000
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from loopkit_core.app import create_app
from loopkit_core.diagnose import DiagnoseRequest, run
from loopkit_core.model import Record, new_record_id
from loopkit_core.projects import create_project
from loopkit_core.settings import Settings
from loopkit_core.store.records import resource_rows, to_rows

HOUR_NS = 3600 * 10**9
MS = 10**6


def main() -> None:
    """Fill, diagnose, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=100_000)
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-bench-signals-"))
    app = create_app(Settings(data_dir=data_dir, writer_max_pending_rows=10_000_000))
    project_id = create_project(app.store.control, "bench")["project_id"]
    until = time.time_ns()
    started = time.perf_counter()
    batch: list[Record] = []
    futures = []

    def add(record: Record) -> None:
        batch.append(record)
        if len(batch) == 5000:
            futures.append(app.writer.submit(project_id, to_rows(batch, until), None, [], resource_rows(batch)))
            batch.clear()

    for i in range(2 * args.chats):
        # The first `chats` in the window, the next as many in the hour before it (the baseline).
        ts = until - HOUR_NS + (i % args.chats) * HOUR_NS // args.chats - (HOUR_NS if i >= args.chats else 0)
        session = f"sess-{i}"
        add(
            Record(new_record_id(ts), ts, ts + 300 * MS, "span", "POST /chat", "agent", "ok", "",
                   trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), session_id=session)
        )  # fmt: skip
        if (
            i < args.chats
            and i % max(args.chats // args.signals, 1) == 0
            and i // max(args.chats // args.signals, 1) < args.signals
        ):
            add(
                Record(new_record_id(ts), ts + 10**9, ts + 10**9 + MS, "user_signal", "feedback", "agent", "unset", "",
                       trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), session_id=session,
                       attributes={"feedback": "thumbs_down"})
            )  # fmt: skip
    if batch:
        futures.append(app.writer.submit(project_id, to_rows(batch, until), None, [], resource_rows(batch)))
    for future in futures:
        future.result()
    filled = time.perf_counter() - started
    runs = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        packet = run(app.store, app.plugins, project_id, DiagnoseRequest(60, until, None, 3, 20), until)
        runs.append(round(time.perf_counter() - t, 3))
    app.close()
    print(
        json.dumps(
            {
                "chats_in_window": args.chats,
                "signals": args.signals,
                "fill_seconds": round(filled, 1),
                "median_seconds": statistics.median(runs),
                "runs": runs,
                "impact": packet["impact"],
                "issues": [(i["diagnoser"], i["count"]) for i in packet["issues"]],
                "diagnoser_errors": packet["diagnoser_errors"],
            }
        )
    )


if __name__ == "__main__":
    main()
