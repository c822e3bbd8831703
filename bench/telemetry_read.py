"""`GET /v1/telemetry` latency on a large project (pages of 1,000 records), the server as its own process.

A project is filled with N records (default 1,000,000) through LoopKit's own ingest steps (protobuf
decode, signatures, rows, the batching writer) from the realistic batches of bench/payloads.py, sent
again and again with new trace IDs (as bench/ingest.py --duration does), so rows carry real attributes,
resources and events. Then `loopkit serve` starts over that data directory and each query below is
timed over one keep-alive connection with the agent key (wall time from request to the last byte):

- `newest`: the first page of 1,000 records of the last 24 hours;
- `page_5`: the fifth page, following `next_cursor`;
- `errors`: `type=error`, 1,000 records;
- `service`: one service's records, 1,000;
- `trace`: one trace (`trace_id=`).

    python bench/telemetry_read.py --records 1000000 --repeat 15

Prints JSON with the median and p95 milliseconds per query, and the size of the answers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import ingest
import orjson
import payloads

from loopkit_core.app import create_app
from loopkit_core.projects import create_project
from loopkit_core.settings import Settings
from loopkit_receivers import otlp_proto

PREBUILT = 50_000


def fill(data_dir: Path, records: int) -> dict[str, Any]:
    """Fill one project with `records` spans; returns its keys, a trace ID and a service name to query."""
    data = payloads.build(min(records, PREBUILT), 512, {"proto"})
    batches = data.batches["proto"]
    spans = [min(512, data.spans - i * 512) for i in range(len(batches))]
    cycling = ingest.Cycling(batches, spans, float("inf"), "proto")
    app = create_app(Settings(data_dir=data_dir, writer_max_pending_rows=200_000))
    created = create_project(app.store.control, "bench")
    project_id = created["project_id"]
    started, sent, n, pending = time.monotonic(), 0, 0, []
    while sent < records:
        body, count = cycling.get(n)
        n += 1
        decoded = otlp_proto.decode(otlp_proto.parse_request(body), project_id, time.time_ns())
        take = decoded.records[: records - sent]
        pending.append(app.loop.ingest(_principal(project_id), take))
        sent += len(take)
        if len(pending) >= 64:  # keep the writer's queue bounded
            for future in pending:
                future.result()
            pending = []
    for future in pending:
        future.result()
    app.close()
    ingest.log(f"filled {records} records in {time.monotonic() - started:.0f}s")
    trace, spans_of_trace = next(iter(data.sample.items()))
    service = spans_of_trace[0].service
    trace = payloads.round_trace_id(trace, 0)  # as the first round sent it
    return {"project_id": project_id, "agent_key": created["agent_key"], "trace_id": trace, "service": service}


def _principal(project_id: str) -> Any:
    from loopkit_core.projects import Principal

    fields = Principal.__dataclass_fields__
    values = {name: None for name in fields}
    values.update(project_id=project_id, key_kind="producer", scopes=frozenset({"telemetry:write"}))
    return Principal(**values)  # quota_spans None: uncapped


def timed_get(conn: http.client.HTTPConnection, path: str, params: dict[str, Any], key: str) -> tuple[float, Any]:
    """One GET over a keep-alive connection: (milliseconds, parsed answer)."""
    started = time.perf_counter()
    conn.request("GET", f"{path}?{urllib.parse.urlencode(params)}", headers={"authorization": f"Bearer {key}"})
    response = conn.getresponse()
    body = response.read()
    ms = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"GET {path} {params}: {response.status} {body[:200]!r}")
    return ms, orjson.loads(body)


def main(argv: list[str] | None = None) -> int:
    """Fill, serve, time the queries; JSON on stdout."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--keep-data", action="store_true")
    args = p.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-read-bench-"))
    server = ingest.Server({}, keep_data=args.keep_data)
    shutil.rmtree(server.data_dir)
    server.data_dir = data_dir
    server.log_path = data_dir / "server.log"
    try:
        info = fill(data_dir, args.records)
        server.project_id, server.agent_key = info["project_id"], info["agent_key"]
        server.start()
        conn = http.client.HTTPConnection(ingest.HOST, server.http_port, timeout=120)
        base = {"since_minutes": 1440, "limit": 1000}
        _, first = timed_get(conn, "/v1/telemetry", base, info["agent_key"])
        cursor = first["next_cursor"]
        for _ in range(3):
            cursor = timed_get(conn, "/v1/telemetry", {"cursor": cursor, "limit": 1000}, info["agent_key"])[1][
                "next_cursor"
            ]
        queries = {
            "newest": base,
            "page_5": {"cursor": cursor, "limit": 1000},
            "errors": {**base, "type": "error"},
            "service": {**base, "service": info["service"]},
            "trace": {**base, "trace_id": info["trace_id"]},
        }
        results: dict[str, Any] = {}
        for name, params in queries.items():
            times, returned = [], 0
            for _ in range(args.repeat):
                ms, doc = timed_get(conn, "/v1/telemetry", params, info["agent_key"])
                times.append(ms)
                returned = len(doc["records"])
            times.sort()
            results[name] = {
                "median_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
                "records_returned": returned,
            }
            ingest.log(f"  {name}: {results[name]}")
        conn.close()
        report = {
            "benchmark": "telemetry_read",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "records_in_project": args.records,
            "repeat": args.repeat,
            "db_mb": round(server.db_path.stat().st_size / 2**20, 1),
            "server_peak_rss_mb": round(ingest.peak_rss_mb(server.pid), 1),
            "loopkit": ingest.code_version(),
            "queries": results,
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        server.cleanup()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
