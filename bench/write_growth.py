"""How the cost of a write follows the size of the store, in one process, through LoopKit's Writer.

The 50,000 realistic spans of `bench/payloads.py` are decoded once by the OTLP protobuf receiver and turned into
rows; then round after round they are written again with new trace IDs (and so new record IDs), their start times
spread over the 10 s before the round's time (`--spread`), which advances as at 20,000 spans a second (`--rate`),
512 rows a request, `--in-flight` requests (default 64) waiting at once, through the same `Writer` the server
uses (its default settings: `synchronous=FULL`, one commit per group of waiting requests). Each `--slice` rows
the wall time and this process's CPU time spent writing are reported (re-stamping the rows between rounds is not
counted). `--setting NAME=VALUE` (repeatable) overrides a setting of the store, to compare storage settings in
one sitting. `--history N` first writes N rows of the same payload, untimed, into the day before (its own day
table), so that the timed rows go into a store that already holds that much history; the report counts each day
table's rows. `--wal-frames N` then checkpoints the write-ahead log empty, writes N more rows the same way, and
reports the log's frames per commit and per row by table and index (`wal_frames.py`): which pages each commit
rewrote (refused when a checkpoint restarts the log within the sample: ask for fewer rows).

Usage: `python bench/write_growth.py --records 6000000 --slice 500000` prints JSON; `cpu_last_vs_first` is the
last slice's CPU per row over the first's (1.0 is flat).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import payloads  # noqa: E402
import wal_frames  # noqa: E402

from loopkit_core.model import DAY_NS, record_id_for_span  # noqa: E402
from loopkit_core.settings import Settings  # noqa: E402
from loopkit_core.store import day_tables  # noqa: E402
from loopkit_core.store.engines import Store  # noqa: E402
from loopkit_core.store.records import resource_rows, to_rows  # noqa: E402
from loopkit_core.store.schema import RECORD_COLUMNS  # noqa: E402
from loopkit_core.store.writer import Writer  # noqa: E402
from loopkit_receivers import otlp_proto  # noqa: E402

PROJECT = "bench-growth"
TRACE_ID, SPAN_ID, TS_NS, END_NS, RECORD_ID = (
    RECORD_COLUMNS.index(c) for c in ("trace_id", "span_id", "ts_ns", "end_ns", "record_id")
)


def template(spans: int, now: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """The payload's spans as rows (and their resources), decoded by the protobuf receiver."""
    data = payloads.build(spans, 512, ["proto"])
    rows: list[tuple[Any, ...]] = []
    resources: dict[str, str] = {}
    for body in data.batches["proto"]:
        records = otlp_proto.decode(otlp_proto.parse_request(body), PROJECT, now).records
        rows += to_rows(records, now)
        resources.update(resource_rows(records))
    return rows, sorted(resources.items())


def restamp(
    rows: list[tuple[Any, ...]], rnd: int, base_ns: int, spread_ns: int, step_ns: int, trace_ids: str = "random"
) -> list[tuple[Any, ...]]:
    """Round `rnd`: new trace IDs and record IDs; start times spread over the `spread_ns` before the round's time.

    Trace IDs as `payloads.round_trace_id` makes them (`trace_ids`: random, or stamped with the round: before
    2026-12-06 this tool put the round in the first 3 bytes, which kept the trace index's inserts side by side).

    A round's time is `rnd * step_ns` after `base_ns` (its rows at the rate they would arrive), and each row keeps
    its place in the payload's own time order, squeezed into the spread: as exporters' batches interleave.
    """
    first = min(row[TS_NS] for row in rows)
    width = max(max(row[TS_NS] for row in rows) - first, 1)
    end = base_ns + rnd * step_ns
    out = []
    renamed: dict[str, str] = {}
    for row in rows:
        row = list(row)
        ts = end - spread_ns + (row[TS_NS] - first) * spread_ns // width
        row[END_NS] += ts - row[TS_NS]
        row[TS_NS] = ts
        if row[TRACE_ID]:
            trace = row[TRACE_ID]
            if trace not in renamed:
                renamed[trace] = payloads.round_trace_id(trace, rnd, trace_ids)
            row[TRACE_ID] = renamed[trace]
            row[RECORD_ID] = record_id_for_span(PROJECT, row[TRACE_ID], row[SPAN_ID], row[TS_NS])
        else:
            row[RECORD_ID] = f"{row[RECORD_ID][:-6]}{rnd:06x}"
        out.append(tuple(row))
    return out


def write(writer: Writer, batch: list[tuple[Any, ...]], resources: list, in_flight: int) -> None:
    """Submit `batch` in 512-row requests with at most `in_flight` waiting, and wait for every commit."""
    pending: deque[Future] = deque()
    for start in range(0, len(batch), 512):
        if len(pending) >= in_flight:
            pending.popleft().result(timeout=600)
        pending.append(writer.submit(PROJECT, batch[start : start + 512], resources=resources))
    while pending:
        pending.popleft().result(timeout=600)


def wal_sample(store: Store, writer: Writer, batch: list[tuple[Any, ...]], args: argparse.Namespace) -> dict[str, Any]:
    """The log frames that `args.wal_frames` more rows of `batch` write, from an empty log: per commit and per row."""
    sample = batch[: args.wal_frames]
    engine = store.project(PROJECT)
    with engine.connect() as conn:  # the writer is idle: nothing holds the log
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db = Path(engine.url.database)
    write(writer, sample[:512], [], args.in_flight)
    first = wal_frames.cycle(db)
    write(writer, sample[512:], [], args.in_flight)
    if wal_frames.cycle(db) != first:  # a checkpoint restarted the log: only its last cycle would be counted
        raise SystemExit(f"--wal-frames {args.wal_frames}: the sample crossed a checkpoint; ask for fewer rows")
    report = wal_frames.frames_by_btree(db)
    report["rows"] = len(sample)
    report["rows_per_commit"] = round(len(sample) / max(report["commits"], 1), 1)
    report["frames_per_row"] = round(report["frames"] / len(sample), 3)
    return report


def day_table_rows(store: Store) -> dict[str, int]:
    """The rows of each day table of the project (where the history and the timed rows went)."""
    with store.project(PROJECT).connect() as conn:
        dbapi = conn.connection.dbapi_connection
        counts = day_tables.record_counts(dbapi)
        del counts[day_tables.BASE]
        return counts


def run(rows: list, resources: list, args: argparse.Namespace, base_ns: int) -> dict[str, Any]:
    """Write `args.records` rows into a fresh store; cost per slice."""
    total, slice_rows = args.records, args.slice
    spread_ns, step_ns = int(args.spread * 1e9), int(len(rows) / args.rate * 1e9)
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-write-growth-"))
    overrides = dict(item.split("=", 1) for item in args.setting)
    store = Store(Settings.from_env({}, data_dir=data_dir, retention_days="0", **overrides))
    writer = Writer(store, threads=1, max_pending_rows=10**7)
    slices: list[dict[str, float]] = []
    frames: dict[str, Any] | None = None
    wall = cpu = 0.0
    written = in_slice = 0
    rnd = 0
    try:
        store.project(PROJECT)
        history = 0
        while history < args.history:  # untimed, into the day before the measured rows' day
            batch = restamp(rows, rnd, base_ns - DAY_NS, spread_ns, step_ns, args.trace_ids)[: args.history - history]
            rnd += 1
            write(writer, batch, resources, args.in_flight)
            history += len(batch)
        while written < total:
            batch = restamp(rows, rnd, base_ns, spread_ns, step_ns, args.trace_ids)
            rnd += 1
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            write(writer, batch, resources, args.in_flight)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            written += len(batch)
            in_slice += len(batch)
            if in_slice >= slice_rows or written >= total:
                size = sum(p.stat().st_size for p in (data_dir / "projects").iterdir())
                slices.append(
                    {
                        "records": written,
                        "wall_us_per_row": round(wall / in_slice * 1e6, 2),
                        "cpu_us_per_row": round(cpu / in_slice * 1e6, 2),
                        "disk_mb": round(size / 2**20, 1),
                    }
                )
                print(f"{slices[-1]}", file=sys.stderr, flush=True)
                wall = cpu = 0.0
                in_slice = 0
        if args.wal_frames:  # before the close, which checkpoints the log away
            frames = wal_sample(store, writer, restamp(rows, rnd, base_ns, spread_ns, step_ns, args.trace_ids), args)
        tables = day_table_rows(store)
    finally:
        writer.close(timeout=600)
        store.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    first, last = slices[0], slices[-1]
    return {
        "settings": overrides,
        "trace_ids": args.trace_ids,
        "history_records": args.history,
        "day_tables": tables,
        "slices": slices,
        **({"wal_frames": frames} if frames is not None else {}),
        "cpu_last_vs_first": round(last["cpu_us_per_row"] / first["cpu_us_per_row"], 3),
        "wall_last_vs_first": round(last["wall_us_per_row"] / first["wall_us_per_row"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=6_000_000)
    p.add_argument("--slice", type=int, default=500_000)
    p.add_argument("--spans", type=int, default=50_000, help="distinct spans in the payload, re-sent each round")
    p.add_argument("--spread", type=float, default=10.0, help="seconds over which a round's start times spread")
    p.add_argument("--rate", type=float, default=20_000, help="spans a second the rounds' times advance at")
    p.add_argument(
        "--trace-ids",
        choices=payloads.TRACE_ID_MODES,
        default="random",
        help="each round's trace IDs: random (as exporters make them) or stamped with the round",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        default=64,
        help="512-row requests waiting for the writer at once: a commit takes at most this many (a server's are"
        " bounded by its exporters' requests in flight, e.g. 8 senders: 4,096 rows)",
    )
    p.add_argument(
        "--history", type=int, default=0, metavar="N", help="first write N rows, untimed, into the day before"
    )
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="a store setting to override")
    p.add_argument(
        "--wal-frames",
        type=int,
        default=0,
        metavar="N",
        help="then empty the log, write N more rows and report its frames per commit and per row by table and index",
    )
    args = p.parse_args(argv)
    if args.history < 0:
        p.error("--history must not be negative")
    if args.in_flight < 1:
        p.error("--in-flight must be at least 1")
    if not 0 <= args.wal_frames <= args.spans:
        p.error("--wal-frames: from 0 to --spans rows (one round of the payload)")
    now = time.time_ns()
    # Noon UTC of today: the rounds stay within one day (6M records at 20,000/s take 5 minutes of record time).
    base_ns = int(datetime.fromtimestamp(now / 1e9, UTC).replace(hour=12, minute=0, second=0).timestamp()) * 10**9
    rows, resources = template(args.spans, now)
    results = [run(rows, resources, args, base_ns)]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(
        json.dumps(
            {"benchmark": "write-growth", "records": args.records, "load_average_end": load, "runs": results}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
