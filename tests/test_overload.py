"""Overload: a writer that falls behind makes ingest answer 503/UNAVAILABLE (bounded queue), and the real
OpenTelemetry exporters' retries then deliver every span exactly once."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import grpc
import httpx
from conftest import make_settings, needs_sqlite, new_project
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loopkit_core.server import in_thread

MAX_PENDING = 100
UNAVAILABLE = 14
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def pending_rows(server) -> int:  # noqa: ANN001
    """Rows queued in the (single) writer shard and not yet committed."""
    (shard,) = server.app.writer._shards
    return shard._pending_rows


def wait_for(condition, what: str, timeout: float = 10.0) -> None:  # noqa: ANN001
    """Poll `condition` until true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def records_doc(prefix: str, n: int, first: int = 1) -> dict:
    """A records POST of `n` records with stable span identity (span IDs first, first + 1, ...)."""
    return {
        "records": [
            {"type": "latency", "name": prefix, "duration_ms": 1, "trace_id": "ab" * 16, "span_id": f"{i:016x}"}
            for i in range(first, first + n)
        ]
    }


def one_span_request(span_byte: int) -> bytes:
    """A serialized ExportTraceServiceRequest with one span."""
    request = ExportTraceServiceRequest()
    now = time.time_ns()
    request.resource_spans.add().scope_spans.add().spans.append(
        trace_pb2.Span(
            trace_id=b"\x77" * 16,
            span_id=bytes([span_byte]) * 8,
            name="probe",
            start_time_unix_nano=now - 1000,
            end_time_unix_nano=now,
        )
    )
    return request.SerializeToString()


def finished_spans(service: str, count: int) -> list:
    """`count` real SDK spans (ReadableSpan), ready to hand to an exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("loopkit.tests.overload")
    for i in range(count):
        with tracer.start_as_current_span(f"{service}-op", attributes={"i": i}):
            pass
    spans = memory.get_finished_spans()
    provider.shutdown()
    return list(spans)


class WriteLock:
    """Another connection holding the project database's write lock: the writer's commit waits on it."""

    def __init__(self, path) -> None:  # noqa: ANN001
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        """Let the waiting commit through."""
        self.conn.execute("ROLLBACK")
        self.conn.close()


@needs_sqlite  # holds the project file's SQLite write lock to make the writer fall behind
def test_a_writer_that_falls_behind_sheds_load_and_the_real_exporters_deliver_everything(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    settings = make_settings(tmp_path / "data", writer_threads=1, writer_max_pending_rows=MAX_PENDING)
    with in_thread(settings) as server, httpx.Client(base_url=server.http_url, timeout=60) as client:
        project = new_project(server)
        producer = project.auth()
        warm = client.post("/v1/traces", json=records_doc("warm", 1), headers=producer)
        assert warm.status_code == 200
        lock = WriteLock(tmp_path / "data" / "projects" / f"{project.project_id}.db")
        released = False
        try:
            # A full queue's worth of rows is accepted; its commit now waits for the database.
            first: dict[str, httpx.Response] = {}
            filler = threading.Thread(
                target=lambda: first.setdefault(
                    "response",
                    client.post("/v1/traces", json=records_doc("filler", MAX_PENDING, first=1000), headers=producer),
                ),
                daemon=True,
            )
            filler.start()
            wait_for(lambda: pending_rows(server) == MAX_PENDING, "the filler to be queued")

            # Every further request is refused at once, told when to retry; nothing more is queued.
            with httpx.Client(base_url=server.http_url, timeout=10) as probe:
                for i in range(10):
                    refused = probe.post(
                        "/v1/traces",
                        content=one_span_request(i + 1),
                        headers={**producer, "content-type": "application/x-protobuf"},
                    )
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"] == "1"
                    status = status_pb2.Status.FromString(refused.content)
                    assert status.code == UNAVAILABLE and status.message == "ingest queue is full"
                    refused = probe.post("/v1/traces", json=records_doc("probe", 1, first=5000), headers=producer)
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"] == "1"
                    assert refused.json() == {"code": UNAVAILABLE, "message": "ingest queue is full"}
            with grpc.insecure_channel(server.grpc_target) as channel:
                call = channel.unary_unary(GRPC_METHOD)
                try:
                    call(one_span_request(99), metadata=(("authorization", f"Bearer {project.producer_key}"),))
                    raise AssertionError("gRPC export was accepted by a full queue")
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    retry = error_details_pb2.RetryInfo.FromString(
                        dict(error.trailing_metadata())["google.rpc.retryinfo-bin"]
                    )
                    assert retry.retry_delay.seconds == 1
            assert pending_rows(server) == MAX_PENDING

            # The real exporters meet the same full queue, then retry as the server told them.
            batches = {"http": finished_spans("over-http", 40), "grpc": finished_spans("over-grpc", 40)}
            headers = {"authorization": f"Bearer {project.producer_key}"}
            exporters = {
                "http": HttpSpanExporter(endpoint=f"{server.http_url}/v1/traces", headers=headers, timeout=30),
                "grpc": GrpcSpanExporter(endpoint=server.grpc_target, insecure=True, headers=headers, timeout=30),
            }
            results: dict[str, SpanExportResult] = {}
            threads = [
                threading.Thread(target=lambda k=k: results.setdefault(k, exporters[k].export(batches[k])), daemon=True)
                for k in exporters
            ]
            for thread in threads:
                thread.start()

            def retried() -> set[str]:
                return {
                    "grpc" if "grpc" in r.name else "http"
                    for r in caplog.records
                    if "retrying in" in r.getMessage() and r.name.startswith("opentelemetry.exporter")
                }

            wait_for(lambda: retried() == {"http", "grpc"}, "both exporters to be told to retry")
            assert pending_rows(server) == MAX_PENDING
            lock.release()
            released = True
            for thread in threads:
                thread.join(timeout=60)
                assert not thread.is_alive()
            filler.join(timeout=30)
        finally:
            if not released:
                lock.release()

        assert first["response"].status_code == 200 and first["response"].json()["accepted"] == MAX_PENDING
        assert results == {"http": SpanExportResult.SUCCESS, "grpc": SpanExportResult.SUCCESS}
        for exporter in exporters.values():
            exporter.shutdown()
        read = client.get("/v1/telemetry", params={"limit": 1000}, headers=project.auth("agent"))
        stored = read.json()["records"]
        by_service: dict[str, set[str]] = {}
        for record in stored:
            by_service.setdefault(record["service"], set()).add(record["span_id"])
        # Every exported span is there exactly once; none of the refused probes is.
        for key, spans in batches.items():
            assert by_service[f"over-{key}"] == {f"{s.get_span_context().span_id:016x}" for s in spans}
        assert len(stored) == 1 + MAX_PENDING + 80
        assert pending_rows(server) == 0
