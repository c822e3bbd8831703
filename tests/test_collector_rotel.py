"""A real collector in the middle: the Python OpenTelemetry SDK -> rotel (a Rust OTLP agent) -> LoopKit (traces, logs).

rotel receives from the SDK and exports to LoopKit over OTLP/gRPC or OTLP/HTTP, gzip-compressed, adding the
project's `authorization` header itself (the SDK sends none): LoopKit must store every span, in that project.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Project, new_project
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from loopkit_core.server import Running

SPANS = 40


def rotel_agent() -> str | None:
    """The rotel-agent binary shipped in the rotel wheel, or on PATH."""
    try:
        import rotel
    except ImportError:
        return shutil.which("rotel-agent")
    path = Path(rotel.__file__).parent / "rotel-agent"
    return str(path) if path.is_file() else shutil.which("rotel-agent")


def _runs(binary: str | None) -> str | None:
    """Why rotel cannot run here, or None when it does."""
    if binary is None:
        return "rotel is not installed (pip install rotel); it ships the rotel-agent binary"
    try:
        done = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"rotel-agent cannot run on this platform: {exc}"
    return None if done.returncode == 0 else f"rotel-agent version failed: {done.stderr.strip()[:200]}"


AGENT = rotel_agent()
pytestmark = pytest.mark.skipif(_runs(AGENT) is not None, reason=str(_runs(AGENT)))


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Until something accepts connections on 127.0.0.1:port (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"rotel did not listen on {port}: {log.read_text()}")


class Rotel:
    """One rotel-agent in the foreground, receiving OTLP on two free ports, exporting to LoopKit."""

    def __init__(self, tmp_path: Path, protocol: str, endpoint: str, key: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.log = tmp_path / f"rotel-{protocol}.log"
        args = [
            AGENT,
            "start",
            "--pid-file",
            str(tmp_path / f"rotel-{protocol}.pid"),
            "--log-file",
            str(self.log),
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{self.http_port}",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            endpoint,
            "--otlp-exporter-protocol",
            protocol,
            "--otlp-exporter-compression",
            "gzip",
            "--otlp-exporter-custom-headers",
            f"authorization=Bearer {key}",
            "--batch-timeout",
            "50ms",
        ]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        wait_listening(self.grpc_port, self.process, self.log)
        wait_listening(self.http_port, self.process, self.log)

    def stop(self) -> None:
        """SIGTERM (rotel flushes), then wait (bounded)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def other(server: Running) -> Project:
    """A second project on the same server, which must see none of the spans."""
    return new_project(server, "bystander")


def loopkit_endpoint(server: Running, protocol: str) -> str:
    """Where rotel exports: LoopKit's OTLP/gRPC target or its HTTP base URL."""
    return f"http://{server.grpc_target}" if protocol == "grpc" else server.http_url


def read_all(server: Running, key: str) -> list[dict]:
    """The project's records of the last hour (one page is enough for SPANS)."""
    response = httpx.get(
        server.http_url + "/v1/telemetry",
        params={"limit": 1000, "since_minutes": 60},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["records"]


@pytest.fixture(params=[("grpc", "grpc"), ("http", "http")], ids=["sdk-grpc-rotel-grpc", "sdk-http-rotel-http-gzip"])
def rotel(request: pytest.FixtureRequest, server: Running, project: Project, tmp_path: Path) -> Iterator[tuple]:
    """(sdk protocol, rotel) with rotel exporting to `server` for `project`."""
    sdk_protocol, export_protocol = request.param
    agent = Rotel(tmp_path, export_protocol, loopkit_endpoint(server, export_protocol), project.producer_key)
    try:
        yield sdk_protocol, agent
    finally:
        agent.stop()


def test_sdk_to_rotel_to_loopkit_stores_every_span(rotel: tuple, server: Running, project: Project, other: Project):
    sdk_protocol, agent = rotel
    if sdk_protocol == "grpc":
        exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{agent.grpc_port}", insecure=True, timeout=10)
    else:
        exporter = HttpSpanExporter(
            endpoint=f"http://127.0.0.1:{agent.http_port}/v1/traces", compression=Compression.Gzip, timeout=10
        )
    provider = TracerProvider(resource=Resource.create({"service.name": "through-rotel"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("rotel-test")
    sent = set()
    for i in range(SPANS):
        with tracer.start_as_current_span(f"op-{i % 4}") as span:
            span.set_attribute("request.n", i)
            sent.add(format(span.get_span_context().span_id, "016x"))
    assert provider.force_flush(timeout_millis=10_000)
    provider.shutdown()

    deadline = time.monotonic() + 30
    stored: list[dict] = []
    while time.monotonic() < deadline:
        stored = read_all(server, project.agent_key)
        if len(stored) >= SPANS:
            break
        time.sleep(0.1)
    assert len(stored) == SPANS, agent.log.read_text()[-2000:]
    assert {r["span_id"] for r in stored} == sent
    assert {r["service"] for r in stored} == {"through-rotel"}
    assert sorted(r["attributes"]["request.n"] for r in stored) == list(range(SPANS))
    assert read_all(server, other.agent_key) == []


LOGS = 30


def test_sdk_logs_through_rotel_reach_loopkit_with_their_trace(
    rotel: tuple, server: Running, project: Project, other: Project
):
    """The SDK's `logging` bridge -> rotel's logs pipeline -> LoopKit: every log record stored once, errors typed,
    the one logged inside a span in that span's trace."""
    sdk_protocol, agent = rotel
    if sdk_protocol == "grpc":
        exporter = GrpcLogExporter(endpoint=f"127.0.0.1:{agent.grpc_port}", insecure=True, timeout=10)
    else:
        exporter = HttpLogExporter(
            endpoint=f"http://127.0.0.1:{agent.http_port}/v1/logs", compression=Compression.Gzip, timeout=10
        )
    provider = LoggerProvider(resource=Resource.create({"service.name": "through-rotel"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50))
    logger = logging.getLogger(f"rotel.worker.{sdk_protocol}")
    logger.handlers = [LoggingHandler(level=logging.INFO, logger_provider=provider)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    tracer = TracerProvider().get_tracer("rotel-test")
    for i in range(LOGS - 1):
        (logger.error if i % 3 == 0 else logger.info)("job %d finished with code %d", i, i % 3)
    with tracer.start_as_current_span("job 99") as span:
        try:
            raise TimeoutError("upstream timed out")
        except TimeoutError:
            logger.exception("job 99 failed")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert provider.force_flush(timeout_millis=10_000)
    provider.shutdown()

    deadline = time.monotonic() + 30
    stored: list[dict] = []
    while time.monotonic() < deadline:
        stored = read_all(server, project.agent_key)
        if len(stored) >= LOGS:
            break
        time.sleep(0.1)
    assert len(stored) == LOGS, agent.log.read_text()[-2000:]
    types = sorted(r["type"] for r in stored)
    assert types == ["error"] * 11 + ["log"] * 19  # i = 0, 3, ..., 27 (10) and the exception
    assert {r["service"] for r in stored} == {"through-rotel"}
    [in_span] = [r for r in stored if r["trace_id"] is not None]
    assert (in_span["trace_id"], in_span["exception_type"], in_span["message"]) == (
        trace_id,
        "TimeoutError",
        "job 99 failed",
    )
    assert read_all(server, other.agent_key) == []
