"""The PostgreSQL insert path in one process: executemany vs COPY vs unnest, and the writer's whole commit.

The same pre-built batches as bench/ingest.py (bench/payloads.py, protobuf) are decoded and turned into rows
(`ingest.prepare`, so failures carry signatures) before any timing; then each variant inserts every batch into
its own fresh project schema made by LoopKit's `Store` (same tables and indexes), optionally holding
`--prefill` older records first:

- `executemany`: the driver executemany of `INSERT ... ON CONFLICT DO NOTHING` (psycopg pipelines it);
- `copy`: LoopKit's path (store/pg_copy.py `insert_copy`): COPY straight into the table inside a savepoint,
  and only on a unique violation undone and done as `staged`;
- `staged`: COPY into a temporary staging table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`
  (`insert_staged`);
- `unnest`: one `INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT DO NOTHING`;
- `copy_no_conflict`: COPY straight into the table, no deduplication: a floor, not an option;
- `insert_rows`: what the writer calls (store/records.py): on the partitioned layout, the lookup of re-sent
  copies (store/resends.py), then `copy`.

Each variant runs twice: `insert` (per batch: insert_resources, the insert, commit) and `writer` (LoopKit's
batching Writer, one shard, `--group` requests submitted together so one commit covers them, with its quota
counter and signature statements; the insert function swapped for the variant's); and `resend` (as `insert`,
but every batch is already stored: what a client re-sending everything costs, each row a conflict).

Reported per variant, in microseconds per span (median over --repeat): wall time, this process's CPU and the
CPU of the PostgreSQL backend serving the connection (from /proc; the WAL writer and checkpointer are not in
it). Usage:

    python bench/pg_write_path.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --spans 50000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any

import payloads
import psycopg

from loopkit_core import ingest
from loopkit_core.plugins import get_plugins
from loopkit_core.settings import Settings
from loopkit_core.store import pg_copy, records, writer
from loopkit_core.store.engines import Store
from loopkit_core.store.records import RECORD_COLUMNS, insert_resources
from loopkit_core.store.schema import records as records_table
from loopkit_receivers import otlp_proto

CLK_TCK = os.sysconf("SC_CLK_TCK")
KEYS = tuple(RECORD_COLUMNS)
ESCAPED = records._ESCAPED
Insert = Callable[[Any, list[tuple[Any, ...]]], int]


def _escaped(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    from loopkit_core.store.dialect import escape_nul_rows

    return escape_nul_rows(rows, ESCAPED)


def _executemany(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    from loopkit_core.store.dialect import insert_ignoring_sql

    sql = insert_ignoring_sql(conn, records_table, (), KEYS)
    return conn.exec_driver_sql(sql, _escaped(rows)).rowcount


def _copy(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    return pg_copy.insert_copy(conn, records_table, KEYS, _escaped(rows))


def _insert_rows(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    return records.insert_rows(conn, rows)  # LoopKit's whole insert: re-sent copies looked up, then COPY


def _staged(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    return pg_copy.insert_staged(conn, records_table, KEYS, _escaped(rows))


def _unnest(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    """One INSERT ... SELECT FROM unnest(one array parameter per column) ON CONFLICT DO NOTHING."""
    schema = conn.get_execution_options()["schema_translate_map"][None]
    types = [records_table.c[c].type.compile(dialect=conn.dialect) for c in KEYS]
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    sql = f'INSERT INTO "{schema}".records ({", ".join(KEYS)}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING'
    cur = conn.connection.driver_connection.cursor()
    cur.execute(sql, [list(values) for values in zip(*_escaped(rows), strict=True)])
    return cur.rowcount


def _copy_no_conflict(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    schema = conn.get_execution_options()["schema_translate_map"][None]
    cur = conn.connection.driver_connection.cursor()
    with cur.copy(f'COPY "{schema}".records ({", ".join(KEYS)}) FROM STDIN') as copy:
        for row in _escaped(rows):
            copy.write_row(row)
    return len(rows)


VARIANTS: dict[str, Insert] = {
    "executemany": _executemany,
    "copy": _copy,
    "insert_rows": _insert_rows,
    "staged": _staged,
    "unnest": _unnest,
    "copy_no_conflict": _copy_no_conflict,
}
Prepared = list[tuple[list[tuple[Any, ...]], list[dict[str, Any]], list[tuple[str, str]]]]


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc (0.0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu() -> float:
    """CPU seconds of every process named `postgres` (server, backends, WAL writer, checkpointer)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
                total += backend_cpu(int(entry.name))
    return total


def _restamp(batches: Prepared, rnd: int) -> Prepared:
    """Round `rnd` of the batches: new trace and record IDs, so they never collide with round 0."""
    trace, rid = RECORD_COLUMNS.index("trace_id"), RECORD_COLUMNS.index("record_id")
    out: Prepared = []
    for rows, sigs, res in batches:
        new = []
        for row in rows:
            row = list(row)
            if row[trace]:
                row[trace] = f"{rnd:04x}{row[trace][4:]}"
            row[rid] = f"{row[rid][:-4]}{rnd:04x}"
            new.append(tuple(row))
        out.append((new, sigs, res))
    return out


def run_variant(store: Store, name: str, mode: str, batches: Prepared, prefill: int, group: int) -> dict[str, float]:
    """Seconds (wall, client CPU, backend CPU, all postgres CPU) to insert every batch with one variant."""
    pid = f"bench-pg-{mode}-{name.replace('_', '-')}"
    engine = store.project(pid)
    insert = VARIANTS[name]
    spans = sum(len(rows) for rows, _, _ in batches)
    for r in range(1, -(-prefill // spans) + 1 if prefill else 1):
        for i in range(0, len(batches), 8):
            with engine.begin() as conn:
                for rows, _, res in _restamp(batches[i : i + 8], r):
                    insert_resources(conn, res)
                    _executemany(conn, rows)
    if mode == "resend":  # the timed batches are all stored already: every row conflicts
        for i in range(0, len(batches), 8):
            with engine.begin() as conn:
                for rows, _, res in batches[i : i + 8]:
                    insert_resources(conn, res)
                    _executemany(conn, rows)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'ANALYZE "{store.project_schema(pid)}".records')
        conn.commit()
    gc.collect()
    if mode in ("insert", "resend"):
        with engine.connect() as conn:
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            conn.commit()
            b0, p0, c0, t0 = backend_cpu(backend), postgres_cpu(), time.process_time(), time.perf_counter()
            inserted = 0
            for rows, _, res in batches:
                insert_resources(conn, res)
                inserted += insert(conn, rows)
                conn.commit()
            t1, c1, p1, b1 = time.perf_counter(), time.process_time(), postgres_cpu(), backend_cpu(backend)
    else:
        saved = writer.insert_rows
        writer.insert_rows = insert  # the writer's own commit path, with the variant's insert
        w = writer.Writer(store, threads=1, max_pending_rows=10**9)
        try:
            p0, c0, t0 = postgres_cpu(), time.process_time(), time.perf_counter()
            inserted = 0
            for i in range(0, len(batches), group):
                futures = [w.submit(pid, rows, None, sigs, res) for rows, sigs, res in batches[i : i + group]]
                wait(futures)
                inserted += sum(f.result().inserted for f in futures)
            t1, c1, p1 = time.perf_counter(), time.process_time(), postgres_cpu()
            b0 = b1 = 0.0
        finally:
            w.close()
            writer.insert_rows = saved
    if inserted != (0 if mode == "resend" else spans):
        raise SystemExit(f"{name}/{mode}: inserted {inserted} of {spans}")
    return {"wall": t1 - t0, "client_cpu": c1 - c0, "backend_cpu": b1 - b0, "postgres_cpu": p1 - p0}


def prepare(data: payloads.Payloads) -> Prepared:
    """Rows, signature descriptions and resources of every batch, as the decode workers make them."""
    plugins = get_plugins()
    out: Prepared = []
    now = time.time_ns()
    for body in data.batches["proto"]:
        decoded = otlp_proto.decode(otlp_proto.parse_request(body), "bench", now)
        batch = ingest.prepare(decoded.records, plugins)
        out.append((batch.rows, batch.signatures, batch.resources))
    return out


def drop_schemas(url: str, prefix: str) -> None:
    """Drop every schema this run made."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        names = conn.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)).fetchall()
        for (name,) in names:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    """Run every variant and mode --repeat times, interleaved, and print microseconds per span (medians)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", required=True, help="postgresql+psycopg://...; the run uses its own schemas")
    p.add_argument("--spans", type=int, default=50_000)
    p.add_argument("--batch-spans", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--prefill", type=int, default=0, help="older records stored before the timed inserts")
    p.add_argument("--group", type=int, default=4, help="requests per writer commit (writer mode)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    p.add_argument("--modes", default="insert,writer,resend")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    modes = args.modes.split(",")
    if not set(names) <= set(VARIANTS) or not set(modes) <= {"insert", "writer", "resend"}:
        p.error("unknown variant or mode")
    data = payloads.build(args.spans, args.batch_spans, ["proto"])
    batches = prepare(data)
    gc.collect()
    gc.freeze()
    passes: dict[str, list[dict[str, float]]] = {}
    for i in range(args.repeat):
        prefix = f"bpg{secrets.token_hex(3)}_"
        store = Store(Settings(database_url=args.database_url, database_schema_prefix=prefix))
        try:
            for mode in modes:
                for name in names:
                    if mode == "resend" and name == "copy_no_conflict":
                        continue  # it cannot skip conflicts
                    passes.setdefault(f"{mode}:{name}", []).append(
                        run_variant(store, name, mode, batches, args.prefill, args.group)
                    )
        finally:
            store.close()
            drop_schemas(args.database_url, prefix)
        print(f"pass {i + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    us = {
        key: {part: round(statistics.median(r[part] for r in runs) / data.spans * 1e6, 1) for part in runs[0]}
        for key, runs in passes.items()
    }
    for v in us.values():
        v["spans_per_s"] = round(1e6 / v["wall"]) if v["wall"] else 0
    print(
        json.dumps(
            {
                "benchmark": "pg_write_path",
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "spans": data.spans,
                "batch_spans": args.batch_spans,
                "group": args.group,
                "repeat": args.repeat,
                "prefill": args.prefill,
                "microseconds_per_span": us,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
