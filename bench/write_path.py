"""Per-stage cost of LoopKit's ingest path in one process, without HTTP or threads.

Where do a span's microseconds go? The same pre-built batches as bench/ingest.py (bench/payloads.py)
go through LoopKit's own functions, one stage at a time, on one thread:

- decode: `otlp_proto.parse_request` + `otlp_proto.decode` (protobuf), `orjson.loads` +
  `otlp_json.decode` (OTLP/JSON), `orjson.loads` + `records_shape.decode` (records shape);
- `store.records.to_rows`;
- the insert, several ways (see `insert_stage`), each into its own fresh project database made by
  LoopKit's `Store` (same schema, indexes and PRAGMAs, `synchronous` as configured), optionally
  holding `--prefill` older records first.

Usage: `python bench/write_path.py --spans 50000 [--repeat 3] [--prefill 900000]` prints JSON with
microseconds per span for each stage (median over the repeats). It is an in-process breakdown, not a throughput
number: the server adds HTTP/gRPC, threads and the GIL on top.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import payloads

from loopkit_core.model import record_id_for_span
from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.records import resource_rows, to_rows
from loopkit_core.store.schema import RECORD_COLUMNS
from loopkit_receivers import otlp_json, otlp_proto, records_shape

PROJECT = "bench-write-path"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def decode_stage(data: payloads.Payloads, now: int) -> tuple[dict[str, float], list[list[Any]]]:
    """Seconds per decoder over all batches, and the protobuf-decoded records per batch.

    The JSON decoders run first, while nothing else is alive, as in the server.
    """
    seconds = {"decode_json": 0.0, "decode_records": 0.0, "decode_proto": 0.0}
    for body in data.batches["json"]:
        seconds["decode_json"] += _timed(lambda b=body: otlp_json.decode(orjson.loads(b), PROJECT, now))[1]
    for body in data.batches["records"]:
        seconds["decode_records"] += _timed(lambda b=body: records_shape.decode(orjson.loads(b), PROJECT, now))[1]
    decoded: list[list[Any]] = []
    for body in data.batches["proto"]:
        out, spent = _timed(lambda b=body: otlp_proto.decode(otlp_proto.parse_request(b), PROJECT, now))
        seconds["decode_proto"] += spent
        decoded.append(out.records)
    return seconds, decoded


INSERT_VARIANTS = (
    "loopkit",
    "loopkit_commit_every_4",
    "previous_ids_and_resources",
    "without_trace_session_indexes",
    "unique_index_only",
)
TRACE_ID, SPAN_ID, TS_NS, END_NS = (RECORD_COLUMNS.index(c) for c in ("trace_id", "span_id", "ts_ns", "end_ns"))
RECORD_ID, RESOURCE, RESOURCE_KEY = (RECORD_COLUMNS.index(c) for c in ("record_id", "resource", "resource_key"))
Batch = tuple[list[tuple[Any, ...]], list[tuple[str, str]]]  # rows, and their resources (key, JSON)


def disk_write_bytes() -> int:
    """Bytes this process has sent to the storage layer (/proc/self/io write_bytes)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def insert_stage(store: Store, name: str, batches: list[Batch], prefill: int) -> dict[str, float]:
    """Seconds spent inserting (execute) and committing every batch, after `prefill` older rows.

    - `loopkit`: the statements of LoopKit's writer (`insert_resources`, `insert_rows`) as the same driver
      SQL, one transaction per batch;
    - `loopkit_commit_every_4`: one transaction per 4 batches (the server's writer groups the requests
      that wait for it into one commit);
    - `previous_ids_and_resources`: the rows as LoopKit wrote them before schema version 2: record IDs
      a hash only (random order), each row holding its resource JSON, a plain trace_id index instead of
      the unique (trace_id, span_id);
    - `without_trace_session_indexes`: after dropping the two indexes whose keys arrive in random order
      ((trace_id, span_id), which also deduplicates spans, and session_id);
    - `unique_index_only`: into a copy of the table with only the record_id unique index, to show what
      the secondary indexes cost.

    The prefill (untimed, commits of 4,096 rows) is the same rows again, each round with new trace IDs
    and earlier timestamps, so the timed rows land in a store that already holds `prefill` records,
    as in a long-running server. `disk_bytes` is what reached the storage layer meanwhile (WAL frames
    and checkpoints).
    """
    engine = store.project(f"{PROJECT}-{name.replace('_', '-')}")
    raw = engine.raw_connection()  # LoopKit's PRAGMAs applied
    try:
        table = _prepare(raw, name)
        previous = name == "previous_ids_and_resources"
        rounds = -(-prefill // max(sum(len(rows) for rows, _ in batches), 1))
        for r in range(1, rounds + 1):
            older = [_restamp(b, r, previous) for b in batches]
            for i in range(0, len(older), 8):
                for rows, resources in older[i : i + 8]:
                    _execute(raw, table, rows, resources)
                raw.commit()
        timed = [_restamp(b, 0, previous) for b in batches]
        gc.collect()
        written = disk_write_bytes()
        execute = commit = 0.0
        every = 4 if name == "loopkit_commit_every_4" else 1
        for i, (rows, resources) in enumerate(timed, start=1):
            execute += _timed(lambda r=rows, res=resources: _execute(raw, table, r, res))[1]
            if i % every == 0 or i == len(timed):
                commit += _timed(raw.commit)[1]
    finally:
        raw.close()
    return {"execute": execute, "commit": commit, "disk_bytes": float(disk_write_bytes() - written)}


def _prepare(raw: Any, name: str) -> str:
    """Change the fresh project database for a variant; the table to insert into."""
    if name == "unique_index_only":
        raw.execute("CREATE TABLE records_unique_only AS SELECT * FROM records WHERE 0")
        raw.execute("CREATE UNIQUE INDEX ux_records_unique_only ON records_unique_only (record_id)")
        raw.commit()
        return "records_unique_only"
    if name in ("without_trace_session_indexes", "previous_ids_and_resources"):
        # SQLite's trace index is ix_records_trace_run since migration 11; ux_records_span before it.
        raw.execute("DROP INDEX IF EXISTS ux_records_span")
        raw.execute("DROP INDEX IF EXISTS ix_records_trace_run")
    if name == "without_trace_session_indexes":
        raw.execute("DROP INDEX ix_records_session")
    if name == "previous_ids_and_resources":
        raw.execute("CREATE INDEX ix_records_trace ON records (trace_id)")
    raw.commit()
    return "records"


def _execute(raw: Any, table: str, rows: list[tuple[Any, ...]], resources: list[tuple[str, str]]) -> None:
    """The statements LoopKit's writer runs for one request (driver SQL, as insert_rows compiles it)."""
    cur = raw.cursor()
    if resources:
        cur.executemany("INSERT INTO resources (resource_key, body) VALUES (?, ?) ON CONFLICT DO NOTHING", resources)
    columns = ", ".join(RECORD_COLUMNS)
    marks = ", ".join("?" for _ in RECORD_COLUMNS)
    cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
    cur.close()


def _restamp(batch: Batch, rnd: int, previous: bool) -> Batch:
    """Round `rnd` of a batch: new trace IDs, timestamps `rnd` hours earlier; or the previous row format."""
    rows, resources = batch
    if rnd == 0 and not previous:
        return batch
    shift = rnd * 3600 * 10**9
    bodies = dict(resources)
    out = []
    for row in rows:
        row = list(row)
        if row[TRACE_ID]:
            row[TRACE_ID] = f"{rnd:04x}{row[TRACE_ID][4:]}"
        row[TS_NS] -= shift
        row[END_NS] -= shift
        if previous:  # the previous scheme: a hash-only ID, the resource JSON in the row
            key = f"{PROJECT}/{row[TRACE_ID]}/{row[SPAN_ID]}".encode()
            row[RECORD_ID] = "rec_" + hashlib.blake2b(key, digest_size=12).hexdigest()
            row[RESOURCE], row[RESOURCE_KEY] = bodies[row[RESOURCE_KEY]], None
        elif row[TRACE_ID] and row[SPAN_ID]:
            row[RECORD_ID] = record_id_for_span(PROJECT, row[TRACE_ID], row[SPAN_ID], row[TS_NS])
        else:
            row[RECORD_ID] = f"{row[RECORD_ID][:-4]}{rnd:04x}"
        out.append(tuple(row))
    return out, [] if previous else resources


def one_pass(data: payloads.Payloads, synchronous: str, prefill: int) -> dict[str, float]:
    """Seconds per stage for every batch, on fresh databases (holding `prefill` older records)."""
    now = time.time_ns()
    seconds, decoded = decode_stage(data, now)
    batches: list[Batch] = []
    spent = 0.0
    for records in decoded:
        out, t = _timed(lambda r=records: to_rows(r, now))
        spent += t
        batches.append((out, resource_rows(records)))
    seconds["to_rows"] = spent
    del decoded
    # The server keeps little alive; here every row of the run is, so keep the collector off them.
    gc.collect()
    gc.freeze()
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-write-path-"))
    store = Store(Settings(data_dir=data_dir, sqlite_synchronous=synchronous))
    try:
        for name in INSERT_VARIANTS:
            for part, value in insert_stage(store, name, batches, prefill).items():
                seconds[f"insert_{name}_{part}"] = value
    finally:
        store.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        gc.unfreeze()
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the stages --repeat times and print microseconds per span (medians)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", type=int, default=50_000)
    p.add_argument("--batch-spans", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--synchronous", default="FULL", help="SQLite synchronous for the inserts (LoopKit's default FULL)")
    p.add_argument("--prefill", type=int, default=0, help="older records stored before the timed inserts")
    args = p.parse_args(argv)
    if args.spans < 1 or args.batch_spans < 1 or not 1 <= args.repeat <= 20:
        p.error("--spans and --batch-spans must be at least 1, --repeat 1..20")
    data = payloads.build(args.spans, args.batch_spans, payloads.FORMATS)
    passes = []
    for i in range(args.repeat):
        passes.append(one_pass(data, args.synchronous, args.prefill))
        print(f"pass {i + 1}/{args.repeat} done", file=sys.stderr, flush=True)
        gc.collect()
    times = [k for k in passes[0] if not k.endswith("_disk_bytes")]
    us = {k: round(statistics.median(p[k] for p in passes) / data.spans * 1e6, 2) for k in times}
    for name in INSERT_VARIANTS:
        us[f"insert_{name}_total"] = round(us[f"insert_{name}_execute"] + us[f"insert_{name}_commit"], 2)
    disk_kb = {
        name: round(statistics.median(p[f"insert_{name}_disk_bytes"] for p in passes) / data.spans / 1024, 2)
        for name in INSERT_VARIANTS
    }
    print(
        json.dumps(
            {
                "benchmark": "write_path",
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "spans": data.spans,
                "batch_spans": args.batch_spans,
                "repeat": args.repeat,
                "synchronous": args.synchronous,
                "prefill": args.prefill,
                "microseconds_per_span": us,
                "disk_write_kb_per_span": disk_kb,
                "payload_bytes_per_span": {f: round(data.total_bytes(f) / data.spans) for f in payloads.FORMATS},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
