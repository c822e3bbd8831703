"""Hostile request bodies against a real `loopkit serve`: how fast they are answered, what a bystander waits.

Scenarios (issue 22 item 1 and the per-request span bound):

- gzip: a body of empty gzip members (`gzip.compress(b"") * (MiB * 2**20 // 20)`) at each size given, posted with
  `content-encoding: gzip`; meanwhile another project posts one record every 0.1 s and its latencies are kept.
- spans: one protobuf ExportTraceServiceRequest of N tiny spans (the outside review sent 1.8 million, 51 MiB);
  reports the answer, its time and the server's RSS (its own and its decode workers') before and after.
- stalled: N connections that send part of a request head and stall (the review opened 24,000); reports how
  `/healthz` and a one-record POST fare meanwhile and when the server has closed them all
  (`header_timeout_seconds`, default 10 s; `max_http_connections`, default 1000).

Usage (JSON on stdout, progress on stderr):

    python bench/hostile.py --gzip-mib 1 8 64 --spans 1800000 --stalled 5000
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import resource
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import HOST, Server, descendants, log  # noqa: E402


def post(port: int, body: bytes, headers: dict[str, str], timeout: float = 600.0) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one POST /v1/traces on a fresh connection."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (decode workers), MiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def gzip_case(server: Server, bystander_key: str, mib: int) -> dict[str, Any]:
    """The many-members body at `mib` MiB, and a bystander's one-record POST latencies meanwhile."""
    body = gzip.compress(b"") * (mib * 2**20 // 20)
    headers = {"content-type": "application/x-protobuf", "content-encoding": "gzip",
               "authorization": f"Bearer {server.producer_key}"}  # fmt: skip
    result: dict[str, Any] = {"mib": mib, "body_bytes": len(body)}
    done = threading.Event()
    latencies: list[float] = []

    def bystander() -> None:
        record = b'{"records": [{"type": "event", "name": "bystander"}]}'
        auth = {"content-type": "application/json", "authorization": f"Bearer {bystander_key}"}
        while not done.is_set():
            status, _, seconds = post(server.http_port, record, auth)
            assert status == 200, status
            latencies.append(seconds)
            time.sleep(0.1)

    thread = threading.Thread(target=bystander, daemon=True)
    thread.start()
    time.sleep(0.3)
    status, answer, seconds = post(server.http_port, body, headers)
    done.set()
    thread.join(60)
    result.update(status=status, seconds=round(seconds, 3), answer=answer[:120].decode(errors="replace"))
    result["bystander_posts"] = len(latencies)
    result["bystander_max_seconds"] = round(max(latencies), 3) if latencies else None
    return result


def spans_case(server: Server, count: int) -> dict[str, Any]:
    """One request of `count` tiny spans."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(count):
        scope.spans.add(trace_id=b"\x11" * 16, span_id=(i + 1).to_bytes(8, "big"), name="s")
    body = request.SerializeToString()
    before = rss_mb(server.pid)
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {server.producer_key}"}
    status, answer, seconds = post(server.http_port, body, headers)
    return {
        "spans": count,
        "body_bytes": len(body),
        "status": status,
        "seconds": round(seconds, 3),
        "answer": answer[:160].decode(errors="replace"),
        "rss_mb_before": before,
        "rss_mb_after": rss_mb(server.pid),
    }


def stalled_case(server: Server, count: int) -> dict[str, Any]:
    """`count` connections with half a request head; what others get meanwhile, and when they are all closed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1000)), hard))
    partial = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    started = time.monotonic()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((HOST, server.http_port), timeout=10)
        sock.sendall(partial)
        sockets.append(sock)
    opened = time.monotonic() - started
    record = b'{"records": [{"type": "event", "name": "meanwhile"}]}'
    auth = {"content-type": "application/json", "authorization": f"Bearer {server.producer_key}"}
    meanwhile = []
    for _ in range(5):
        conn = http.client.HTTPConnection(HOST, server.http_port, timeout=30)
        t = time.monotonic()
        conn.request("GET", "/healthz")
        health = conn.getresponse().status
        conn.close()
        status, _, seconds = post(server.http_port, record, auth, timeout=30)
        meanwhile.append({"healthz": health, "healthz_seconds": round(time.monotonic() - t - seconds, 3),
                          "post": status, "post_seconds": round(seconds, 3)})  # fmt: skip
        time.sleep(0.5)
    selector = selectors.DefaultSelector()  # epoll: thousands of sockets
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    open_set = set(sockets)
    last_closed = None
    while open_set and time.monotonic() - started < 120:
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data or b"408" in data:
                selector.unregister(sock)
                open_set.discard(sock)
                sock.close()
                last_closed = time.monotonic() - started
    for sock in open_set:
        sock.close()
    selector.close()
    return {
        "connections": count,
        "seconds_to_open": round(opened, 2),
        "meanwhile": meanwhile,
        "still_open_after_120_s": len(open_set),
        "all_closed_after_seconds": round(last_closed, 2) if last_closed is not None and not open_set else None,
    }


def main() -> None:
    """Run the scenarios against one fresh server; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gzip-mib", type=int, nargs="*", default=[1, 8, 64])
    parser.add_argument("--spans", type=int, default=1_800_000, help="0 to skip the span scenario")
    parser.add_argument("--stalled", type=int, default=5000, help="0 to skip the stalled-heads scenario")
    args = parser.parse_args()
    server = Server({})
    try:
        server.create_project()
        bystander_key = server.producer_key
        server.create_project()  # the hostile project (create_project keeps the last one's keys)
        server.start()
        out: dict[str, Any] = {"gzip": [], "spans": None, "stalled": None}
        for mib in args.gzip_mib:
            log(f"gzip members, {mib} MiB")
            out["gzip"].append(gzip_case(server, bystander_key, mib))
        if args.spans:
            log(f"{args.spans} spans in one request")
            out["spans"] = spans_case(server, args.spans)
        if args.stalled:
            log(f"{args.stalled} stalled request heads")
            out["stalled"] = stalled_case(server, args.stalled)
        print(json.dumps(out, indent=2))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
