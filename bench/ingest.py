"""End-to-end ingest throughput of a real `loopkit serve` process (see docs/benchmarks.md).

Realistic OTLP batches are built *before* timing (bench/payloads.py). Each run then:

1. starts `python -m loopkit_core.cli serve` as its own process on free 127.0.0.1 ports over a
   fresh temporary data directory, and creates a project with `loopkit projects create`;
2. opens C connections (threads with `http.client` keep-alive connections, or gRPC channels that
   do not share a subchannel) and connects them before the clock starts;
3. sends every pre-serialised batch and measures from the first send until every span is
   queryable: the server acknowledges only committed data, and the row count is then confirmed
   read-only with sqlite3 on the project file; after the clock stops a sample of traces is read
   back through `GET /v1/telemetry` (agent key) and compared span by span with what was sent;
4. reports wall seconds, spans/s, server CPU seconds and peak RSS (from /proc), the client's
   own CPU, the machine's CPU use, and error/retry counts; then stops the server (SIGTERM, then
   SIGKILL) and deletes the data directory.

Usage (one command per benchmark; JSON on stdout, progress on stderr):

    python bench/ingest.py --protocol http-proto --spans 200000
    python bench/ingest.py --protocol all --spans 200000 --repeat 3
    python bench/ingest.py --protocol grpc --spans 100000 --py-spy /tmp/prof   # profile, not timed
    python bench/ingest.py --protocol http-proto,grpc --spans 100000 --repeat 3 --compare-code DIR   # A/B
    python bench/ingest.py --protocol http-proto --spans 50000 --duration 300   # sustained: flatness over time
    python bench/ingest.py --protocol grpc --spans 50000 --duration 300 --database-url postgresql+psycopg://...
    python bench/ingest.py --protocol http-proto,grpc --signal traces,logs --spans 100000 --repeat 3   # logs too

Protocols: `http-proto`, `http-json` (OTLP/JSON), `grpc` (raw bytes on TraceService/Export),
`records` (LoopKit's plain records shape). With `--repeat K` every protocol runs K times,
interleaved round-robin, and the summary holds the median of each number.

Sustained mode (`--duration SECONDS`) sends without pause for that long: the --spans batches over and over, each
round with new trace IDs and every timestamp moved so a batch ends when it is sent (the store fills in wall-clock
order). The run is cut into `--slices N` equal time slices (default 10); at each boundary the report has the spans
acknowledged per second in the slice, the store's record count and size on disk (bench/store_stats.py) and the
server's RSS and CPU per span. It also gives `first_10pct` and `last_10pct` (spans acknowledged per second in the
first and last tenth of the run), `last_vs_first` (their ratio: 1.0 is flat), `cpu_per_span_last_vs_first` (the
server's CPU per span in the last slice over the first: less sensitive to other jobs on a shared machine), the
overall rate, peak RSS, and whether every acknowledged span was stored (`all_acked_stored`, by count). HTTP
protobuf, OTLP/JSON, gRPC and records; SQLite or PostgreSQL (`--database-url`, the run's own schemas, dropped
after).

`--signal logs` sends the same work as OTLP logs instead (one correlated log record per span, bench/payloads.py)
to /v1/logs or LogsService/Export (protocols `http-proto`, `http-json`, `grpc`); `--signal traces,logs` runs
both, interleaved, labelled `logs:<protocol>` for logs. For logs, "spans" in the report counts log records.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson
import payloads
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from store_stats import StoreStats

PROTOCOLS = ("http-proto", "http-json", "grpc", "records")
FORMAT_OF = {"http-proto": "proto", "http-json": "json", "grpc": "proto", "records": "records"}
CONTENT_TYPE = {"http-proto": "application/x-protobuf", "http-json": "application/json", "records": "application/json"}
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_GRPC_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
SIGNALS = ("traces", "logs")
LOGS_PREFIX = "logs:"  # a run of the logs signal: "logs:<protocol>"
LOGS_FORMAT_OF = {"http-proto": "logs-proto", "http-json": "logs-json", "grpc": "logs-proto"}


def is_logs(run: str) -> bool:
    """Whether a run (protocol label) sends logs."""
    return run.startswith(LOGS_PREFIX)


def wire_of(run: str) -> str:
    """The transport and encoding of a run: http-proto, http-json, grpc or records."""
    return run.removeprefix(LOGS_PREFIX)


def format_of(run: str) -> str:
    """Which pre-built batches a run sends."""
    return LOGS_FORMAT_OF[wire_of(run)] if is_logs(run) else FORMAT_OF[run]


HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_ATTEMPTS = 20  # per batch, for retryable answers (503/429/UNAVAILABLE) and broken connections
REQUEST_TIMEOUT = 120.0


def log(message: str) -> None:
    """Progress on stderr (stdout is the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Live child processes of a process, recursively (the server's decode workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def process_cpu_seconds(pid: int, with_children: bool = True) -> float:
    """User + system CPU seconds of a process (all its threads) and its live child processes, from /proc."""
    total = 0.0
    for p in [pid, *(descendants(pid) if with_children else [])]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a child that ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    return total


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of a process: tid -> (thread name, seconds)."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def python_thread_names(pid: int) -> dict[int, str]:
    """OS thread ID -> Python thread name, from `py-spy dump` (empty when py-spy is not installed).

    Python 3.11 does not name OS threads, so /proc shows every thread as `python`.
    """
    if shutil.which("py-spy") is None:
        return {}
    try:
        out = subprocess.run(
            ["py-spy", "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"$', out, re.MULTILINE)}


def cpu_by_thread_group(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], names: dict[int, str]
) -> dict[str, float]:
    """CPU seconds spent between two readings, summed per thread name without its number (a pool)."""
    groups: Counter[str] = Counter()
    for tid, (os_name, seconds) in after.items():
        spent = seconds - before.get(tid, (os_name, 0.0))[1]
        name = names.get(tid) or f"{os_name} (native thread)"
        groups[re.sub(r"[-_ ]*\d+$", "", name) or name] += spent
    return {k: round(v, 2) for k, v in groups.most_common() if v >= 0.005}


class StageReading:
    """How busy each stage of the server was since the last reading, in cores: the saturated one sets the rate.

    The server's busiest thread (under sustained ingest, the project's writer thread: one commit at a time), its
    decode worker processes together, and the whole machine.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._last = self._snapshot()

    def _snapshot(self) -> tuple[float, dict[int, tuple[str, float]], float, float]:
        workers = process_cpu_seconds(self.pid) - process_cpu_seconds(self.pid, with_children=False)
        return time.monotonic(), thread_cpu_seconds(self.pid), workers, machine_busy_seconds()

    def read(self) -> dict[str, float]:
        """Cores used since the previous reading: busiest server thread, decode workers, machine."""
        now = self._snapshot()
        (t0, threads0, workers0, busy0), (t1, threads1, workers1, busy1) = self._last, now
        self._last = now
        seconds = max(t1 - t0, 1e-9)
        busiest = max((cpu - threads0.get(tid, ("", 0.0))[1] for tid, (_, cpu) in threads1.items()), default=0.0)
        return {
            "busiest_thread_cores": round(busiest / seconds, 2),
            # A worker that was replaced since the last reading takes its seconds with it: never below 0.
            "decode_workers_cores": round(max(workers1 - workers0, 0.0) / seconds, 2),
            "machine_busy_cores": round((busy1 - busy0) / seconds, 2),
        }


def peak_rss_mb(pid: int, field: str = "VmHWM", with_children: bool = True) -> float:
    """VmHWM (peak resident set size; or another /proc status field such as VmRSS) in MiB, summed over the
    process and its live child processes (a sum of peaks: an upper bound of the peak of the sum)."""
    total = 0.0
    for p in [pid, *(descendants(pid) if with_children else [])]:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0) / 1024
        except OSError:
            continue
    return total


def process_io(pid: int) -> dict[str, int]:
    """/proc/<pid>/io counters (wchar: bytes passed to write syscalls; write_bytes: sent to storage)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except OSError:
        return {}


def postgres_cpu_seconds() -> float:
    """CPU seconds of every process named `postgres` on this machine (server, backends, WAL writer, checkpointer).

    0.0 when PostgreSQL runs elsewhere; other clients of the same local server count too.
    """
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:
            continue  # ended meanwhile
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (/proc/loadavg): how busy a shared machine was."""
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


# --------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports the OS considers free on 127.0.0.1 right now (all held open together, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tail(path: Path, chars: int = 2000) -> str:
    """The end of a log file ("" when it is not there)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM (a server drains), SIGKILL if it is still there after 30 s; always reaps it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        log(f"process {proc.pid} ignored SIGTERM for 30 s; killing it")
        proc.kill()
        proc.wait(10)


class Server:
    """`loopkit serve` as a separate process over a temporary data directory."""

    def __init__(self, env_overrides: dict[str, str], keep_data: bool = False) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="loopkit-bench-"))
        self.keep_data = keep_data
        self.env = {**os.environ, **env_overrides}
        if self.env.get("LOOPKIT_DATABASE_URL") and not self.env.get("LOOPKIT_DATABASE_SCHEMA_PREFIX"):
            # PostgreSQL: this run's schemas, dropped by cleanup().
            self.env["LOOPKIT_DATABASE_SCHEMA_PREFIX"] = f"bench_{os.urandom(4).hex()}_"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = self.grpc_port = 0
        self.project_id = self.producer_key = self.agent_key = ""
        self.log_path = self.data_dir / "server.log"

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "loopkit_core.cli", *args]

    def create_project(self) -> None:
        """Create the benchmark's project with the operator CLI."""
        out = subprocess.run(
            self._cli("projects", "create", "bench", "--data-dir", str(self.data_dir), "--json"),
            env=self.env,
            cwd=self.data_dir,  # not the repo: `-m` puts the working directory first on sys.path
            capture_output=True,
            timeout=60,
            check=True,
        )
        created = json.loads(out.stdout)
        self.project_id, self.producer_key, self.agent_key = (
            created["project_id"],
            created["producer_key"],
            created["agent_key"],
        )

    @property
    def db_path(self) -> Path:
        """The project's SQLite file."""
        return self.data_dir / "projects" / f"{self.project_id}.db"

    @property
    def stats(self) -> StoreStats:
        """The project's record count and size on disk, read beside the server (bench/store_stats.py)."""
        if getattr(self, "_stats", None) is None or self._stats.project_id != self.project_id:
            self._stats = StoreStats(self.data_dir, self.project_id, self.env)
        return self._stats

    def stored_rows(self) -> int:
        """Records stored in the project: the SQLite file read-only, or its PostgreSQL schema."""
        return self.stats.records()

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start the server and wait until it prints its serving line and /healthz answers.

        Ports are picked free and then bound by the server, so another process may take one in between (parallel
        tests do): a server that could not bind is started again on new ports, up to `attempts` times.
        """
        for attempt in range(1, attempts + 1):
            try:
                self._start(timeout)
                return
            except RuntimeError as exc:
                if attempt == attempts or "could not bind" not in str(exc):
                    raise

    def _start(self, timeout: float) -> None:
        """One start on newly picked ports (see start)."""
        self.http_port, self.grpc_port = free_ports(2)
        cmd = self._cli(
            "serve",
            "--data-dir", str(self.data_dir),
            "--host", HOST,
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--log-level", "warning",
        )  # fmt: skip
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=self.env, cwd=self.data_dir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            if b"LoopKit serving" in self.log_path.read_bytes() and self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start within {timeout}s: {self.log_tail()}")

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.http_port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's output."""
        return tail(self.log_path, chars)

    @property
    def pid(self) -> int:
        """The server's process ID."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (the server drains), SIGKILL if it is still there after 30 s; always reaps it."""
        if self.proc is not None:
            terminate(self.proc)

    def cleanup(self) -> None:
        """Stop the server and delete the data directory (unless asked to keep it)."""
        self.stop()
        if self.keep_data:
            log(f"data kept in {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            prefix = self.env.get("LOOPKIT_DATABASE_SCHEMA_PREFIX", "")
            if self.env.get("LOOPKIT_DATABASE_URL") and prefix.startswith("bench_"):
                store = self.stats._pg_store()
                with store._pg.begin() as conn:
                    query = "SELECT nspname FROM pg_namespace WHERE left(nspname, length(%s)) = %s"
                    for (name,) in conn.exec_driver_sql(query, (prefix, prefix)).all():
                        conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        if getattr(self, "_stats", None) is not None:
            self._stats.close()

    def api_get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        """GET an API path with the agent key; (status, parsed JSON)."""
        conn = http.client.HTTPConnection(HOST, self.http_port, timeout=REQUEST_TIMEOUT)
        try:
            query = urllib.parse.urlencode(params)
            conn.request(
                "GET", f"{path}?{query}" if query else path, headers={"authorization": f"Bearer {self.agent_key}"}
            )
            resp = conn.getresponse()
            return resp.status, orjson.loads(resp.read())
        finally:
            conn.close()


# --------------------------------------------------------------------------------------------
# Senders
# --------------------------------------------------------------------------------------------


@dataclass
class SendStats:
    """What the client saw, shared by all sender threads."""

    requests: int = 0
    retries: int = 0
    failed_batches: int = 0
    failed_spans: int = 0
    rejected_spans: int = 0
    acked_spans: int = 0  # spans in requests answered 200/OK (rejected ones included)
    reasons: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, **counts: int) -> None:
        """Add to counters; a `reason` is kept for the report."""
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def reason(self, text: str) -> None:
        """Remember why something went wrong (counted, first 200 characters)."""
        with self.lock:
            self.reasons[text[:200]] += 1


class Work:
    """Hands out batch indexes to the sender threads until all are taken or the deadline passes."""

    def __init__(self, batches: list[bytes], spans_per_batch: list[int], deadline: float) -> None:
        self.batches = batches
        self.spans_per_batch = spans_per_batch
        self.deadline = deadline
        self._next = itertools.count()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The next batch index, or None when there is nothing left to send."""
        with self._lock:
            i = next(self._next)
        return i if i < len(self.batches) and time.monotonic() < self.deadline else None

    def get(self, i: int) -> tuple[bytes, int]:
        """Batch i's body and span count."""
        return self.batches[i], self.spans_per_batch[i]


class Cycling(Work):
    """Sends the pre-built batches over and over until the deadline, each round with new trace IDs.

    Round r gives every trace ID a new value (`payloads.round_trace_id`), round 0 included (an unchanged original could
    equal a later round's copy), so every span is new to the server (record IDs hash the trace ID) and the store
    grows as under real traffic. By default the new IDs are random-looking, as W3C trace IDs are: the store's
    trace index takes each one at a random place. `trace_ids="stamped"` instead overwrites the first two bytes
    with r (what this benchmark did before 2026-12-06): a round's traces then share a prefix, land side by side
    at the index's right edge, and flatter the store. Every timestamp of a batch is moved by the same amount so
    that its latest span ends at the moment it is sent, as an exporter sends what just finished: the store fills
    in wall-clock order, not by replaying one stretch of time.
    """

    def __init__(
        self,
        batches: list[bytes],
        spans_per_batch: list[int],
        deadline: float,
        fmt: str,
        spread: float | None = None,
        trace_ids: str = "random",
    ) -> None:
        super().__init__(batches, spans_per_batch, deadline)
        if trace_ids not in payloads.TRACE_ID_MODES:
            raise ValueError(f"trace_ids must be one of {payloads.TRACE_ID_MODES}")
        self.fmt = fmt
        self.trace_ids = trace_ids
        self.offsets = [trace_id_offsets(body, fmt) for body in batches]
        self.times = [timestamp_offsets(body, fmt) for body in batches]
        if spread is not None:
            self.times = [squeeze(offsets, latest, int(spread * 1e9)) for offsets, latest in self.times]

    def take(self) -> int | None:
        """The next send's sequence number, until the deadline."""
        with self._lock:
            n = next(self._next)
        return n if time.monotonic() < self.deadline and n < len(self.batches) * 65536 else None

    def get(self, n: int) -> tuple[bytes, int]:
        """The body of send n: batch n mod B with round n div B's trace IDs, its spans ending now."""
        i, rnd = n % len(self.batches), n // len(self.batches)
        body = bytearray(self.batches[i])
        proto = self.fmt == "proto"
        width = 16 if proto else 32
        renamed: dict[bytes, bytes] = {}
        for offset in self.offsets[i]:
            old = bytes(body[offset : offset + width])
            new = renamed.get(old)
            if new is None:
                hex_id = payloads.round_trace_id(old.hex() if proto else old.decode(), rnd, self.trace_ids)
                new = renamed[old] = bytes.fromhex(hex_id) if proto else hex_id.encode()
            body[offset : offset + width] = new
        offsets, latest = self.times[i]
        shift = time.time_ns() - latest
        for offset, value in offsets:
            if proto:
                body[offset : offset + 8] = (value + shift).to_bytes(8, "little")
            else:  # 19 decimal digits until the year 2286
                body[offset : offset + 19] = b"%d" % (value + shift)
        return bytes(body), self.spans_per_batch[i]


def squeeze(offsets: list[tuple[int, int]], latest: int, spread_ns: int) -> tuple[list[tuple[int, int]], int]:
    """A batch's timeline scaled towards its newest end so its oldest timestamp is at most `spread_ns` before it.

    Order is kept and durations shrink by the same factor: the issue's load of batches whose start times lie
    within the last ~10 s, instead of the payload's own (long agent spans start minutes before their batch ends).
    """
    oldest = min(value for _, value in offsets)
    if latest - oldest <= spread_ns:
        return offsets, latest
    return [(offset, latest - (latest - value) * spread_ns // (latest - oldest)) for offset, value in offsets], latest


def trace_id_offsets(body: bytes, fmt: str) -> list[int]:
    """Where each trace ID starts in a serialised batch (raw bytes in protobuf, hex text in JSON)."""
    if fmt == "proto":
        ids = {s.trace_id for s in _proto_spans(body)}
    else:
        doc = orjson.loads(body)
        if fmt == "records":
            ids = {r["trace_id"].encode() for r in doc["records"]}
        else:
            spans = (s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"])
            ids = {s["traceId"].encode() for s in spans}
    return _find_all(body, ids)


def timestamp_offsets(body: bytes, fmt: str) -> tuple[list[tuple[int, int]], int]:
    """Where each span and event timestamp sits in a serialised batch, with its value; and the latest end.

    Protobuf holds them as fixed64 (8 bytes, little-endian), OTLP/JSON as decimal strings, the records
    shape as a decimal `timestamp` (no end time: it sends a duration).
    """
    if fmt == "proto":
        spans = list(_proto_spans(body))
        values = {t for s in spans for t in (s.start_time_unix_nano, s.end_time_unix_nano)}
        values |= {e.time_unix_nano for s in spans for e in s.events}
        latest = max(s.end_time_unix_nano for s in spans)
        encoded = {v.to_bytes(8, "little"): v for v in values}
        skip = 0
    else:
        doc = orjson.loads(body)
        if fmt == "records":
            values = {r["timestamp"] for r in doc["records"]}
            latest = max(r["timestamp"] + int(r["duration_ms"] * 1e6) for r in doc["records"])
            encoded = {b'"timestamp":%d' % v: v for v in values}
            skip = len('"timestamp":')
        else:
            spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
            texts = {s[k] for s in spans for k in ("startTimeUnixNano", "endTimeUnixNano")}
            texts |= {e["timeUnixNano"] for s in spans for e in s.get("events", ())}
            values = {int(t) for t in texts}
            latest = max(int(s["endTimeUnixNano"]) for s in spans)
            encoded = {b'"%d"' % v: v for v in values}
            skip = 1
    if any(len(str(v)) != 19 for v in values):
        raise ValueError("timestamps must have 19 decimal digits to be re-stamped in place")
    found = []
    for pattern, value in encoded.items():
        found += [(offset + skip, value) for offset in _find_all(body, {pattern})]
    return found, latest


def _proto_spans(body: bytes) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(body)
    return (s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)


def _find_all(body: bytes, patterns: set[bytes]) -> list[int]:
    offsets = []
    for pattern in patterns:
        start = body.find(pattern)
        while start != -1:
            offsets.append(start)
            start = body.find(pattern, start + 1)
    return offsets


def _partial(protocol: str, data: bytes, spans: int) -> int:
    """Spans the server rejected in a 200/OK answer (OTLP partial success, records `rejected`)."""
    if is_logs(protocol):
        if wire_of(protocol) in ("http-proto", "grpc"):
            return ExportLogsServiceResponse.FromString(data).partial_success.rejected_log_records if data else 0
        return int((orjson.loads(data) if data else {}).get("partialSuccess", {}).get("rejectedLogRecords", 0) or 0)
    if protocol in ("http-proto", "grpc"):
        return ExportTraceServiceResponse.FromString(data).partial_success.rejected_spans if data else 0
    doc = orjson.loads(data) if data else {}
    if protocol == "records":
        return int(doc.get("rejected", 0)) + max(
            spans - int(doc.get("accepted", spans)) - int(doc.get("rejected", 0)), 0
        )
    return int(doc.get("partialSuccess", {}).get("rejectedSpans", 0) or 0)


def http_sender(server: Server, protocol: str, work: Work, stats: SendStats, go: threading.Event) -> None:
    """One keep-alive HTTP/1.1 connection posting batches until the work runs out."""
    headers = {"Content-Type": CONTENT_TYPE[wire_of(protocol)], "authorization": f"Bearer {server.producer_key}"}
    path = "/v1/logs" if is_logs(protocol) else "/v1/traces"
    conn = http.client.HTTPConnection(HOST, server.http_port, timeout=REQUEST_TIMEOUT)
    conn.connect()
    go.wait()
    try:
        while (i := work.take()) is not None:
            body, spans = work.get(i)
            ok = False
            for attempt in range(MAX_ATTEMPTS):
                if attempt:
                    stats.note(retries=1)
                if time.monotonic() > work.deadline:
                    stats.reason("deadline passed")
                    break
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    stats.reason(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, server.http_port, timeout=REQUEST_TIMEOUT)
                    time.sleep(min(0.1 * 2**attempt, 2.0))
                    continue
                stats.note(requests=1)
                if resp.status == 200:
                    stats.note(rejected_spans=_partial(protocol, data, spans), acked_spans=spans)
                    ok = True
                    break
                stats.reason(f"HTTP {resp.status}: {data[:150]!r}")
                if resp.status not in (429, 503):
                    break  # not retryable
                time.sleep(min(float(resp.getheader("retry-after") or 1), 5.0))
            if not ok:
                stats.note(failed_batches=1, failed_spans=spans)
    finally:
        conn.close()


def grpc_sender(server: Server, protocol: str, work: Work, stats: SendStats, go: threading.Event) -> None:
    """One gRPC channel with its own connection (local subchannel pool) sending raw request bytes."""
    channel = grpc.insecure_channel(
        f"{HOST}:{server.grpc_port}",
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", 128 * 1024 * 1024),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ],
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        method = LOGS_GRPC_METHOD if is_logs(protocol) else GRPC_METHOD
        export = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        metadata = (("authorization", f"Bearer {server.producer_key}"),)
        go.wait()
        while (i := work.take()) is not None:
            body, spans = work.get(i)
            ok = False
            for attempt in range(MAX_ATTEMPTS):
                if attempt:
                    stats.note(retries=1)
                if time.monotonic() > work.deadline:
                    stats.reason("deadline passed")
                    break
                try:
                    data = export(body, metadata=metadata, timeout=REQUEST_TIMEOUT)
                except grpc.RpcError as exc:
                    stats.note(requests=1)
                    code = exc.code() if isinstance(exc, grpc.Call) else None
                    stats.reason(f"gRPC {code}: {exc.details() if isinstance(exc, grpc.Call) else exc}")
                    if code == grpc.StatusCode.UNAVAILABLE:
                        time.sleep(min(0.25 * 2**attempt, 2.0))
                        continue
                    break
                stats.note(requests=1, rejected_spans=_partial(protocol, data, spans), acked_spans=spans)
                ok = True
                break
            if not ok:
                stats.note(failed_batches=1, failed_spans=spans)
    finally:
        channel.close()


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def batch_sizes(data: payloads.Payloads, batches: list[bytes]) -> list[int]:
    """Spans in each pre-built batch (the last one may be short)."""
    return [min(data.batch_spans, data.spans - i * data.batch_spans) for i in range(len(batches))]


def renice(pid: int, nice: int) -> None:
    """Give a server and its children (decode workers) the benchmark's priority."""
    if nice:
        for each in (pid, *descendants(pid)):
            os.setpriority(os.PRIO_PROCESS, each, nice)


def start_senders(
    server: Any, protocol: str, work: Work, stats: SendStats, go: threading.Event, concurrency: int
) -> list[threading.Thread]:
    """Start the sender threads; they open their connections, then wait for `go` (the clock starts after)."""
    sender: Callable[..., None] = grpc_sender if wire_of(protocol) == "grpc" else http_sender
    threads = [
        threading.Thread(target=sender, args=(server, protocol, work, stats, go), name=f"sender-{n}", daemon=True)
        for n in range(concurrency)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # connections are open before the clock starts
    return threads


def wait_stored(count: Callable[[], int], expected: int, until: float, poll: float) -> int:
    """Poll `count` until it reaches `expected` or the monotonic clock passes `until`; the last count."""
    stored = 0
    while time.monotonic() < until:
        stored = count()
        if stored >= expected:
            break
        time.sleep(poll)
    return stored


def verify_via_api(server: Server, sample: dict[str, list[payloads.SampleSpan]], logs: bool = False) -> dict[str, Any]:
    """Read sampled traces back through GET /v1/telemetry and compare them with what was sent.

    For logs, each sampled span's log record is found by the span it was logged in (its parent_span_id), and its
    name is the service's logger, not the span's name.
    """
    started = time.perf_counter()
    checked = mismatches = 0
    problems: list[str] = []
    for trace_id, expected in sample.items():
        status, doc = server.api_get("/v1/telemetry", {"since_minutes": 1440, "limit": 1000, "trace_id": trace_id})
        key = "parent_span_id" if logs else "span_id"
        got = {r[key]: r for r in doc.get("records", [])} if status == 200 else {}
        for span in expected:
            checked += 1
            record = got.get(span.span_id)
            ok = (
                record is not None
                and record["service"] == span.service
                and (record["type"] in ("log", "error") if logs else record["name"] == span.name)
                and (record["status"] == "error") == span.error
                and record["trace_id"] == trace_id
                and record["record_id"].startswith("rec_")
            )
            if not ok:
                mismatches += 1
                if len(problems) < 5:
                    problems.append(f"trace {trace_id} span {span.span_id}: got {record and record.get('name')!r}")
    # One unfiltered page of the maximum size, and its next page through the cursor.
    page_started = time.perf_counter()
    status, doc = server.api_get("/v1/telemetry", {"since_minutes": 1440, "limit": 1000})
    page_ms = (time.perf_counter() - page_started) * 1000
    first_page = len(doc.get("records", [])) if status == 200 else -1
    second_page = -1
    if status == 200 and doc.get("next_cursor"):
        status2, doc2 = server.api_get("/v1/telemetry", {"limit": 1000, "cursor": doc["next_cursor"]})
        second_page = len(doc2.get("records", [])) if status2 == 200 else -1
    return {
        "traces_checked": len(sample),
        "spans_checked": checked,
        "mismatches": mismatches,
        "problems": problems,
        "page_1000_ms": round(page_ms, 1),
        "pages_read": [first_page, second_page],
        "seconds": round(time.perf_counter() - started, 2),
    }


@dataclass
class RunOptions:
    """Knobs of one run."""

    concurrency: int
    timeout: float
    env: dict[str, str]
    keep_data: bool = False
    py_spy: Path | None = None
    py_spy_mode: str = "python"
    py_spy_rate: int = 100
    nice: int = 0


def run_once(protocol: str, data: payloads.Payloads, opts: RunOptions) -> dict[str, Any]:
    """One timed run of one protocol against a fresh server."""
    batches = data.batches[format_of(protocol)]
    server = Server(opts.env, opts.keep_data)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        server.create_project()
        server.start()
        renice(server.pid, opts.nice)
        stats = SendStats()
        go = threading.Event()
        deadline = time.monotonic() + opts.timeout
        work = Work(batches, batch_sizes(data, batches), deadline)
        threads = start_senders(server, protocol, work, stats, go, opts.concurrency)
        if opts.py_spy is not None:
            profiler = start_py_spy(server.pid, opts)
        threads0 = thread_cpu_seconds(server.pid)
        io0 = process_io(server.pid)
        cpu0, client0, busy0 = process_cpu_seconds(server.pid), time.process_time(), machine_busy_seconds()
        main0 = process_cpu_seconds(server.pid, with_children=False)
        pg0 = postgres_cpu_seconds()
        t0 = time.monotonic()
        go.set()
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0) + REQUEST_TIMEOUT + 5)
        t_acked = time.monotonic()
        client_cpu = time.process_time() - client0
        pg_cpu = postgres_cpu_seconds() - pg0  # until the last ack: the row count polls below are the bench's
        if profiler is not None:
            stop_py_spy(profiler)
            profiler = None
        expected = data.spans - stats.failed_spans - stats.rejected_spans
        stored = wait_stored(server.stored_rows, expected, deadline + 60, 0.02)
        t_done = time.monotonic()
        server_cpu = process_cpu_seconds(server.pid) - cpu0
        main_cpu = process_cpu_seconds(server.pid, with_children=False) - main0
        threads1 = thread_cpu_seconds(server.pid)
        io1 = process_io(server.pid)
        busy = machine_busy_seconds() - busy0
        rss = peak_rss_mb(server.pid)
        seconds = t_done - t0
        by_thread = cpu_by_thread_group(threads0, threads1, python_thread_names(server.pid))
        api = verify_via_api(server, data.sample, is_logs(protocol))
        alive = any(t.is_alive() for t in threads)
        result = {
            "protocol": protocol,
            "signal": "logs" if is_logs(protocol) else "traces",
            "spans": data.spans,
            "batches": len(batches),
            "spans_per_batch": data.batch_spans,
            "concurrency": opts.concurrency,
            "payload_mb": round(sum(len(b) for b in batches) / 2**20, 1),
            "seconds": round(seconds, 3),
            "ack_seconds": round(t_acked - t0, 3),
            "spans_per_s": round(stored / seconds, 1) if seconds > 0 else 0.0,
            "stored": stored,
            "server_cpu_s": round(server_cpu, 2),
            # Less sensitive than spans/s to other jobs on a shared machine.
            "spans_per_server_cpu_s": round(stored / server_cpu, 1) if server_cpu > 0 else 0.0,
            "server_cores": round(server_cpu / seconds, 2),
            # The server process alone; the rest of server_cpu_s is its decode worker processes.
            "server_main_process_cpu_s": round(main_cpu, 2),
            "decode_worker_processes": len(descendants(server.pid)),
            # Threads that ended before the last reading are missing here (not from server_cpu_s).
            "server_cpu_s_by_thread": by_thread,
            "server_peak_rss_mb": round(rss, 1),  # the server and its decode workers
            "server_main_process_peak_rss_mb": round(peak_rss_mb(server.pid, with_children=False), 1),
            # Bytes the server handed to write() (WAL frames, checkpoints, responses) and those that
            # reached the storage layer; compare with payload_mb.
            "server_wchar_mb": round((io1.get("wchar", 0) - io0.get("wchar", 0)) / 2**20, 1),
            "server_disk_write_mb": round((io1.get("write_bytes", 0) - io0.get("write_bytes", 0)) / 2**20, 1),
            "client_cpu_s": round(client_cpu, 2),
            "client_cores": round(client_cpu / seconds, 2),
            "machine_cpu_util": round(busy / ((os.cpu_count() or 1) * seconds), 2),
            # CPU used by anything else on the machine meanwhile (other jobs make a run noisy).
            "others_cpu_s": round(max(busy - server_cpu - client_cpu - pg_cpu, 0.0), 2),
            # PostgreSQL's processes (0 on SQLite, or with PostgreSQL on another machine), up to the last ack.
            "postgres_cpu_s": round(pg_cpu, 2),
            "postgres_cores": round(pg_cpu / (t_acked - t0), 2) if t_acked > t0 else 0.0,
            "requests": stats.requests,
            "errors": stats.failed_batches,
            "retries": stats.retries,
            "rejected_spans": stats.rejected_spans,
            "error_reasons": dict(stats.reasons.most_common(5)),
            "complete": stored == data.spans and not alive,
            "server_log_tail": server.log_tail(1500) if stats.failed_batches or stored != data.spans else "",
            "api_check": api,
        }
        if opts.py_spy is not None:
            result["profile"] = str(opts.py_spy)
        return result
    finally:
        if profiler is not None:
            stop_py_spy(profiler)
        server.cleanup()


def sustained_marks(duration: float, slices: int, every: float) -> list[tuple[float, str]]:
    """When the sustained loop reads the server, in seconds from the start: (t, kind), in time order.

    Kinds: "slice" at each slice boundary (the store is counted and measured there), "decile" at 10% and 90% of
    the run (for first_10pct / last_10pct when they are not slice boundaries), "sample" every `every` seconds.
    """
    marks: dict[float, str] = {}
    for n in range(1, int(duration // every) + 1 if every > 0 else 0):
        marks[round(n * every, 6)] = "sample"
    for t in (0.1 * duration, 0.9 * duration):
        marks[round(t, 6)] = "decile"
    for k in range(1, slices + 1):
        marks[round(duration * k / slices, 6)] = "slice"  # a boundary wins over a sample at the same moment
    return sorted(marks.items())


def flatness(readings: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """Spans acknowledged per second in the first and the last 10% of a run, and their ratio.

    `readings` are (t_s, acked_spans) readings in time order, the first at t_s = 0; the reading nearest 10%
    (and 90%) of the duration marks the end (start) of the first (last) tenth.
    """

    def nearest(fraction: float) -> dict[str, Any]:
        return min(readings, key=lambda r: abs(r["t_s"] - fraction * duration))

    first_end, last_start, end = nearest(0.1), nearest(0.9), readings[-1]
    first = first_end["acked_spans"] / first_end["t_s"] if first_end["t_s"] > 0 else 0.0
    span = end["t_s"] - last_start["t_s"]
    last = (end["acked_spans"] - last_start["acked_spans"]) / span if span > 0 else 0.0
    return {
        "first_10pct": round(first, 1),
        "last_10pct": round(last, 1),
        "last_vs_first": round(last / first, 3) if first > 0 else None,
    }


def run_sustained(
    protocol: str,
    data: payloads.Payloads,
    opts: RunOptions,
    duration: float,
    every: float,
    slices: int = 10,
    spread: float | None = None,
    trace_ids: str = "random",
) -> dict:
    """Send for `duration` seconds without pause (batches cycled with new trace IDs, re-stamped to the wall clock).

    The run is cut into `slices` equal time slices; at each boundary it reads the spans acknowledged so far, the
    store's record count and size on disk (bench/store_stats.py), the server's RSS and how busy each stage was
    (StageReading), so throughput, growth, memory and the saturated stage can be read slice by slice. Every
    `every` seconds it also samples RSS and the rate. At the end it waits until every acknowledged span is stored
    (the count check).
    """
    fmt = FORMAT_OF[protocol]
    batches = data.batches[fmt]
    server = Server(opts.env, opts.keep_data)
    try:
        server.create_project()
        server.start()
        renice(server.pid, opts.nice)
        stats = SendStats()
        go = threading.Event()
        work = Cycling(batches, batch_sizes(data, batches), time.monotonic() + duration + 3600, fmt, spread, trace_ids)
        threads = start_senders(server, protocol, work, stats, go, opts.concurrency)
        cpu0, t0 = process_cpu_seconds(server.pid), time.monotonic()
        stages = StageReading(server.pid)
        work.deadline = t0 + duration
        go.set()
        samples: list[dict[str, float]] = []
        boundaries: list[dict[str, Any]] = []
        readings: list[dict[str, Any]] = [{"t_s": 0.0, "acked_spans": 0}]
        last_acked, last_t, prev_cpu = 0, t0, 0.0
        for mark, kind in sustained_marks(duration, slices, every):
            time.sleep(max(t0 + mark - time.monotonic(), 0.0))
            now, acked = time.monotonic(), stats.acked_spans  # first, so the count's own time does not skew it
            readings.append({"t_s": now - t0, "acked_spans": acked})
            if kind == "slice":
                prev = boundaries[-1] if boundaries else {"t_s": 0.0, "acked_spans": 0}
                cpu = process_cpu_seconds(server.pid) - cpu0
                spent, spans = cpu - prev_cpu, acked - prev["acked_spans"]
                prev_cpu = cpu
                count_started = time.monotonic()
                stored, disk = server.stats.records(), server.stats.disk_bytes()
                boundaries.append(
                    {
                        "slice": len(boundaries) + 1,
                        "t_s": round(now - t0, 2),
                        "acked_spans": acked,
                        "spans_per_s": round((acked - prev["acked_spans"]) / max(now - t0 - prev["t_s"], 1e-9), 1),
                        "stored_records": stored,
                        "disk_mb": round(disk / 2**20, 1),
                        "rss_mb": round(peak_rss_mb(server.pid, "VmRSS"), 1),
                        "server_cpu_s": round(cpu, 1),
                        # The server's CPU per span in the slice: what a span costs as the store grows, much less
                        # sensitive than spans/s to other jobs on a shared machine.
                        "server_cpu_us_per_span": round(spent * 1e6 / spans, 1) if spans else None,
                        **stages.read(),
                        "count_seconds": round(time.monotonic() - count_started, 2),
                    }
                )
                log(f"  slice {boundaries[-1]['slice']}/{slices}: {boundaries[-1]}")
                boundaries[-1]["t_s"] = now - t0  # exact for the next slice's rate; rounded below
            if kind in ("sample", "slice"):
                samples.append(
                    {
                        "t_s": round(now - t0, 1),
                        "rss_mb": round(peak_rss_mb(server.pid, "VmRSS"), 1),
                        "acked_spans": acked,
                        "spans_per_s": round((acked - last_acked) / max(now - last_t, 1e-9), 1),
                        "server_cpu_s": round(process_cpu_seconds(server.pid) - cpu0, 1),
                    }
                )
                last_acked, last_t = acked, now
        for b in boundaries:
            b["t_s"] = round(b["t_s"], 2)
        for t in threads:
            t.join(REQUEST_TIMEOUT + 5)
        t_acked = time.monotonic()
        expected = stats.acked_spans - stats.rejected_spans
        stored = wait_stored(server.stored_rows, expected, t_acked + 120, 0.1)
        seconds = time.monotonic() - t0
        first_minute = [x["rss_mb"] for x in samples if x["t_s"] <= 60] or [samples[0]["rss_mb"]]
        rates = [x["spans_per_s"] for x in samples]
        slice_rates = [b["spans_per_s"] for b in boundaries]
        cpu_first, cpu_last = boundaries[0]["server_cpu_us_per_span"], boundaries[-1]["server_cpu_us_per_span"]
        alive = any(t.is_alive() for t in threads)
        return {
            "protocol": protocol,
            "mode": "sustained",
            "database": "postgresql" if opts.env.get("LOOPKIT_DATABASE_URL") else "sqlite",
            "duration_s": duration,
            "seconds": round(seconds, 1),
            "spans_acked": stats.acked_spans,
            "stored": stored,
            # The count check: every acknowledged span (less any the server rejected in a 200) is stored.
            "all_acked_stored": stored == expected,
            "spans_per_s": round(stored / seconds, 1),
            "spans_acked_per_s": round(stats.acked_spans / duration, 1),
            **flatness(readings, duration),
            "slices": boundaries,
            "slice_spans_per_s": {
                "min": min(slice_rates),
                "median": statistics.median(slice_rates),
                "max": max(slice_rates),
                "last_slice_vs_first": round(slice_rates[-1] / slice_rates[0], 3) if slice_rates[0] else None,
            },
            # Server CPU per span, last slice over first: 1.0 is flat; above 1, a span costs more as the store grows.
            "cpu_per_span_last_vs_first": round(cpu_last / cpu_first, 3) if cpu_first and cpu_last else None,
            "spans_per_s_per_sample": {"median": statistics.median(rates), "first": rates[0], "last": rates[-1]},
            "server_cpu_s": round(process_cpu_seconds(server.pid) - cpu0, 1),
            "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1),
            "rss_mb_end_of_first_minute": max(first_minute),
            "rss_mb_last": samples[-1]["rss_mb"],
            "rss_mb_max_after_first_minute": max(x["rss_mb"] for x in samples),
            "disk_mb_end": round(server.stats.disk_bytes() / 2**20, 1),
            "errors": stats.failed_batches,
            "retries": stats.retries,
            "rejected_spans": stats.rejected_spans,
            "error_reasons": dict(stats.reasons.most_common(5)),
            "complete": stored == expected and not alive,
            "samples": samples,
        }
    finally:
        server.cleanup()


def wait_quiet(
    limit: float, busy_cores: float = 0.3, window: float = 1.0, needed: int = 3
) -> tuple[float, bool | None]:
    """Wait (at most `limit` seconds) until the machine had `needed` quiet windows in a row.

    Other jobs on a shared 2-core machine distort a run; this does not prevent them, it only avoids
    starting while they run. Returns (seconds waited, whether it was quiet; None when not checked).
    """
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < limit:
        before = machine_busy_seconds()
        time.sleep(window)
        quiet = quiet + 1 if (machine_busy_seconds() - before) / window < busy_cores else 0
        if quiet >= needed:
            return round(time.monotonic() - started, 1), True
    return round(time.monotonic() - started, 1), None if limit <= 0 else False


def start_py_spy(pid: int, opts: RunOptions) -> subprocess.Popen[bytes]:
    """Attach `py-spy record` (raw collapsed stacks) to the server for the timed phase."""
    assert opts.py_spy is not None
    opts.py_spy.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["py-spy", "record", "--pid", str(pid), "--rate", str(opts.py_spy_rate), "--format", "raw",
           "--threads", "-o", str(opts.py_spy), "--duration", str(int(opts.timeout) + 60)]  # fmt: skip
    # Native stacks need the target paused for each sample; Python-only sampling does not.
    cmd += {"python": ["--nonblocking"], "gil": ["--nonblocking", "--gil"], "native": ["--native"]}[opts.py_spy_mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach
    if proc.poll() is not None:
        raise RuntimeError(f"py-spy failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    """Ask py-spy to write its output (SIGINT), killing it if it does not finish in 60 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

MEDIAN_FIELDS = (
    "seconds", "ack_seconds", "spans_per_s", "server_cpu_s", "server_main_process_cpu_s", "spans_per_server_cpu_s",
    "server_cores",
    "server_peak_rss_mb", "server_wchar_mb", "server_disk_write_mb", "client_cpu_s", "client_cores",
    "machine_cpu_util", "others_cpu_s", "postgres_cpu_s", "postgres_cores",
)  # fmt: skip


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each number over the runs of one protocol, and the error totals."""
    protocol, variant = runs[0]["protocol"], runs[0].get("variant", "current")
    label = protocol if variant == "current" else f"{protocol} ({variant})"
    summary: dict[str, Any] = {"protocol": label, "runs": len(runs), "spans": runs[0]["spans"]}
    for name in MEDIAN_FIELDS:
        summary[name] = round(statistics.median(r[name] for r in runs), 3)
    summary["spans_per_s_all_runs"] = [r["spans_per_s"] for r in runs]
    # Runs during which other processes used less than a quarter of a core on average.
    quiet = [r["spans_per_s"] for r in runs if r["others_cpu_s"] < 0.25 * r["seconds"]]
    summary["quiet_runs"] = len(quiet)
    summary["spans_per_s_quiet_median"] = round(statistics.median(quiet), 1) if quiet else None
    summary["errors"] = sum(r["errors"] for r in runs)
    summary["retries"] = sum(r["retries"] for r in runs)
    summary["rejected_spans"] = sum(r["rejected_spans"] for r in runs)
    summary["all_complete"] = all(r["complete"] for r in runs)
    summary["api_mismatches"] = sum(r["api_check"]["mismatches"] for r in runs)
    # The client shares 2 cores with the server; say when it could have been the limit.
    summary["client_limited"] = bool(summary["client_cores"] > 0.8)
    return summary


def _ratios(current: list[dict[str, Any]], compared: list[dict[str, Any]]) -> dict[str, Any]:
    """Current over compared code: median spans/s, and server CPU per span (lower is better)."""

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "spans_per_s": round(median(current, "spans_per_s") / median(compared, "spans_per_s"), 3),
        "server_cpu_s": round(median(current, "server_cpu_s") / median(compared, "server_cpu_s"), 3),
        # Pairs run back to back (A then B), so each pair shares the machine's load of the moment.
        "spans_per_s_pairs": [
            round(a["spans_per_s"] / b["spans_per_s"], 3) for a, b in zip(current, compared, strict=True)
        ],
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The summary as a Markdown table (medians over the runs), for docs/benchmarks.md."""
    lines = [
        "| protocol | spans/s (median) | spans/s, quiet runs | seconds | server CPU s | spans per server CPU s "
        "| peak RSS MB | written to disk MB | client CPU s | errors / retries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["summary"]:
        quiet = f"{s['spans_per_s_quiet_median']:,.0f} ({s['quiet_runs']})" if s["spans_per_s_quiet_median"] else "-"
        lines.append(
            f"| {s['protocol']} | {s['spans_per_s']:,.0f} | {quiet} | {s['seconds']:.1f} | {s['server_cpu_s']:.1f} "
            f"| {s['spans_per_server_cpu_s']:,.0f} | {s['server_peak_rss_mb']:.0f} | {s['server_disk_write_mb']:,.0f} "
            f"| {s['client_cpu_s']:.2f} | {s['errors']} / {s['retries']} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--protocol", default="all", help=f"all, or one or more of {', '.join(PROTOCOLS)}, comma-separated")
    p.add_argument(
        "--signal",
        default="traces",
        help="traces (default), logs, or traces,logs (both, interleaved; logs runs are labelled logs:<protocol>)",
    )
    p.add_argument("--spans", type=int, default=200_000, help="spans (or log records) per run (default 200000)")
    p.add_argument("--batch-spans", type=int, default=512, help="spans per export request (default 512)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent connections (default 8)")
    p.add_argument("--repeat", type=int, default=1, help="runs per protocol; the summary is the median")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0, help="give up sending after this many seconds")
    p.add_argument("--server-env", action="append", default=[], metavar="LOOPKIT_X=VALUE",
                   help="environment for the server, e.g. LOOPKIT_SQLITE_SYNCHRONOUS=NORMAL")  # fmt: skip
    p.add_argument("--database-url", help="run the server on PostgreSQL (postgresql+psycopg://...), own schemas")
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="run the server from a copy of the LoopKit packages taken at start (the working tree may "
        "change during a long benchmark)",
    )
    p.add_argument(
        "--compare-code",
        type=Path,
        metavar="DIR",
        help="also run a second server from LoopKit packages in DIR (e.g. a --snapshot copy or `git archive` "
        "of an older commit laid out as loopkit_core/, loopkit_receivers/, loopkit_plugins/), interleaved "
        "A/B/A/B with the current code, and report the ratio",
    )
    p.add_argument(
        "--compare-env",
        action="append",
        default=[],
        metavar="LOOPKIT_X=VALUE",
        help="the compared server gets these settings on top of --server-env (with the current code unless "
        "--compare-code is given): an interleaved A/B of a setting",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="sustained mode: send without pause for this long (the --spans batches cycled, with new trace "
        "IDs each round) and report the server's RSS and throughput over time instead of one timed burst",
    )
    p.add_argument("--sample-every", type=float, default=10.0, metavar="SECONDS", help="sustained mode sampling")
    p.add_argument(
        "--spread",
        type=float,
        metavar="SECONDS",
        help="sustained mode: squeeze each batch's timestamps towards its newest end so they lie within this many "
        "seconds (durations shrink alike; the issue's shape was ~10 s). Default: the payload's own, whose start "
        "times lag their batch's newest end by 16.6 s at the median, 186 s at the 99th percentile",
    )
    p.add_argument(
        "--trace-ids",
        choices=payloads.TRACE_ID_MODES,
        default="random",
        help="sustained mode: each round's new trace IDs: random (default; as exporters make them) or stamped (the "
        "round number in the first two bytes, as before 2026-12-06: a round's traces share a prefix, which "
        "flatters the store's trace index)",
    )
    p.add_argument(
        "--slices",
        type=int,
        default=10,
        metavar="N",
        help="sustained mode: cut the run into N equal time slices and report the rate, the store's record count, "
        "its size on disk, RSS, and the cores used by the busiest server thread (the writer), the decode workers "
        "and the machine at each boundary (default 10)",
    )
    p.add_argument("--keep-data", action="store_true", help="keep each run's data directory")
    p.add_argument("--out", type=Path, help="also write the JSON result to this file")
    p.add_argument("--markdown", type=Path, help="also write the summary as a Markdown table to this file")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="PREFIX",
        help="profile the server with py-spy during each run (PREFIX-<protocol>-<n>.txt, raw collapsed "
        "stacks) and add a breakdown; profiled runs are slower, do not quote them",
    )
    p.add_argument(
        "--py-spy-mode",
        choices=["python", "gil", "native"],
        default="python",
        help="python: Python stacks of busy threads (no pause); gil: only the thread holding the GIL; "
        "native: C frames too, idle and GIL-waiting threads included (pauses the server per sample)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for other processes to leave the CPUs alone "
        "(under 0.3 busy cores for 3 s); 0 disables (default 30)",
    )
    p.add_argument("--py-spy-rate", type=int, default=100, help="samples per second (default 100)")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority for the server and this client (negative needs root): on a shared "
        "machine, -10 keeps other jobs from taking the server's CPU (default 0)",
    )
    args = p.parse_args(argv)
    args.protocols = list(PROTOCOLS) if args.protocol == "all" else args.protocol.split(",")
    if not args.protocols or not set(args.protocols) <= set(PROTOCOLS):
        p.error(f"--protocol: expected all or names from {', '.join(PROTOCOLS)}")
    signals = args.signal.split(",")
    if not signals or not set(signals) <= set(SIGNALS):
        p.error("--signal: expected traces, logs or traces,logs")
    if "logs" in signals and not set(args.protocols) <= set(LOGS_FORMAT_OF):
        p.error(f"--signal logs: protocols {', '.join(LOGS_FORMAT_OF)} only (the records shape is for traces)")
    if args.spread is not None and (not args.duration or args.spread <= 0):
        p.error("--spread: sustained mode (--duration) only, and more than 0 seconds")
    if "logs" in signals and args.duration:
        p.error("--duration (sustained mode) sends traces only")
    if args.duration and (args.compare_code is not None or args.compare_env):
        # It would run the current code alone and report it as if compared.
        p.error("--compare-code/--compare-env: bursts only; run sustained mode once per code or setting")
    args.protocols = [
        run for p_ in args.protocols for run in ([p_] if "traces" in signals else []) + (
            [LOGS_PREFIX + p_] if "logs" in signals else [])
    ]  # fmt: skip
    if args.spans < 1 or args.batch_spans < 1 or args.concurrency < 1 or args.repeat < 1:
        p.error("--spans, --batch-spans, --concurrency and --repeat must be at least 1")
    if args.slices < 1 or (args.duration is not None and args.duration <= 0):
        p.error("--slices must be at least 1 and --duration greater than 0")
    if args.timeout <= 0 or args.timeout > 3600:
        p.error("--timeout must be in (0, 3600]")
    for item in [*args.server_env, *args.compare_env]:
        if "=" not in item or not item.startswith("LOOPKIT_"):
            p.error(f"--server-env/--compare-env {item!r}: expected LOOPKIT_NAME=VALUE")
    return args


SNAPSHOT_PACKAGES = {"loopkit_core": "loopkit_core", "loopkit_receivers": "receivers", "loopkit_plugins": "plugins"}


def snapshot_code(dest: Path) -> str:
    """Copy LoopKit's packages as they are now into `dest` (for PYTHONPATH); returns a content hash.

    The working tree may change while a long benchmark runs; every run of one invocation then
    measures the same code.
    """
    repo = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name, folder in SNAPSHOT_PACKAGES.items():
        shutil.copytree(repo / folder, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for path in sorted((dest / name).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> dict[str, Any]:
    """The LoopKit commit measured, and which files outside bench/ differed from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_files_outside_bench": len(changed)}


def main(argv: list[str] | None = None) -> int:
    """Build payloads, run every protocol --repeat times (interleaved), print the JSON report."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server is always stopped and the data removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    protocols = args.protocols
    formats = {format_of(p) for p in protocols}
    log(f"building {args.spans} spans in batches of {args.batch_spans} as {sorted(formats)} ...")
    data = payloads.build(args.spans, args.batch_spans, formats, seed=args.seed)
    log(
        f"built in {data.build_seconds:.1f}s: {data.error_spans / data.spans:.1%} error spans, "
        f"{data.tool_spans / data.spans:.1%} tool calls; "
        + ", ".join(f"{f} {data.total_bytes(f) / data.spans:.0f} B/span" for f in sorted(formats))
    )
    env = dict(item.split("=", 1) for item in args.server_env)
    if args.database_url:
        env["LOOPKIT_DATABASE_URL"] = args.database_url
    snapshot_dir: Path | None = None
    version = code_version()
    if args.snapshot:
        snapshot_dir = Path(tempfile.mkdtemp(prefix="loopkit-bench-code-"))
        version["snapshot_sha256"] = snapshot_code(snapshot_dir)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(snapshot_dir), os.environ.get("PYTHONPATH")) if p)
        log(f"server code snapshot {version['snapshot_sha256']} in {snapshot_dir}")
    try:
        if args.duration:
            return _run_sustained(args, protocols, data, env, version)
        return _run_all(args, protocols, data, env, version)
    finally:
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)


def _run_sustained(
    args: argparse.Namespace,
    protocols: list[str],
    data: payloads.Payloads,
    env: dict[str, str],
    version: dict[str, Any],
) -> int:
    results = []
    load_start = load_average()
    for protocol in protocols:
        opts = RunOptions(args.concurrency, args.timeout, env, args.keep_data, nice=args.nice)
        log(f"sustained {protocol} for {args.duration:.0f}s ...")
        results.append(
            run_sustained(
                protocol, data, opts, args.duration, args.sample_every, args.slices, args.spread, args.trace_ids
            )
        )
        r = results[-1]
        log(
            f"  {protocol}: {r['spans_per_s']:.0f} spans/s over {r['seconds']:.0f}s; first 10% "
            f"{r['first_10pct']:.0f}/s, last 10% {r['last_10pct']:.0f}/s (x{r['last_vs_first']}); RSS MB: "
            f"{r['rss_mb_end_of_first_minute']} after 1 min, {r['rss_mb_last']} at the end, "
            f"peak {r['server_peak_rss_mb']}; all acknowledged stored: {r['all_acked_stored']}; errors {r['errors']}"
        )
    report = {
        "benchmark": "ingest-sustained",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0]},
        "loopkit": version,
        "settings": {
            "spans_prebuilt": args.spans,
            "batch_spans": args.batch_spans,
            "duration_s": args.duration,
            "slices": args.slices,
            "spread_s": args.spread,
            "trace_ids": args.trace_ids,
            "concurrency": args.concurrency,
            "server_env": env,
            "nice": args.nice,
        },  # fmt: skip
        "load_average": {"start": load_start, "end": load_average()},
        "runs": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if all(r["complete"] and not r["errors"] for r in results) else 1


def _run_all(
    args: argparse.Namespace,
    protocols: list[str],
    data: payloads.Payloads,
    env: dict[str, str],
    version: dict[str, Any],
) -> int:
    variants = {"current": env}
    if args.compare_code is not None or args.compare_env:
        variants["compared"] = {**env, **dict(item.split("=", 1) for item in args.compare_env)}
    if args.compare_code is not None:
        paths = (str(args.compare_code.resolve()), os.environ.get("PYTHONPATH"))
        variants["compared"]["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in protocols}
    for rep in range(args.repeat):
        for protocol, (variant, variant_env) in itertools.product(protocols, variants.items()):
            prof = None
            if args.py_spy is not None:
                prof = args.py_spy.parent / f"{args.py_spy.name}-{protocol}-{variant}-{rep + 1}.txt"
            opts = RunOptions(args.concurrency, args.timeout, variant_env, args.keep_data, prof, args.py_spy_mode,
                              args.py_spy_rate, args.nice)  # fmt: skip
            quiet = wait_quiet(args.wait_quiet)
            log(f"run {rep + 1}/{args.repeat} {protocol} ({variant}) ...")
            result = run_once(protocol, data, opts)
            result["variant"] = variant
            result["waited_for_quiet_s"], result["quiet_at_start"] = quiet
            if prof is not None and prof.exists():
                import profile_summary

                result["profile_breakdown"] = profile_summary.summarise(prof)
            runs.setdefault(protocol if variant == "current" else f"{protocol} ({variant})", []).append(result)
            log(
                f"  {protocol} ({variant}): {result['spans_per_s']:.0f} spans/s, {result['seconds']:.1f}s, server CPU "
                f"{result['server_cpu_s']:.1f}s, client CPU {result['client_cpu_s']:.1f}s, RSS "
                f"{result['server_peak_rss_mb']:.0f} MB, errors {result['errors']}, retries {result['retries']}, "
                f"API mismatches {result['api_check']['mismatches']}"
            )
            if result["error_reasons"]:
                log(f"  error reasons: {result['error_reasons']}")
    report = {
        "benchmark": "ingest",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0]},
        "loopkit": version,
        "settings": {
            "spans": args.spans,
            "batch_spans": args.batch_spans,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "server_env": env,
            "nice": args.nice,
            "payload_build_seconds": round(data.build_seconds, 1),
            "error_span_share": round(data.error_spans / data.spans, 3),
            "tool_span_share": round(data.tool_spans / data.spans, 3),
        },
        "summary": [summarise(group) for group in runs.values()],
        "runs": [r for group in runs.values() for r in group],
    }
    if args.compare_code is not None or args.compare_env:
        report["compared_code"] = str(args.compare_code) if args.compare_code is not None else "current"
        report["compared_env"] = dict(item.split("=", 1) for item in args.compare_env)
        report["ratio_current_to_compared"] = {p: _ratios(runs[p], runs[f"{p} (compared)"]) for p in protocols}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown_table(report))
    ok = all(s["all_complete"] and s["api_mismatches"] == 0 for s in report["summary"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
