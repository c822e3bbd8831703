"""Decoding in worker processes, so parsing and row building run beside the writer instead of under its GIL.

One LoopKit process holds one GIL: protobuf/JSON decoding, signatures and row building (~25 us a span) and
the writer's Python side queue behind each other on one core. With `decode_workers` > 0 a pool of spawned
processes does the pure part of ingest: bytes in, rows out. Authentication, quotas, deduplication and the
commit stay in the server process, so nothing about what is stored or acknowledged changes.

This is composition: it joins the receivers' decoders (bytes -> records) to core's `ingest.prepare`
(records -> rows), and is handed to the receivers as their `Decoder`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from starlette.concurrency import run_in_threadpool

from loopkit_core.ingest import prepare
from loopkit_core.plugins import Plugins, get_plugins
from loopkit_core.sink import Batch
from loopkit_receivers.intake import TRACES, decode_grpc, decode_http
from loopkit_receivers.limits import DEFAULT as DEFAULT_LIMITS
from loopkit_receivers.limits import Limits

log = logging.getLogger("loopkit.decode")

_plugins: Plugins | None = None  # a worker's own plugins (signatures), loaded once when it starts
PARENT_POLL_SECONDS = 0.5


def _init_worker(blocked_plugins: list[str]) -> None:
    global _plugins
    # Ctrl-C reaches the whole process group; the server decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # An idle worker would outlive a server killed with SIGKILL (or dying on its own): it exits with it.
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _plugins = get_plugins(blocked_plugins)
    # Decoding allocates ~50 short-lived dicts and lists a span, so the default threshold (700) ran a young
    # collection every ~15 spans: 10,000 took OTLP/JSON decoding from 28.1 to 23.1 us a span (proto 15.3 to 15.0).
    gc.set_threshold(10_000, 10, 10)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


def _ready() -> bool:
    return _plugins is not None


def prepare_http(
    body: bytes,
    media: str,
    encoding: str,
    max_body_bytes: int,
    project_id: str,
    plugins: Plugins | None = None,
    limits: Limits = DEFAULT_LIMITS,
    signal: str = TRACES,
) -> Batch:
    """Decode an HTTP body and build its rows; the payload comes back without its records (only rows travel)."""
    payload = decode_http(body, media, encoding, max_body_bytes, project_id, limits, signal)
    batch = prepare(payload.to_store, plugins or _worker_plugins(), payload)
    payload.drop_records()
    return batch


def prepare_grpc(
    body: bytes, project_id: str, plugins: Plugins | None = None, limits: Limits = DEFAULT_LIMITS, signal: str = TRACES
) -> Batch:
    """Decode a gRPC request message and build its rows."""
    decoded = decode_grpc(body, project_id, limits, signal)
    batch = prepare(decoded.records, plugins or _worker_plugins(), decoded)
    decoded.records = []
    return batch


def _worker_plugins() -> Plugins:
    assert _plugins is not None, "decode worker not initialised"
    return _plugins


class DecodePool:
    """Runs prepare_http / prepare_grpc in worker processes, or on threads here when there are none."""

    def __init__(
        self, workers: int, plugins: Plugins, blocked_plugins: list[str], limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.plugins = plugins
        self.limits = limits  # attribute/event/link caps (settings), applied where the rows are built
        self._blocked = blocked_plugins
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # spawn, not fork: the server already runs threads (writer, gRPC) that a fork would copy mid-state.
            self._pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                initargs=(blocked_plugins,),
            )  # fmt: skip
            # Start every worker now (imports take a second) rather than on the first requests.
            for future in [self._pool.submit(_ready) for _ in range(workers)]:
                future.result(timeout=120)

    @property
    def workers(self) -> int:
        """Worker processes (0: decoding runs on threads of the server process)."""
        return self._pool._max_workers if self._pool is not None else 0  # type: ignore[attr-defined]

    async def http(
        self, body: bytes, media: str, encoding: str, max_body_bytes: int, project_id: str, signal: str = TRACES
    ) -> Batch:
        """prepare_http, off the event loop."""
        if self._pool is not None:
            try:
                future = self._pool.submit(
                    prepare_http, body, media, encoding, max_body_bytes, project_id, None, self.limits, signal
                )
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                self._broken()
        return await run_in_threadpool(
            prepare_http, body, media, encoding, max_body_bytes, project_id, self.plugins, self.limits, signal
        )

    def grpc(self, body: bytes, project_id: str, signal: str = TRACES) -> Batch:
        """prepare_grpc, blocking the calling (gRPC handler) thread."""
        if self._pool is not None:
            try:
                return self._pool.submit(prepare_grpc, body, project_id, None, self.limits, signal).result()
            except BrokenProcessPool:
                self._broken()
        return prepare_grpc(body, project_id, self.plugins, self.limits, signal)

    def _broken(self) -> None:
        # A worker died (killed, out of memory): keep serving by decoding here; the pool is not restarted.
        log.error("a decode worker process died; decoding in the server process from now on")
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (after the listeners have drained)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)
