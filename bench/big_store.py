"""A project store of 20 million records: how fast it builds, and how reads, diagnosis and retention hold up on it.

The build (in this process) goes through LoopKit's own steps: the realistic spans of bench/payloads.py are
decoded once by the OTLP protobuf receiver and signed by the record_signature hook; then copies of them, each
with new trace IDs (and record IDs) and re-stamped in time, become rows through `to_rows` and are committed by
LoopKit's batching `Writer`, tens of thousands of rows a commit, in time order. The records span `--days` days
(default 30) that end at the build; the last hour holds `--last-hour` records (default the smaller of 1,000,000
and half the store: exactly those in the window [end - 60 min, end)) and the rest are spread evenly over the days
before it. Errors and tool failures are the
payload's (~10% of spans, 15 faults over 16 services, with stack traces); in the last hour the busiest operation
is 3x slower (a latency regression for the diagnosis to find). Every trace keeps its spans' offsets.

Then `loopkit serve` (its own process, default settings but retention off so it does not race the measurement)
is timed over one keep-alive connection with the agent key; `until` is always the store's end, so a kept store
measures the same window later:

- `GET /v1/telemetry` pages of 1,000 records of the last 60 minutes: the newest page, `type=error`, and paging
  on through `next_cursor` (median of `--repeat` each, default 10; the very first request is also quoted cold);
- `POST /v1/runs/diagnose` of the last hour (median of 3) and the server's peak RSS during them; with `--pairs N`,
  N rounds of two diagnoses one after the other and then two at once (on two connections), and their ratio;

and, with the server stopped, a retention pass (`retention.purge_project`, default batch size and pauses) that
removes the oldest day, timed; a kept store loses one more day on each run.

    python bench/big_store.py                                   # 20,000,000 records
    python bench/big_store.py --records 1000000                 # a quick run
    python bench/big_store.py --records 5000000 --keep DIR      # build once into DIR; later runs reuse it

JSON on stdout (progress on stderr). The build uses `synchronous=OFF` and a larger page cache on its own
connection (only the build's speed changes: the file is the same); everything measured runs with defaults.
Targets of issue 19: a page <= 50 ms, a diagnosis of the last hour <= 2 s, retention of a day <= 1 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ingest
import orjson
import payloads
import store_stats
from sqlalchemy import event
from store_stats import StoreStats

from loopkit_core.ingest import sign
from loopkit_core.model import FAILURE_TYPES, Record, parse_rfc3339, record_id_for_span, rfc3339
from loopkit_core.plugins import get_plugins
from loopkit_core.projects import create_project
from loopkit_core.retention import PAUSE_SECONDS, purge_project
from loopkit_core.settings import Settings
from loopkit_core.store import day_tables, partitions
from loopkit_core.store.engines import Store
from loopkit_core.store.records import resource_rows, to_rows
from loopkit_core.store.schema import records
from loopkit_core.store.writer import Writer
from loopkit_receivers import otlp_proto

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
TEMPLATE_SPANS = 50_000  # decoded once; copies of them fill the store
CHUNK = 50_000  # rows a writer request (the writer commits everything queued at once)
IN_FLIGHT = 3  # writer requests queued at most (bounds memory)
SLOWDOWN = 3.0  # the latency regression in the last hour
META = "big_store.json"


# --------------------------------------------------------------------------------------------
# The template: realistic spans, decoded and signed once
# --------------------------------------------------------------------------------------------


class Template:
    """The payload's spans as Records, with what each copy needs: its trace's start and its events' offsets."""

    def __init__(self, project_id: str, spans: int) -> None:
        data = payloads.build(spans, 512, {"proto"})
        plugins = get_plugins()
        self.records: list[Record] = []
        self.signatures: dict[str, dict[str, Any]] = {}
        for body in data.batches["proto"]:
            decoded = otlp_proto.decode(otlp_proto.parse_request(body), project_id, time.time_ns())
            for description in sign(decoded.records, plugins):  # sets each failure's signature
                self.signatures.setdefault(description["signature"], description)
            self.records += decoded.records
        first: dict[str | None, int] = {}
        start: dict[str | None, int] = {}
        for i, r in enumerate(self.records):
            first.setdefault(r.trace_id, i)
            start[r.trace_id] = min(start.get(r.trace_id, r.ts_ns), r.ts_ns)
        # Per record: the index of its trace's first span (its place in time) and its offset in the trace.
        self.trace_index = [first[r.trace_id] for r in self.records]
        self.offset_ns = [r.ts_ns - start[r.trace_id] for r in self.records]
        # The longest trace, from its first start to its last span's start (a slowed span only ends later).
        self.longest_ns = max(self.offset_ns)
        self.event_offsets = [
            [parse_rfc3339(e["timestamp"]) - r.ts_ns if "timestamp" in e else None for e in r.events]
            for r in self.records
        ]
        ops = Counter((r.service, r.name) for r in self.records if r.type not in FAILURE_TYPES)
        self.slow_operation = ops.most_common(1)[0][0]
        self.failures = sum(r.type in FAILURE_TYPES for r in self.records)


class Timeline:
    """Where the g-th trace of the store starts: the older records spread over the days, the rest in the last hour.

    Traces start in [start, end - 1 h - margin) and [end - 1 h, end - margin), where `margin` is longer than any
    trace: so the window [end - 60 min, end) that the measurements read holds exactly the last hour's records.
    """

    def __init__(self, records: int, last_hour: int, end_ns: int, days: float, margin_ns: int) -> None:
        self.older, self.last_hour = records - last_hour, last_hour
        self.end_ns = end_ns
        self.start_ns = end_ns - int(days * DAY_NS)
        self.hour_start = end_ns - HOUR_NS
        self.margin_ns = margin_ns

    def start_of(self, g: int, record: int | None = None) -> int:
        """Start time of the trace whose first span is record g of the build, for its span that is record `record`.

        Which block a span lands in follows its own index, so each block holds exactly its count: the spans of the
        one trace that straddles the boundary after it start with the last hour.
        """
        if (g if record is None else record) < self.older:
            return self.start_ns + (g * (self.hour_start - self.margin_ns - self.start_ns)) // max(self.older, 1)
        g = max(g, self.older)
        return self.hour_start + ((g - self.older) * (HOUR_NS - self.margin_ns)) // max(self.last_hour, 1)


def copy_of(t: Template, i: int, rnd: int, g0: int, timeline: Timeline, project_id: str) -> Record:
    """Template record i as round `rnd` sends it: its own trace ID (round stamped), new times and record ID."""
    r = t.records[i]
    trace_id = f"{rnd:04x}{r.trace_id[4:]}" if r.trace_id else r.trace_id
    ts = timeline.start_of(g0 + t.trace_index[i], g0 + i) + t.offset_ns[i]
    length = r.end_ns - r.ts_ns
    if ts >= timeline.hour_start and (r.service, r.name) == t.slow_operation:
        length = int(length * SLOWDOWN)
    events = r.events
    if events:
        events = [
            {**e, "timestamp": rfc3339(ts + off)} if off is not None else e
            for e, off in zip(events, t.event_offsets[i], strict=True)
        ]
    return Record(
        record_id=record_id_for_span(project_id, trace_id or "", r.span_id or "", ts),
        ts_ns=ts,
        end_ns=ts + length,
        type=r.type,
        name=r.name,
        service=r.service,
        status=r.status,
        message=r.message,
        trace_id=trace_id,
        span_id=r.span_id,
        parent_span_id=r.parent_span_id,
        session_id=f"{r.session_id}-{rnd}" if r.session_id else r.session_id,
        user_id=r.user_id,
        kind=r.kind,
        scope=r.scope,
        exception_type=r.exception_type,
        attributes=r.attributes,
        resource=r.resource,  # shared: to_rows hashes each distinct resource dict once a batch
        events=events,
        links=r.links,
        signature=r.signature,
    )


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


def build(data_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Fill a new project with args.records records through to_rows and the Writer; the build's facts."""
    settings = Settings.from_env(env, data_dir=data_dir, sqlite_synchronous="OFF", retention_days=0.0)
    store = Store(settings)
    created = create_project(store.control, "big-store")
    project_id = created["project_id"]
    engine = store.project(project_id)
    if not store.postgres:

        @event.listens_for(engine, "connect")
        def _bigger_cache(dbapi_connection, _record) -> None:  # noqa: ANN001
            # The build's own connection only: 1 GiB of page cache keeps the random-key indexes' pages at hand.
            dbapi_connection.execute("PRAGMA cache_size=-1048576")

        engine.dispose()  # the migration's pooled connection predates the listener
    if getattr(args, "previous_layout", False):
        to_previous_layout(store, project_id)
    started = time.monotonic()
    template = Template(project_id, min(TEMPLATE_SPANS, args.records))
    ingest.log(
        f"template: {len(template.records)} records, {template.failures} failures, "
        f"{len(template.signatures)} signatures, slow operation {template.slow_operation} "
        f"({time.monotonic() - started:.1f}s)"
    )
    last_hour = args.last_hour if args.last_hour is not None else min(1_000_000, args.records // 2)
    end_ns = time.time_ns() // 10**9 * 10**9
    timeline = Timeline(args.records, last_hour, end_ns, args.days, margin_ns=template.longest_ns + 10**9)
    writer = Writer(store, threads=1, max_pending_rows=CHUNK * 10)  # never Overloaded: IN_FLIGHT bounds it
    pending: list[Future[Any]] = []
    descriptions = list(template.signatures.values())
    n = len(template.records)
    made = 0
    t0 = time.monotonic()
    progress = t0
    batch: list[Record] = []
    while made < args.records:
        rnd, i = divmod(made, n)
        batch.append(copy_of(template, i, rnd, rnd * n, timeline, project_id))
        made += 1
        if len(batch) == CHUNK or made == args.records:
            rows = to_rows(batch, batch[-1].ts_ns)
            pending.append(writer.submit(project_id, rows, None, descriptions, resource_rows(batch)))
            descriptions, batch = [], []
            while len(pending) > IN_FLIGHT:
                pending.pop(0).result()
            if time.monotonic() - progress > 30:
                progress = time.monotonic()
                rate = made / (progress - t0)
                ingest.log(f"  {made:,} records, {rate:,.0f}/s, ETA {(args.records - made) / rate:,.0f}s")
    for future in pending:
        future.result()
    writer.close()
    seconds = time.monotonic() - t0
    day_tables.route = ROUTE  # as it was, if to_previous_layout changed it
    store.close()
    stats = StoreStats(data_dir, project_id, env)
    try:
        stored, disk = stats.records(), stats.disk_bytes()
    finally:
        stats.close()
    ingest.log(f"built {stored:,} records in {seconds:,.0f}s ({stored / seconds:,.0f}/s), {disk / 2**30:.2f} GiB")
    previous = getattr(args, "previous_layout", False)
    migration = measure_migration(settings, project_id) if previous else None
    return {
        "migration": migration,
        "project_id": project_id,
        "agent_key": created["agent_key"],
        "records": args.records,
        "stored": stored,
        "last_hour_records": last_hour,
        "days": args.days,
        "start_ns": timeline.start_ns,
        "end_ns": end_ns,
        "purged_until_ns": timeline.start_ns,
        "build_seconds": round(seconds, 1),
        "build_records_per_s": round(stored / seconds, 1),
        "template_records": len(template.records),
        "template_failure_share": round(template.failures / len(template.records), 3),
        "signatures": len(template.signatures),
        "slow_operation": list(template.slow_operation),
        "disk_mb_after_build": round(disk / 2**20, 1),
        "build_settings": {"sqlite_synchronous": "OFF", "cache_size_kib": 1048576, "rows_per_request": CHUNK},
        "loopkit": ingest.code_version(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


ROUTE = day_tables.route


def to_previous_layout(store: Store, project_id: str) -> None:
    """Make a new project's records the one table of the layout before day partitions (PostgreSQL, migration 8) or
    day tables (SQLite, migration 9), and let this build write into it, to time that migration on opening it."""
    if not store.postgres:
        with store.project(project_id).begin() as conn:
            conn.exec_driver_sql("DELETE FROM loopkit_schema_version WHERE version >= 9")
        # The previous code wrote every record to `records`.
        day_tables.route = lambda dbapi, info, rows, now_ns=None: {day_tables.BASE: list(rows)}
        return
    schema = store.project_schema(project_id)
    with store.project(project_id).begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE "{schema}".records')
        records.create(conn)
        conn.exec_driver_sql(f'DELETE FROM "{schema}".loopkit_schema_version WHERE version >= 8')


def measure_migration(settings: Settings, project_id: str) -> dict[str, Any]:
    """Open the store again, which migrates the one-table store just built; its time and the layout it leaves."""
    store = Store(settings)
    try:
        started, cpu0 = time.perf_counter(), time.process_time()
        engine = store.project(project_id)  # migrates
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        layout = partitions.layout(engine) if store.postgres else day_tables.layout(engine)
        result = {"seconds": round(seconds, 3), "client_cpu_s": round(cpu, 3), "layout": layout}
    finally:
        store.close()
    ingest.log(f"  migration: {result}")
    return result


# --------------------------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------------------------


def request(
    conn: http.client.HTTPConnection, method: str, path: str, key: str, params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[float, Any]:  # fmt: skip
    """One request over a keep-alive connection: (milliseconds to the last byte, parsed answer)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    headers = {"authorization": f"Bearer {key}"}
    data = None
    if body is not None:
        data, headers["content-type"] = orjson.dumps(body), "application/json"
    started = time.perf_counter()
    conn.request(method, path + query, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    ms = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{method} {path}{query}: {response.status} {raw[:300]!r}")
    return ms, orjson.loads(raw)


def timings(times: list[float]) -> dict[str, float]:
    """Median, min and max milliseconds."""
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1)}  # fmt: skip


def reset_peak_rss(pid: int) -> None:
    """Reset a process's VmHWM to its current RSS (Linux: 5 > /proc/PID/clear_refs), so a later peak is its own."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def measure_server(
    data_dir: Path, meta: dict[str, Any], env: dict[str, str], repeat: int, pairs: int = 0
) -> dict[str, Any]:
    """Pages of GET /v1/telemetry and POST /v1/runs/diagnose through `loopkit serve` over the store."""
    # "" unsets a LOOPKIT_DATABASE_URL inherited from the environment: the server reads the store that was built.
    server_env = {"LOOPKIT_DATABASE_URL": "", **env, "LOOPKIT_RETENTION_DAYS": "0"}
    server_env["LOOPKIT_DIAGNOSE_PER_MINUTE"] = "1000"
    server = ingest.Server(server_env, True)
    shutil.rmtree(server.data_dir)
    server.data_dir, server.log_path = data_dir, data_dir / "server.log"
    server.project_id, server.agent_key = meta["project_id"], meta["agent_key"]
    key, until = meta["agent_key"], str(meta["end_ns"])
    out: dict[str, Any] = {}
    try:
        server.start(timeout=300)
        conn = http.client.HTTPConnection(ingest.HOST, server.http_port, timeout=900)
        last_hour = {"since_minutes": 60, "until": until, "limit": 1000}
        cold_ms, first = request(conn, "GET", "/v1/telemetry", key, last_hour)
        out["page_cold_ms"] = round(cold_ms, 1)
        for name, params in {"newest": last_hour, "errors": {**last_hour, "type": "error"}}.items():
            times, returned = [], 0
            cpu0 = ingest.process_cpu_seconds(server.pid)
            for _ in range(repeat):
                ms, doc = request(conn, "GET", "/v1/telemetry", key, params)
                times.append(ms)
                returned = len(doc["records"])
            cpu_ms = (ingest.process_cpu_seconds(server.pid) - cpu0) * 1000 / repeat
            out[f"page_{name}"] = {**timings(times), "server_cpu_ms_mean": round(cpu_ms, 1)}
            out[f"page_{name}"]["records_returned"] = returned
            ingest.log(f"  page {name}: {out[f'page_{name}']}")
        times, cursor, returned = [], first["next_cursor"], []
        cpu0 = ingest.process_cpu_seconds(server.pid)
        for _ in range(repeat):  # pages 2 .. repeat + 1 of the newest (fewer in a small store)
            if not cursor:
                break
            ms, doc = request(conn, "GET", "/v1/telemetry", key, {"cursor": cursor, "limit": 1000})
            times.append(ms)
            returned.append(len(doc["records"]))
            cursor = doc["next_cursor"]
        cpu_ms = (ingest.process_cpu_seconds(server.pid) - cpu0) * 1000 / max(len(times), 1)
        out["page_next_cursor"] = {**timings(times), "server_cpu_ms_mean": round(cpu_ms, 1), "pages": len(times)}
        out["page_next_cursor"]["records_returned"] = returned
        ingest.log(f"  paging: {out['page_next_cursor']}")
        runs = []
        reset_peak_rss(server.pid)
        rss_before = ingest.peak_rss_mb(server.pid, "VmRSS", with_children=False)
        for _ in range(3):
            cpu0 = ingest.process_cpu_seconds(server.pid)
            ms, answer = request(conn, "POST", "/v1/runs/diagnose", key, body={"since_minutes": 60, "until": until})
            cpu = ingest.process_cpu_seconds(server.pid) - cpu0
            packet = answer["packet"]
            issues = packet["issues"]
            runs.append(
                {
                    "seconds": round(ms / 1000, 3),
                    # Less sensitive than wall time to other jobs on a shared machine.
                    "server_cpu_s": round(cpu, 2),
                    "telemetry_read": packet.get("telemetry_read"),
                    "issues": len(issues),
                    "by_signal": dict(Counter(i.get("signal_type") for i in issues)),
                    "slow_operation_found": any(
                        i.get("signal_type") == "latency" and meta["slow_operation"][1] in i.get("title", "")
                        for i in issues
                    ),
                }
            )
            ingest.log(f"  diagnose: {runs[-1]}")
        out["diagnose"] = {
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
            "server_rss_mb_before": round(rss_before, 1),
            "server_peak_rss_mb": round(ingest.peak_rss_mb(server.pid, with_children=False), 1),
            "runs": runs,
        }
        if pairs:
            out["diagnose_pairs"] = diagnose_pairs(server, key, until, pairs)
        conn.close()
    finally:
        server.stop()
    return out


def diagnose_pairs(server: ingest.Server, key: str, until: str, pairs: int) -> dict[str, Any]:
    """`pairs` rounds of two diagnoses one after the other, then two at once: what a second diagnosis costs the
    first when the server runs them side by side."""
    body = {"since_minutes": 60, "until": until}

    def one(_: int = 0) -> None:
        # A connection of its own: one left idle through a pair would outlive the server's keep-alive.
        conn = http.client.HTTPConnection(ingest.HOST, server.http_port, timeout=900)
        try:
            request(conn, "POST", "/v1/runs/diagnose", key, body=body)
        finally:
            conn.close()

    rounds = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(pairs):
            started = time.perf_counter()
            for _ in range(2):
                one()
            in_turn = time.perf_counter() - started
            started = time.perf_counter()
            list(pool.map(one, range(2)))
            at_once = time.perf_counter() - started
            rounds.append({"in_turn_s": round(in_turn, 3), "at_once_s": round(at_once, 3),
                           "ratio": round(at_once / in_turn, 3)})  # fmt: skip
            ingest.log(f"  diagnose pair: {rounds[-1]}")
    return {"median_ratio": statistics.median(r["ratio"] for r in rounds), "rounds": rounds}


def measure_retention(data_dir: Path, meta: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One retention pass that removes the oldest remaining day (server defaults: batch size and pauses)."""
    settings = Settings.from_env(env, data_dir=data_dir)
    stats = StoreStats(data_dir, meta["project_id"], env)
    store = Store(settings)
    try:
        before = stats.records()
        cutoff = meta["purged_until_ns"] + DAY_NS
        engine = store.project(meta["project_id"])
        started, cpu0 = time.perf_counter(), time.process_time()
        deleted, batches, dropped = purge_project(engine, cutoff, settings.retention_batch_rows)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        after = stats.records()
        disk = stats.disk_bytes()
    finally:
        store.close()
        stats.close()
    meta["purged_until_ns"] = cutoff
    result = {
        "cutoff": rfc3339(cutoff),
        "deleted": deleted,
        "count_before": before,
        "count_after": after,
        "deleted_matches_count": before - after == deleted,
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "batches": batches,
        "partitions_dropped": dropped,
        "batch_rows": settings.retention_batch_rows,
        # The purge sleeps between batches on purpose (the writer gets the database); this is that share.
        "pause_seconds": round(max(batches - 1, 0) * PAUSE_SECONDS, 3),
        "seconds_without_pauses": round(seconds - max(batches - 1, 0) * PAUSE_SECONDS, 3),
        "deleted_per_s": round(deleted / seconds, 1) if seconds > 0 else None,
        "disk_mb_after": round(disk / 2**20, 1),
    }
    ingest.log(f"  retention: {result}")
    return result


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=20_000_000, help="records in the store (default 20000000)")
    p.add_argument("--last-hour", type=int, help="records in the last hour (default min(1000000, records / 2))")
    p.add_argument("--days", type=float, default=30.0, help="days the records span (default 30)")
    p.add_argument("--repeat", type=int, default=10, help="timings per page query (default 10)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="build into DIR (kept); reuse the store already there")
    p.add_argument("--build-only", action="store_true", help="build (or find) the store, measure nothing")
    p.add_argument("--no-retention", action="store_true", help="skip the retention pass (it deletes a day)")
    p.add_argument("--database-url", help="build and serve on PostgreSQL (postgresql+psycopg://...)")
    p.add_argument("--schema-prefix", help="PostgreSQL: the store's schema prefix (default bench_<random>_)")
    p.add_argument(
        "--previous-layout",
        action="store_true",
        help="build the one-table layout of before day partitions (PostgreSQL) or day tables (SQLite), then time "
        "the migration (8 or 9) on opening it",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="also time N rounds of two diagnoses one after the other, then at once (default 0)",
    )
    p.add_argument("--out", type=Path, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    last = args.last_hour if args.last_hour is not None else min(1_000_000, args.records // 2)
    if args.records < 2 or not 1 <= last < args.records or args.days <= 1 or args.repeat < 1:
        p.error("need --records >= 2, 1 <= --last-hour < --records, --days > 1 and --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the store, measure, print the JSON report."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server is stopped and a temporary store removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = ingest.load_average()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="loopkit-big-store-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    meta_path = data_dir / META
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is not None:
        env = meta.get("env", {})
    elif args.database_url:
        prefix = args.schema_prefix or f"bench_{os.urandom(4).hex()}_"
        env = {"LOOPKIT_DATABASE_URL": args.database_url, "LOOPKIT_DATABASE_SCHEMA_PREFIX": prefix}
    try:
        if meta is None or meta["records"] != args.records:
            if meta is not None:
                raise SystemExit(f"{data_dir} holds a store of {meta['records']} records, not {args.records}")
            ingest.log(f"building {args.records:,} records in {data_dir} ...")
            meta = {**build(data_dir, args, env), "env": env}
            meta_path.write_text(json.dumps(meta, indent=2))
        else:
            ingest.log(f"reusing the store of {meta['records']:,} records in {data_dir} (built {meta['built_at']})")
        report: dict[str, Any] = {
            "benchmark": "big_store",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0]},
            "loopkit": ingest.code_version(),
            "database": "postgresql" if env.get("LOOPKIT_DATABASE_URL") else "sqlite",
            "build": {k: v for k, v in meta.items() if k not in ("agent_key", "env")},
        }
        if not args.build_only:
            report["server"] = measure_server(data_dir, meta, env, args.repeat, args.pairs)
            if not args.no_retention:
                report["retention"] = measure_retention(data_dir, meta, env)
                meta_path.write_text(json.dumps(meta, indent=2))
        report["load_average"] = {"start": load_start, "end": ingest.load_average()}
        text = json.dumps(report, indent=2)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
            if env.get("LOOPKIT_DATABASE_URL"):
                drop_schemas(env)


def drop_schemas(env: dict[str, str]) -> None:
    """Drop the PostgreSQL schemas of a store that is not kept."""
    prefix = env["LOOPKIT_DATABASE_SCHEMA_PREFIX"]
    store = Store(Settings.from_env(env, data_dir=Path(tempfile.gettempdir())))
    try:
        store_stats.drop_schemas(store, prefix)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
