"""Summarise a py-spy `--format raw` profile of the LoopKit server into where its time goes.

py-spy writes one line per distinct stack, `thread (tid): name;frame;...;leaf COUNT`, with frames
like `to_rows (loopkit_core/store/records.py:50)` and, with `--native`, C frames like
`sqlite3VdbeExec (libsqlite3.so.0.8.6)` or `0x7f... (libc.so.6)`.

Each sample is put in one bucket:

- waits (native profiles only, where py-spy cannot tell idle threads apart): `gil_wait` (a thread
  wants the GIL: `pthread_cond_*wait` not under a Python lock) and `idle` (Python locks, queues,
  condition variables, epoll);
- otherwise a CPU (or I/O syscall) category: the innermost frame that a rule recognises decides,
  generic libc/libpython frames are skipped so that their time goes to the code that called them.

Usage: `python bench/profile_summary.py PROFILE.txt [...]` prints JSON.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Whole-stack rules: what a request spends on something other than ingesting its spans.
CONTEXT_RULES: list[tuple[str, str]] = [
    ("auth: key lookup in the control DB (per request)", "loopkit_core/projects.py"),
    ("API reads", "loopkit_core/api/"),
]

# Native frames: (category, file substring, function regex or None). Checked on each frame.
NATIVE_RULES: list[tuple[str, str, str | None]] = [
    ("SQLite: fdatasync of the WAL (synchronous=FULL)", "libc", r"^(fdatasync|fsync)$"),
    ("SQLite: pwrite/pread syscalls", "libc", r"^(pwrite64|pread64|write|read|lseek|__libc_pwrite|__libc_pread)$"),
    ("SQLite: engine (C)", "libsqlite3", None),
    ("sqlite3 module: parameter binding/adaptation (C)", ".c", r"(bind_param|pysqlite|_pysqlite|microprotocols)"),
    ("protobuf (upb): parse + field access", "_message", None),
    ("orjson (C)", "orjson", None),
    ("Python GC", "libpython", r"^(gc_collect|collect|gc_)"),
    ("gRPC server (grpcio)", "cygrpc", None),
    ("HTTP server: uvloop/httptools (C)", "uvloop", None),
    ("HTTP server: uvloop/httptools (C)", "httptools", None),
    ("blake2b record IDs (C)", "blake2", None),
]

# Python frames: (category, file substring, function regex or None).
PYTHON_RULES: list[tuple[str, str, str | None]] = [
    ("idle: locks, queues, futures", "threading.py", r"(wait|acquire|__enter__)"),
    ("SQLite: executemany/execute (C, GIL released)", "sqlalchemy/engine/default.py", r"do_execute"),
    ("SQLite: commit (C + WAL fsync)", "sqlalchemy/engine/default.py", r"do_commit"),
    ("SQLAlchemy: statement and parameter processing", "sqlalchemy/", None),
    ("store: to_rows (row dicts, orjson.dumps)", "loopkit_core/store/records.py", r"to_rows"),
    ("store: to_rows (row dicts, orjson.dumps)", "loopkit_core/model.py", r"duration_ms"),
    ("store: insert call", "loopkit_core/store/records.py", None),
    ("writer thread loop", "loopkit_core/store/writer.py", None),
    ("OTLP proto: attribute conversion (AnyValue -> dict)", "receivers/otlp_proto.py", r"(attributes|any_value)"),
    ("OTLP proto: protobuf parse", "receivers/otlp_proto.py", r"parse_request"),
    ("OTLP proto: span/event walk", "receivers/otlp_proto.py", None),
    ("record building: IDs, timestamps, classify, Record()", "receivers/spans.py", None),
    ("record building: IDs, timestamps, classify, Record()", "loopkit_core/model.py", None),
    ("record building: IDs, timestamps, classify, Record()", "loopkit_core/signals.py", None),
    ("record building: IDs, timestamps, classify, Record()", "<string>", r"__init__"),
    ("OTLP/JSON: orjson.loads", "receivers/ingest.py", r"_parse_json"),
    ("OTLP/JSON: document walk + validation", "receivers/otlp_json.py", None),
    ("records shape: validation", "receivers/records_shape.py", None),
    ("HTTP: body read/decompress", "receivers/body.py", None),
    ("HTTP: body read/decompress", "receivers/otlp_http.py", r"_read_body"),
    ("signatures at ingest (record_signature plugins, masking)", "plugins/", None),
    ("signatures at ingest (record_signature plugins, masking)", "pluggy/", None),
    ("HTTP: receiver glue (otlp_http.py)", "receivers/otlp_http.py", None),
    ("receiver glue (ingest.py)", "receivers/ingest.py", None),
    ("gRPC server (grpcio)", "grpc/", None),
    ("gRPC: receiver glue", "receivers/otlp_grpc.py", None),
    ("HTTP server: uvicorn/starlette/anyio/asyncio", "uvicorn/", None),
    ("HTTP server: uvicorn/starlette/anyio/asyncio", "starlette/", None),
    ("HTTP server: uvicorn/starlette/anyio/asyncio", "anyio/", None),
    ("HTTP server: uvicorn/starlette/anyio/asyncio", "asyncio/", None),
    ("idle: locks, queues, futures", "queue.py", None),
    ("idle: locks, queues, futures", "concurrent/futures", None),
]

_IDLE_NATIVE = re.compile(
    r"^(PyThread_acquire_lock_timed|lock_PyThread_acquire_lock|sem_wait|sem_timedwait|sem_clockwait|"
    r"epoll_wait|epoll_pwait|poll|__poll|select|accept4?|nanosleep|clock_nanosleep)$"
)
_COND_WAIT = re.compile(r"^(pthread_cond_timedwait|pthread_cond_wait|pthread_cond_clockwait)$")


def parse_frame(text: str) -> tuple[str, str]:
    """(function, file) of one py-spy frame."""
    m = _FRAME.match(text)
    return (m.group("func"), m.group("file")) if m else (text, "")


def read_samples(path: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    """(thread name, frames root->leaf, count) for each line of a raw py-spy profile."""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = ""
        if parts and parts[0].startswith("thread ("):
            thread = parts[0].split(":", 1)[1].strip() if ":" in parts[0] else parts[0]
            parts = parts[1:]
        samples.append((thread, [parse_frame(p) for p in parts], int(count)))
    return samples


def _wait_kind(frames: list[tuple[str, str]]) -> str | None:
    """`gil_wait`, `idle`, or None when the innermost frames are not a wait."""
    inner = frames[-6:][::-1]
    for i, (func, file) in enumerate(inner):
        if _IDLE_NATIVE.match(func):
            return "idle"
        if _COND_WAIT.match(func):
            callers = [f for f, _ in inner[i + 1 : i + 3]]
            if any("acquire_lock" in c for c in callers):
                return "idle"
            return "gil_wait"
        if ".py" in file:  # reached Python code: not a native wait
            return None
    return None


def _match(rules: list[tuple[str, str, str | None]], func: str, file: str) -> str | None:
    for category, file_part, func_re in rules:
        if file_part in file and (func_re is None or re.search(func_re, func)):
            return category
    return None


def categorise(frames: list[tuple[str, str]]) -> str:
    """The category of one sample's stack (root->leaf)."""
    wait = _wait_kind(frames)
    if wait is not None:
        return "wait: GIL" if wait == "gil_wait" else "wait: idle (locks, queues, epoll)"
    for category, file_part in CONTEXT_RULES:
        if any(file_part in file for _, file in frames):
            return category
    for func, file in reversed(frames):
        if ".py" in file or file == "<string>":
            found = _match(PYTHON_RULES, func, file)
        else:
            found = _match(NATIVE_RULES, func, file)
        if found is not None:
            return found
    return "other"


def _thread_group(name: str) -> str:
    for prefix, group in (
        ("AnyIO worker", "anyio worker threads (HTTP decode)"),
        ("loopkit-writer", "writer thread"),
        ("loopkit-grpc", "gRPC handler threads"),
        ("MainThread", "main thread (event loop)"),
    ):
        if name.startswith(prefix):
            return group
    return "other threads"


def summarise(path: Path) -> dict[str, Any]:
    """Shares of samples per category (waits apart) and per thread group, as percentages."""
    samples = read_samples(path)
    total = sum(n for _, _, n in samples)
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    for thread, frames, n in samples:
        category = categorise(frames)
        if category.startswith("wait:") or category.startswith("idle:"):
            waits[category] += n
            continue
        categories[category] += n
        threads[_thread_group(thread)] += n
    busy = sum(categories.values())

    def pct(counter: Counter[str], base: int) -> dict[str, float]:
        return {k: round(100 * v / base, 1) for k, v in counter.most_common()} if base else {}

    return {
        "file": str(path),
        "samples": total,
        "busy_samples": busy,
        "waits_pct_of_all_samples": pct(waits, total),
        "busy_pct_by_category": pct(categories, busy),
        "busy_pct_by_thread": pct(threads, busy),
    }


def main(argv: list[str]) -> int:
    """Print the summary of each profile given on the command line."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps([summarise(Path(p)) for p in argv], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
