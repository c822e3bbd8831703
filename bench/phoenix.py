"""Side by side: LoopKit against Arize Phoenix, the same pre-built spans and load generator, one run.

Phoenix (`pip install arize-phoenix`) is the peer named in `shared/design/benchmarks.md`: the same
stack (Starlette, SQLAlchemy, SQLite, grpcio). This command

1. creates a virtual environment for Phoenix on demand (`bench/.venvs/phoenix`, git-ignored) and
   installs `arize-phoenix` into it (`--phoenix-version` pins one);
2. builds the batches once (`bench/payloads.py`), exactly as `bench/ingest.py` does;
3. for each protocol and repeat, runs LoopKit (`bench/ingest.py`'s run) and then Phoenix, each as its
   own process on free 127.0.0.1 ports over a fresh temporary directory, with the same senders
   (8 keep-alive HTTP connections or 8 gRPC channels sending the same bytes);
4. times each from the first send until every span is queryable. Phoenix acknowledges before it has
   written (it queues spans in memory), so its clock runs until a read-only `count(*)` of its `spans`
   table (in `PHOENIX_WORKING_DIR/phoenix.db`) reaches the number sent; after the clock stops, its
   GraphQL API is asked for the default project's span count as a cross-check;
5. prints JSON with both results and the ratio LoopKit / Phoenix of the spans per second (medians).

Phoenix runs with its telemetry off, bound to 127.0.0.1, on a temporary working directory.

Usage: `python bench/phoenix.py --spans 20000 [--protocol http-proto,grpc] [--repeat 1]`
(Phoenix drains a few hundred spans a second here, so 20,000 spans take about a minute each).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ingest
import orjson
import payloads

VENV = Path(__file__).resolve().parent / ".venvs" / "phoenix"
PROTOCOLS = ("http-proto", "grpc")


def ensure_venv(version: str | None) -> Path:
    """The Phoenix virtual environment's python, created and installed on first use."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('arize-phoenix'))"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0 and (version is None or found.stdout.strip() == version):
            return python
    ingest.log(f"installing arize-phoenix{'==' + version if version else ''} into {VENV} (a few minutes) ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    spec = f"arize-phoenix=={version}" if version else "arize-phoenix"
    subprocess.run([str(python), "-m", "pip", "install", "-q", spec], check=True)
    return python


@dataclass
class PhoenixServer:
    """`phoenix serve` as its own process over a temporary working directory, loopback only."""

    python: Path

    def __post_init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="phoenix-bench-"))
        self.http_port, self.grpc_port = ingest.free_ports(2)
        self.producer_key = "unused"  # Phoenix without auth ignores the header the senders add
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def db_path(self) -> Path:
        """Phoenix's SQLite file."""
        return self.data_dir / "phoenix.db"

    @property
    def pid(self) -> int:
        """The server's process ID."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 180.0) -> None:
        """Start Phoenix and wait until /healthz answers."""
        env = {
            **os.environ,
            "PHOENIX_HOST": ingest.HOST,
            "PHOENIX_PORT": str(self.http_port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.data_dir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        env.pop("PYTHONPATH", None)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "phoenix.server.main", "serve"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"phoenix exited with {self.proc.returncode}: {self.log_tail()}")
            if self._get("/healthz")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"phoenix did not start within {timeout}s: {self.log_tail()}")

    def _get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(ingest.HOST, self.http_port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def graphql_span_count(self) -> int | None:
        """The default project's span count through Phoenix's GraphQL API (None if it cannot tell)."""
        query = b'{"query": "{ projects { edges { node { name recordCount } } } }"}'
        conn = http.client.HTTPConnection(ingest.HOST, self.http_port, timeout=60)
        try:
            conn.request("POST", "/graphql", body=query, headers={"content-type": "application/json"})
            doc = orjson.loads(conn.getresponse().read())
            return sum(e["node"]["recordCount"] for e in doc["data"]["projects"]["edges"])
        except (OSError, KeyError, TypeError, ValueError):
            return None
        finally:
            conn.close()

    def count_spans(self) -> int:
        """Spans stored so far, read-only from Phoenix's SQLite file."""
        if not self.db_path.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)) as conn:
                return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])
        except sqlite3.OperationalError:  # the table is created at startup; before that there is nothing
            return 0

    def log_tail(self, chars: int = 2000) -> str:
        """The end of Phoenix's output."""
        return ingest.tail(self.log_path, chars)

    def cleanup(self) -> None:
        """SIGTERM, SIGKILL after 30 s, then delete the working directory."""
        if self.proc is not None:
            ingest.terminate(self.proc)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def run_phoenix(
    python: Path, protocol: str, data: payloads.Payloads, concurrency: int, timeout: float, nice: int = 0
) -> dict:
    """One timed run against a fresh Phoenix: first send until every span is in its database."""
    batches = data.batches[ingest.FORMAT_OF[protocol]]
    server = PhoenixServer(python)
    try:
        server.start()
        ingest.renice(server.pid, nice)
        stats = ingest.SendStats()
        go = threading.Event()
        deadline = time.monotonic() + timeout
        work = ingest.Work(batches, ingest.batch_sizes(data, batches), deadline)
        threads = ingest.start_senders(server, protocol, work, stats, go, concurrency)
        cpu0, t0 = ingest.process_cpu_seconds(server.pid), time.monotonic()
        go.set()
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0) + ingest.REQUEST_TIMEOUT + 5)
        t_acked = time.monotonic()
        expected = data.spans - stats.failed_spans - stats.rejected_spans
        stored = ingest.wait_stored(server.count_spans, expected, deadline + 600, 0.2)
        seconds = time.monotonic() - t0
        cpu = ingest.process_cpu_seconds(server.pid) - cpu0
        return {
            "system": "phoenix",
            "protocol": protocol,
            "spans": data.spans,
            "seconds": round(seconds, 2),
            "ack_seconds": round(t_acked - t0, 2),
            "spans_per_s": round(stored / seconds, 1),
            "stored": stored,
            "graphql_span_count": server.graphql_span_count(),
            "server_cpu_s": round(cpu, 2),
            "spans_per_server_cpu_s": round(stored / cpu, 1) if cpu > 0 else 0.0,
            "server_peak_rss_mb": round(ingest.peak_rss_mb(server.pid), 1),
            "errors": stats.failed_batches,
            "retries": stats.retries,
            "error_reasons": dict(stats.reasons.most_common(3)),
            "complete": stored == data.spans,
        }
    finally:
        server.cleanup()


KEEP = ("protocol", "spans", "seconds", "ack_seconds", "spans_per_s", "stored", "server_cpu_s",
        "spans_per_server_cpu_s", "server_peak_rss_mb", "errors", "retries", "complete")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Build payloads, run LoopKit then Phoenix per protocol and repeat, print JSON with the ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", default="http-proto,grpc", help="comma-separated: http-proto, grpc")
    p.add_argument("--spans", type=int, default=20_000)
    p.add_argument("--batch-spans", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0, help="give up sending after this many seconds")
    p.add_argument("--nice", type=int, default=0, help="priority of both servers and the client (as bench/ingest.py)")
    p.add_argument("--phoenix-version", help="install this arize-phoenix version (default: the newest)")
    p.add_argument("--out", type=Path, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    protocols = args.protocol.split(",")
    if not set(protocols) <= set(PROTOCOLS) or args.spans < 1 or args.repeat < 1:
        p.error("--protocol takes http-proto and/or grpc; --spans and --repeat must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    python = ensure_venv(args.phoenix_version)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    data = payloads.build(args.spans, args.batch_spans, {"proto"})
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for protocol in protocols:
            ingest.log(f"run {rep + 1}/{args.repeat} {protocol}: loopkit ...")
            lk = ingest.run_once(protocol, data, ingest.RunOptions(args.concurrency, args.timeout, {}, nice=args.nice))
            runs.append({"system": "loopkit", **{k: lk[k] for k in KEEP}})
            ingest.log(f"  loopkit {lk['spans_per_s']:.0f} spans/s; phoenix {version} ...")
            runs.append(run_phoenix(python, protocol, data, args.concurrency, args.timeout, args.nice))
            ingest.log(f"  phoenix {runs[-1]['spans_per_s']:.0f} spans/s")
    summary = {}
    for protocol in protocols:

        def median(system: str, key: str, protocol: str = protocol) -> float:
            return statistics.median(r[key] for r in runs if r["system"] == system and r["protocol"] == protocol)

        summary[protocol] = {
            "loopkit_spans_per_s": median("loopkit", "spans_per_s"),
            "phoenix_spans_per_s": median("phoenix", "spans_per_s"),
            "ratio_spans_per_s": round(median("loopkit", "spans_per_s") / median("phoenix", "spans_per_s"), 1),
            "loopkit_server_cpu_s": median("loopkit", "server_cpu_s"),
            "phoenix_server_cpu_s": median("phoenix", "server_cpu_s"),
            "ratio_server_cpu": round(median("phoenix", "server_cpu_s") / median("loopkit", "server_cpu_s"), 1),
        }
    report = {
        "benchmark": "phoenix-side-by-side",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "phoenix_version": version,
        "loopkit": ingest.code_version(),
        "settings": {
            "spans": args.spans,
            "batch_spans": args.batch_spans,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
        },  # fmt: skip
        "summary": summary,
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if all(r["complete"] and not r["errors"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
