"""OTLP/gRPC `TraceService/Export` and `LogsService/Export`: the same ingest path as HTTP behind grpcio's server;
`MetricsService/Export` refused as a signal LoopKit does not store."""

from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from loopkit_core.sink import CommitFailed
from loopkit_receivers.errors import METRICS_REFUSED, IngestError, NotStored, Unavailable
from loopkit_receivers.intake import LOGS, TRACES, Intake, settle

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
MAX_STREAMS_PER_CONNECTION = 100
IDLE_CONNECTION_SECONDS = 300


class TraceService:
    """The Export handler; it receives raw bytes so malformed protobuf is INVALID_ARGUMENT, not INTERNAL."""

    def __init__(self, intake: Intake, signal: str = TRACES) -> None:
        self.intake = intake
        self.signal = signal

    def export(
        self, request: bytes, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse | ExportLogsServiceResponse:
        """Decode, commit, then answer (with partial success for spans or log records rejected alone)."""
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            principal = self.intake.principal(metadata.get("authorization"))
            batch = self.intake.decoder.grpc(request, principal.project_id, self.signal)
            decoded = batch.payload
            settle(decoded, self.intake.consume(principal, batch).result(), principal)
        except IngestError as exc:
            _abort(context, exc)
        except CommitFailed as exc:
            _abort(context, Unavailable(str(exc)))
        if self.signal == LOGS:
            logs = ExportLogsServiceResponse()
            if decoded.rejected:
                logs.partial_success.CopyFrom(
                    ExportLogsPartialSuccess(
                        rejected_log_records=decoded.rejected, error_message=decoded.error_message()
                    )
                )
            return logs
        response = ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=decoded.rejected, error_message=decoded.error_message())
            )
        return response


def refuse_metrics(request: bytes, context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
    """MetricsService/Export: UNIMPLEMENTED, which OTLP exporters do not retry (docs/api.md)."""
    _abort(context, NotStored(METRICS_REFUSED))
    return ExportMetricsServiceResponse()  # not reached: abort raises


def _abort(context: grpc.ServicerContext, exc: IngestError) -> None:
    if exc.retry_after:
        # Python exporters read RetryInfo from this trailer, Go clients and the Collector from the
        # status details: send both.
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=exc.retry_after))
        detail = any_pb2.Any()
        detail.Pack(retry)
        status = status_pb2.Status(code=exc.grpc_code.value[0], message=exc.message, details=[detail])
        context.set_trailing_metadata(
            (
                ("google.rpc.retryinfo-bin", retry.SerializeToString()),
                ("grpc-status-details-bin", status.SerializeToString()),
            )
        )
    context.abort(exc.grpc_code, exc.message)


def create_server(
    intake: Intake,
    host: str,
    port: int,
    max_message_bytes: int,
    workers: int,
    handshake_timeout_seconds: float = 10.0,
    max_connections: int = 1000,
) -> tuple[grpc.Server, int]:
    """A started-but-not-running gRPC server bound to host:port; returns it and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loopkit-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # grpcio defaults to SO_REUSEPORT: a second server on a taken port would start and share it.
            ("grpc.so_reuseport", 0),
            # What bounds a connection's resources (docs/reliability.md): a client must send the HTTP/2 preface
            # and SETTINGS within the handshake timeout (else GOAWAY and close; grpcio's default is 120 s);
            # connections past the limit are closed as soon as they are accepted; one connection carries at
            # most 100 concurrent streams (clients queue the rest); a connection without calls for 5 minutes
            # is closed (clients reconnect on their next export).
            ("grpc.server_handshake_timeout_ms", max(int(handshake_timeout_seconds * 1000), 1)),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_SECONDS * 1000),
        ],
    )
    handlers = []
    for name, handle, response in (
        (SERVICE, TraceService(intake).export, ExportTraceServiceResponse),
        (LOGS_SERVICE, TraceService(intake, LOGS).export, ExportLogsServiceResponse),
        (METRICS_SERVICE, refuse_metrics, ExportMetricsServiceResponse),
    ):
        method = grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=None, response_serializer=response.SerializeToString
        )
        handlers.append(grpc.method_handlers_generic_handler(name, {"Export": method}))
    server.add_generic_rpc_handlers(tuple(handlers))
    bound = server.add_insecure_port(_address(host, port))
    if bound == 0:
        raise OSError(f"could not bind OTLP/gRPC to {host}:{port}")
    return server, bound


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
