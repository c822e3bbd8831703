"""Serving: HTTP (uvicorn) and OTLP/gRPC in one process, with a clean, draining shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import uvicorn

from loopkit_core.app import LoopKit, create_app
from loopkit_core.protocol import http_protocol
from loopkit_core.retention import RetentionPurger
from loopkit_core.settings import Settings
from loopkit_receivers.otlp_grpc import create_server

log = logging.getLogger("loopkit")


class Running:
    """A LoopKit instance with its HTTP and gRPC listeners bound; `stop()` drains then closes."""

    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.time, decode_workers_auto: int = 0
    ) -> None:
        self.settings = settings
        workers = decode_workers_auto if settings.decode_workers < 0 else settings.decode_workers
        self.app: LoopKit = create_app(settings, clock, workers)
        try:
            self.http_socket = _bind(settings.host, settings.http_port)
            try:
                self.grpc_server, self.grpc_port = create_server(
                    self.app.intake, settings.host, settings.grpc_port, settings.max_body_bytes,
                    settings.grpc_workers, settings.header_timeout_seconds, settings.max_grpc_connections,
                )  # fmt: skip
            except RuntimeError:  # grpcio raises RuntimeError("Failed to bind ...") for a taken port
                self.http_socket.close()
                where = f"{settings.host}:{settings.grpc_port}"
                raise OSError(f"could not bind OTLP/gRPC to {where}: address in use or not available") from None
        except OSError:
            self.app.close()
            raise
        self.http_port = self.http_socket.getsockname()[1]
        if settings.http_port != self.http_port or settings.grpc_port != self.grpc_port:
            # Ports chosen by the OS (0): answers that advertise URLs (signup) must name the bound ones.
            settings = self.settings = replace(settings, http_port=self.http_port, grpc_port=self.grpc_port)
            self.app.use_settings(settings)
        config = uvicorn.Config(
            self.app.http,
            log_level=settings.log_level,
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
            server_header=False,
            # X-Forwarded-For is trusted only from configured proxies (rate limits key on the client address).
            proxy_headers=settings.forwarded_allow_ips is not None,
            forwarded_allow_ips=settings.forwarded_allow_ips or "",
            # Stalled request heads are cut off; past the connection limit requests get 503 (docs/reliability.md).
            http=http_protocol(settings.header_timeout_seconds),
            limit_concurrency=settings.max_http_connections,
        )
        self.uvicorn = _Server(config, on_signal=self.request_stop)
        self._grpc_stopped: threading.Event | None = None

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP listener."""
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        """host:port of the OTLP/gRPC listener."""
        return f"{self.settings.host}:{self.grpc_port}"

    def request_stop(self) -> None:
        """Stop accepting work on both listeners; in-flight requests finish and are acknowledged."""
        self.uvicorn.should_exit = True
        if self._grpc_stopped is None:
            self._grpc_stopped = self.grpc_server.stop(self.settings.shutdown_grace_seconds)

    async def serve(self) -> None:
        """Serve until asked to stop, then drain gRPC and the writer."""
        self.grpc_server.start()
        self.app.start()
        # Old records go in the background, in small batches between the writer's commits (docs/reliability.md).
        self.retention = RetentionPurger(self.app.store, self.app.clock, self.settings.purge_interval_seconds)
        self.retention.start()
        log.info(
            "LoopKit HTTP on %s, OTLP/gRPC on %s, data in %s", self.http_url, self.grpc_target, self.settings.data_dir
        )
        if self.app.store.autovacuum_off():
            # Day partitions then get no VACUUM, and index-only reads visit the table: a diagnosis of the last hour
            # of a 20M-record store took 6.4 s instead of 3.7 (docs/benchmarks.md).
            log.warning("PostgreSQL's autovacuum is off: turn it on for fast reads (docs/deployment.md)")
        try:
            # The MCP SDK's task group lives on this event loop while uvicorn serves (the app's lifespan is off).
            async with self.app.mcp.running():
                await self.uvicorn.serve(sockets=[self.http_socket])
        finally:
            self.request_stop()
            assert self._grpc_stopped is not None
            await asyncio.to_thread(self._grpc_stopped.wait, self.settings.shutdown_grace_seconds + 5)
            await asyncio.to_thread(self.retention.stop, self.settings.shutdown_grace_seconds + 5)
            await asyncio.to_thread(self.app.close)
            self.http_socket.close()


def serve(settings: Settings) -> None:
    """`loopkit serve`: run until SIGINT/SIGTERM, then exit after the acknowledged writes are committed."""
    # The second core is otherwise idle: the server process is bound by its GIL (docs/benchmarks.md).
    running = Running(settings, decode_workers_auto=max((os.cpu_count() or 1) - 1, 0))
    # Start-up objects (modules, tables, plugins, the app) live as long as the process: moved out of the collector's
    # generations, so the full collections that big answers trigger (a 10,000-span trace) stop re-scanning them
    # (bench/sessions.py, server CPU per request: a 10,000-span trace 115 -> 81 ms, a sessions list 83 -> 61 ms).
    gc.freeze()
    print(
        f"LoopKit serving HTTP {running.http_url} and OTLP/gRPC {running.grpc_target} (data: {settings.data_dir})",
        flush=True,
    )
    _run_loop(running.serve())


@contextlib.contextmanager
def in_thread(settings: Settings, clock: Callable[[], float] = time.time) -> Iterator[Running]:
    """Run LoopKit on a background thread (for tests and `loopkit demo`); stops on exit."""
    running = Running(settings, clock)
    thread = threading.Thread(target=asyncio.run, args=(running.serve(),), name="loopkit-server", daemon=True)
    thread.start()
    try:
        _wait_started(running)
        yield running
    finally:
        running.request_stop()
        thread.join(settings.shutdown_grace_seconds + 30)


def _wait_started(running: Running, timeout: float = 10.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if running.uvicorn.started:
            return
        event.wait(0.01)
    raise RuntimeError("LoopKit did not start in time")


class _Server(uvicorn.Server):
    """uvicorn's server, but signals also stop gRPC and are not re-raised after the drain."""

    def __init__(self, config: uvicorn.Config, on_signal) -> None:  # noqa: ANN001
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(sig: int, frame: object) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self._on_signal()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (it skips proto 0),
    # which spares keep-alive clients a 40 ms Nagle/delayed-ACK stall per response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not bind HTTP to {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run_loop(coro) -> None:  # noqa: ANN001
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)
