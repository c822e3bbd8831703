"""Per-stage cost of LoopKit's ingest path in one process, without HTTP or threads.

Where do a span's microseconds go? The same pre-built batches as bench/ingest.py (bench/payloads.py)
go through LoopKit's own functions, one stage at a time, on one thread:

- decode: `otlp_proto.parse_request` + `otlp_proto.decode` (protobuf), `orjson.loads` +
  `otlp_json.decode` (OTLP/JSON), `orjson.loads` + `records_shape.decode` (records shape);
- `store.records.to_rows`;
- the insert, several ways (see `insert_stage`), each into its own fresh project database made by
  LoopKit's `Store` (same schema, indexes and PRAGMAs, `synchronous` as configured).

Usage: `python bench/write_path.py --spans 50000 [--repeat 3]` prints JSON with microseconds per
span for each stage (median over the repeats). It is an in-process breakdown, not a throughput
number: the server adds HTTP/gRPC, threads and the GIL on top.
"""

from __future__ import annotations

import argparse
import gc
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

from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.records import insert_rows, to_rows
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
    "sqlalchemy",
    "dbapi",
    "dbapi_commit_every_4",
    "dbapi_without_trace_session_indexes",
    "dbapi_unique_index_only",
)


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


def insert_stage(store: Store, name: str, batches: list[list[dict[str, Any]]]) -> dict[str, float]:
    """Seconds spent inserting (execute) and committing every batch.

    - `sqlalchemy`: LoopKit's `insert_rows`, one transaction per batch;
    - `dbapi`: the same rows as tuples through the DB-API cursor (tuple conversion included);
    - `dbapi_commit_every_4`: as `dbapi`, one transaction per 4 batches (the server's writer groups
      the requests that wait for it into one commit);
    - `dbapi_without_trace_session_indexes`: as `dbapi`, after dropping the two indexes whose keys
      arrive in random order ((trace_id, span_id), which also deduplicates spans, and session_id);
    - `dbapi_unique_index_only`: as `dbapi`, into a copy of the table with only the record_id
      unique index (what deduplication needs), to show what the secondary indexes cost.

    `disk_bytes` is what reached the storage layer meanwhile (WAL frames and checkpoints).
    """
    written = disk_write_bytes()
    result = _insert(store, name, batches)
    result["disk_bytes"] = float(disk_write_bytes() - written)
    return result


def _insert(store: Store, name: str, batches: list[list[dict[str, Any]]]) -> dict[str, float]:
    engine = store.project(f"{PROJECT}-{name.replace('_', '-')}")
    execute = commit = 0.0
    if name == "sqlalchemy":
        for rows in batches:
            with engine.connect() as conn:
                execute += _timed(lambda c=conn, r=rows: insert_rows(c, r))[1]
                commit += _timed(conn.commit)[1]
        return {"execute": execute, "commit": commit}
    columns = RECORD_COLUMNS
    table = "records"
    raw = engine.raw_connection()  # LoopKit's PRAGMAs applied
    try:
        if name == "dbapi_unique_index_only":
            table = "records_unique_only"
            raw.execute(f"CREATE TABLE {table} AS SELECT * FROM records WHERE 0")
            raw.execute(f"CREATE UNIQUE INDEX ux_{table} ON {table} (record_id)")
            raw.commit()
        if name == "dbapi_without_trace_session_indexes":
            raw.execute("DROP INDEX ux_records_span")
            raw.execute("DROP INDEX ix_records_session")
            raw.commit()
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
            "ON CONFLICT(record_id) DO NOTHING"
        )
        every = 4 if name == "dbapi_commit_every_4" else 1
        for i, rows in enumerate(batches, start=1):

            def run(r: list[tuple[Any, ...]] = rows) -> None:
                cur = raw.cursor()
                cur.executemany(sql, r)
                cur.close()

            execute += _timed(run)[1]
            if i % every == 0 or i == len(batches):
                commit += _timed(raw.commit)[1]
    finally:
        raw.close()
    return {"execute": execute, "commit": commit}


def one_pass(data: payloads.Payloads, synchronous: str) -> dict[str, float]:
    """Seconds per stage for every batch, on fresh databases."""
    now = time.time_ns()
    seconds, decoded = decode_stage(data, now)
    rows: list[list[dict[str, Any]]] = []
    spent = 0.0
    for records in decoded:
        out, t = _timed(lambda r=records: to_rows(r, now))
        spent += t
        rows.append(out)
    seconds["to_rows"] = spent
    del decoded
    # The server keeps little alive; here every row of the run is, so keep the collector off them.
    gc.collect()
    gc.freeze()
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-write-path-"))
    store = Store(Settings(data_dir=data_dir, sqlite_synchronous=synchronous))
    try:
        for name in INSERT_VARIANTS:
            for part, value in insert_stage(store, name, rows).items():
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
    args = p.parse_args(argv)
    if args.spans < 1 or args.batch_spans < 1 or not 1 <= args.repeat <= 20:
        p.error("--spans and --batch-spans must be at least 1, --repeat 1..20")
    data = payloads.build(args.spans, args.batch_spans, payloads.FORMATS)
    passes = []
    for i in range(args.repeat):
        passes.append(one_pass(data, args.synchronous))
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
