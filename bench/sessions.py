"""`GET /v1/sessions` over a 1,000,000-record window and `GET /v1/traces/{id}` of a 10,000-span trace.

A project is filled through LoopKit's own ingest steps (signatures, rows, the batching writer) with N records
(default 1,000,000) spread over the last 50 minutes: chat sessions of 20 records each (a `POST /chat` root,
model calls with token counts, tool calls of which one in eight fails, a user signal in one session of four,
a thumbs-down in half of those), plus one trace of 10,000 spans (a root, 100 steps, 99 children each).
Then `loopkit serve` starts over that data directory as its own process and each query is timed over one
keep-alive connection with the agent key (wall time from request to the last byte):

- `sessions`: `GET /v1/sessions?since_minutes=60` (newest first, 50 sessions);
- `sessions_by_score`: the same, `sort=score`;
- `trace_10k`: `GET /v1/traces/{id}` of the 10,000-span trace (the whole tree);
- `session`: `GET /v1/sessions/{id}` of one session (20 records).

    python bench/sessions.py --records 1000000 --repeat 15

Prints JSON with the median, p95 and minimum milliseconds per query, the server process's CPU milliseconds per
request, and the load average. Targets: sessions <= 200 ms, trace <= 100 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ingest
from telemetry_read import _principal, timed_get

from loopkit_core.app import create_app
from loopkit_core.model import Record, record_id_for_span
from loopkit_core.projects import create_project
from loopkit_core.settings import Settings

SESSION_RECORDS = 20
TRACE_SPANS = 10_000
BATCH = 2_000
MS = 1_000_000
RESOURCE = {"service.name": "travel-agent", "service.version": "3.1.0", "deployment.environment": "bench"}


def session_records(project_id: str, rng: random.Random, n: int, start_ns: int) -> list[Record]:
    """One chat session of SESSION_RECORDS records starting at start_ns: one trace and, sometimes, a user signal."""
    session, user = f"sess-{n:07d}", f"user-{n % 5000:05d}"
    trace_id = f"{rng.getrandbits(128):032x}"
    out: list[Record] = []
    t = start_ns

    def span(
        name: str, kind: str, duration_ms: float, parent: str | None, status: str = "ok", **attributes: Any
    ) -> str:
        span_id = f"{rng.getrandbits(64) | 1:016x}"
        rid = record_id_for_span(project_id, trace_id, span_id, t)
        out.append(
            Record(
                rid, t, t + int(duration_ms * MS), kind, name, "travel-agent", status,
                "search_flights timed out after 30 s" if kind == "tool_failure" else "",
                trace_id, span_id, parent, session, user, "internal", "bench",
                "TimeoutError" if kind == "tool_failure" else None,
                {"session.id": session, "user.id": user, **attributes}, RESOURCE,
            )
        )  # fmt: skip
        return span_id

    root = span("POST /chat", "span", 4000, None, **{"http.route": "/chat", "http.request.method": "POST"})
    signal = n % 4 == 0
    for step in range(SESSION_RECORDS - 1 - signal):
        t += 150 * MS
        if step % 2 == 0:
            span("chat", "span", 140, root, **{"gen_ai.operation.name": "chat", "gen_ai.request.model": "m-1",
                 "gen_ai.usage.input_tokens": 900 + step, "gen_ai.usage.output_tokens": 80})  # fmt: skip
        else:
            failed = rng.random() < 0.125
            span(
                "tool search_flights", "tool_failure" if failed else "span", 120, root, "error" if failed else "ok",
                **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_flights"},
            )  # fmt: skip
    if signal:
        t += 500 * MS
        label = "thumbs_down" if n % 8 == 0 else "thumbs_up"
        span("POST /feedback", "user_signal", 1, None, **{"loopkit.signal": "user_signal", "feedback": label})
    return out


def big_trace(project_id: str, start_ns: int) -> tuple[str, list[Record]]:
    """One trace of TRACE_SPANS spans: a root, 99 steps, each with 100 children."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    out: list[Record] = []
    n = 0

    def span(name: str, t: int, duration_ms: float, parent: str | None) -> str:
        nonlocal n
        n += 1
        span_id = f"{n:016x}"
        out.append(
            Record(
                record_id_for_span(project_id, trace_id, span_id, t), t, t + int(duration_ms * MS), "span", name,
                "batch-worker", "ok", "", trace_id, span_id, parent, None, None, "internal", "bench", None,
                {"step": n}, RESOURCE,
            )
        )  # fmt: skip
        return span_id

    root = span("nightly import", start_ns, 100 * 100, None)
    for step in range(99):
        t = start_ns + step * 100 * MS
        parent = span(f"import batch {step}", t, 100, root)
        for child in range(100):
            span("insert rows", t + child * MS, 1, parent)
    return trace_id, out


def fill(data_dir: Path, records: int) -> dict[str, Any]:
    """Fill one project; returns its keys, the big trace's ID and one session's ID."""
    app = create_app(Settings(data_dir=data_dir, writer_max_pending_rows=200_000))
    created = create_project(app.store.control, "bench")
    project_id = created["project_id"]
    principal = _principal(project_id)
    rng = random.Random(16)
    now = time.time_ns()
    window_start = now - 50 * 60 * 10**9
    sessions = (records - TRACE_SPANS) // SESSION_RECORDS
    started, pending, batch = time.monotonic(), [], []
    trace_id, trace_records = big_trace(project_id, now - 30 * 60 * 10**9)
    for i in range(0, len(trace_records), BATCH):
        pending.append(app.loop.ingest(principal, trace_records[i : i + BATCH]))
    for n in range(sessions):
        batch += session_records(project_id, rng, n, window_start + n * (50 * 60 * 10**9 // sessions))
        if len(batch) >= BATCH:
            pending.append(app.loop.ingest(principal, batch))
            batch = []
        if len(pending) >= 64:
            for future in pending:
                future.result()
            pending = []
    if batch:
        pending.append(app.loop.ingest(principal, batch))
    for future in pending:
        future.result()
    app.close()
    ingest.log(f"filled {sessions * SESSION_RECORDS + TRACE_SPANS} records in {time.monotonic() - started:.0f}s")
    return {
        "project_id": project_id,
        "agent_key": created["agent_key"],
        "trace_id": trace_id,
        "session_id": f"sess-{sessions - 7:07d}",
        "stored": sessions * SESSION_RECORDS + TRACE_SPANS,
    }


def main(argv: list[str] | None = None) -> int:
    """Fill, serve, time the queries; JSON on stdout."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--keep-data", action="store_true")
    args = p.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-sessions-bench-"))
    server = ingest.Server({}, keep_data=args.keep_data)
    shutil.rmtree(server.data_dir)
    server.data_dir = data_dir
    server.log_path = data_dir / "server.log"
    try:
        info = fill(data_dir, args.records)
        server.project_id, server.agent_key = info["project_id"], info["agent_key"]
        server.start()
        conn = http.client.HTTPConnection(ingest.HOST, server.http_port, timeout=120)
        queries = {
            "sessions": ("/v1/sessions", {"since_minutes": 60}),
            "sessions_by_score": ("/v1/sessions", {"since_minutes": 60, "sort": "score"}),
            "trace_10k": (f"/v1/traces/{info['trace_id']}", {}),
            "session": (f"/v1/sessions/{info['session_id']}", {}),
        }
        results: dict[str, Any] = {}
        for name, (path, params) in queries.items():
            timed_get(conn, path, params, info["agent_key"])  # warm the page cache once
            times: list[float] = []
            doc: Any = None
            # The server's own CPU per request as well: on a shared machine wall time mostly measures the queue
            # for a core, CPU time what the request costs.
            cpu_before = ingest.process_cpu_seconds(server.pid, with_children=False)
            for _ in range(args.repeat):
                ms, doc = timed_get(conn, path, params, info["agent_key"])
                times.append(ms)
            cpu_ms = (ingest.process_cpu_seconds(server.pid, with_children=False) - cpu_before) * 1000 / args.repeat
            times.sort()
            results[name] = {
                "median_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
                "min_ms": round(times[0], 1),
                "server_cpu_ms_per_request": round(cpu_ms, 1),
                **_shape(doc),
            }
            ingest.log(f"  {name}: {results[name]}")
        conn.close()
        report = {
            "benchmark": "sessions",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "records_in_window": info["stored"],
            "repeat": args.repeat,
            "db_mb": round(server.db_path.stat().st_size / 2**20, 1),
            "server_peak_rss_mb": round(ingest.peak_rss_mb(server.pid), 1),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
            "loopkit": ingest.code_version(),
            "queries": results,
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        server.cleanup()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


def _shape(doc: dict[str, Any]) -> dict[str, Any]:
    if "spans" in doc:
        return {"spans_returned": doc["spans_returned"], "spans_total": doc["spans_total"]}
    if "session" in doc:
        return {"records_returned": len(doc["records"])}
    return {"sessions_returned": len(doc["sessions"]), "sessions_considered": doc["sessions_considered"]}


if __name__ == "__main__":
    sys.exit(main())
