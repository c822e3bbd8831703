"""Overload soak: sustained more-than-the-writer-can-take ingest against a real `loopkit serve` process.

The server runs as its own process on free 127.0.0.1 ports over a fresh data directory (its decode worker
processes, if any, are sampled separately as `workers_rss_mib`). C client
threads (keep-alive `http.client` connections) post pre-serialised OTLP/HTTP protobuf batches as
fast as they can; a 503 is retried (immediately by default, or after `Retry-After` with
`--honour-retry-after`), so the load never lets up. Every `--interval` seconds the server's RSS
(VmRSS from /proc) and the 200/503 counts of that interval are sampled. At the end the server is
stopped with SIGTERM (it drains) and the stored row count is read with sqlite3 and compared with
the spans the server acknowledged: overload must shed load, never lose acknowledged data.

Usage (JSON on stdout, progress on stderr):

    python bench/soak.py                      # 10 minutes, defaults below
    python bench/soak.py --minutes 3 --connections 16 --max-pending-rows 4096
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from loopkit_core.store import day_tables

# 16 bytes that occur nowhere else in a batch: each request swaps them for a fresh trace ID.
MARK = bytes.fromhex("f00dfacecafebeefdeadc0de5eed5eed")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def template(spans: int) -> bytes:
    """One serialised request of `spans` spans sharing the MARK trace ID, with realistic attributes."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "soak"
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "bench.soak"
    now = time.time_ns()
    for i in range(spans):
        span = trace_pb2.Span(
            trace_id=MARK,
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"GET /items/{i % 20}",
            kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now - 5_000_000,
            end_time_unix_nano=now,
        )
        for key, value in (("http.route", f"/items/{i % 20}"), ("user.id", f"u{i % 97}"), ("pad", "x" * 64)):
            span.attributes.add(key=key).value.string_value = value
        scope.spans.append(span)
    return request.SerializeToString()


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (decode workers of `loopkit serve`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counters:
    """Answers by status, and acknowledged spans, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = self.unavailable = self.other = self.errors = self.spans = 0

    def snapshot(self) -> tuple[int, int, int, int, int]:
        """(ok, 503, other status, transport errors, acknowledged spans)."""
        with self.lock:
            return self.ok, self.unavailable, self.other, self.errors, self.spans


def client(
    port: int, key: str, body: bytes, spans: int, worker: int, stop: threading.Event, counters: Counters, honour: bool
) -> None:
    """Post batches with fresh trace IDs until stopped; a 503 is retried with the same batch."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"}
    n = 0
    payload = None
    while not stop.is_set():
        if payload is None:
            n += 1
            payload = body.replace(MARK, worker.to_bytes(4, "big") + n.to_bytes(12, "big"))
        try:
            conn.request("POST", "/v1/traces", payload, headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            with counters.lock:
                counters.errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            time.sleep(0.05)
            continue
        with counters.lock:
            if response.status == 200:
                counters.ok += 1
                counters.spans += spans
            elif response.status == 503:
                counters.unavailable += 1
            else:
                counters.other += 1
        if response.status == 200:
            payload = None
        elif response.status == 503 and honour:
            stop.wait(float(response.getheader("retry-after", "1")))
    conn.close()


def main() -> None:
    """Run the soak and print its JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--spans", type=int, default=500, help="spans per request")
    parser.add_argument("--max-pending-rows", type=int, default=4096, help="server writer_max_pending_rows")
    parser.add_argument("--writer-threads", type=int, default=1)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--honour-retry-after", action="store_true")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="loopkit-soak-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPKIT_")}
    env |= {
        "LOOPKIT_WRITER_MAX_PENDING_ROWS": str(args.max_pending_rows),
        "LOOPKIT_WRITER_THREADS": str(args.writer_threads),
    }
    cli = [sys.executable, "-m", "loopkit_core.cli"]
    created = json.loads(
        subprocess.run(
            [*cli, "projects", "create", "soak", "--data-dir", str(data_dir), "--json"],
            capture_output=True,
            check=True,
            env=env,
            text=True,
        ).stdout
    )
    http_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--data-dir", str(data_dir), "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
        + ["--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", http_port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        body = template(args.spans)
        counters, stop = Counters(), threading.Event()
        threads = [
            threading.Thread(
                target=client,
                args=(http_port, created["producer_key"], body, args.spans, w, stop, counters, args.honour_retry_after),
                daemon=True,
            )
            for w in range(args.connections)
        ]
        start = time.monotonic()
        cpu0 = cpu_seconds(server.pid)
        for thread in threads:
            thread.start()
        samples: list[dict[str, Any]] = []
        previous = counters.snapshot()
        end = start + args.minutes * 60
        while time.monotonic() < end:
            stop.wait(min(args.interval, max(0.0, end - time.monotonic())))
            now = counters.snapshot()
            sample = {
                "t_seconds": round(time.monotonic() - start, 1),
                "rss_mib": round(rss_kib(server.pid) / 1024, 1),
                "workers_rss_mib": round(sum(rss_kib(c) for c in children(server.pid)) / 1024, 1),
                "workers": len(children(server.pid)),
                "ok": now[0] - previous[0],
                "unavailable_503": now[1] - previous[1],
                "other_status": now[2] - previous[2],
                "transport_errors": now[3] - previous[3],
                "spans_per_s": round((now[4] - previous[4]) / args.interval),
            }
            samples.append(sample)
            print(json.dumps(sample), file=sys.stderr, flush=True)
            previous = now
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        elapsed = time.monotonic() - start
        server_cpu = cpu_seconds(server.pid) - cpu0
        ok, unavailable, other, errors, acknowledged = counters.snapshot()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        with sqlite3.connect(data_dir / "projects" / f"{created['project_id']}.db") as db:
            stored = sum(day_tables.record_counts(db).values())
        rss = [s["rss_mib"] for s in samples]
        half = rss[len(rss) // 2 :] or rss
        print(
            json.dumps(
                {
                    "benchmark": "overload_soak",
                    "minutes": args.minutes,
                    "connections": args.connections,
                    "spans_per_request": args.spans,
                    "writer_max_pending_rows": args.max_pending_rows,
                    "writer_threads": args.writer_threads,
                    "honour_retry_after": args.honour_retry_after,
                    "seconds": round(elapsed, 1),
                    "requests_ok": ok,
                    "requests_503": unavailable,
                    "requests_other_status": other,
                    "transport_errors": errors,
                    "share_503": round(unavailable / max(1, ok + unavailable), 3),
                    "spans_acknowledged": acknowledged,
                    "spans_stored": stored,
                    "acknowledged_spans_per_s": round(acknowledged / elapsed),
                    "server_cpu_seconds": round(server_cpu, 1),
                    "rss_mib_first_sample": rss[0] if rss else None,
                    "rss_mib_max": max(rss) if rss else None,
                    "rss_mib_max_second_half": max(half) if half else None,
                    "rss_mib_last": rss[-1] if rss else None,
                    "workers_rss_mib_max": max((s["workers_rss_mib"] for s in samples), default=None),
                    "exit_code": server.returncode,
                    "samples": samples,
                },
                indent=1,
            )
        )
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
