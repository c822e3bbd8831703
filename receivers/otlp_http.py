"""OTLP/HTTP `POST /v1/traces` (protobuf, OTLP/JSON and the records shape) and `POST /v1/logs` on one path;
`POST /v1/metrics` refused as a signal LoopKit does not store."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from loopkit_core.sink import CommitFailed
from loopkit_receivers import records_shape
from loopkit_receivers.errors import (
    METRICS_REFUSED,
    BadRequest,
    IngestError,
    NotStored,
    SlowBody,
    TooLarge,
    Unavailable,
    UnsupportedMedia,
)
from loopkit_receivers.intake import LOGS, TRACES, HttpPayload, Intake, settle

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA = {PROTOBUF: "proto", JSON: "json"}


async def export_traces(request: Request) -> Response:
    """Receive one OTLP/HTTP export (or records POST); answer only after the data is committed."""
    return await _export(request, TRACES)


async def export_logs(request: Request) -> Response:
    """Receive one OTLP/HTTP logs export; answer only after the log records are committed."""
    return await _export(request, LOGS)


async def refuse_metrics(request: Request) -> Response:
    """POST /v1/metrics: 501 with an UNIMPLEMENTED status, which OTLP exporters treat as final (no retry)."""
    media = _MEDIA.get(request.headers.get("content-type", "").split(";")[0].strip().lower()) or "json"
    return _status(NotStored(METRICS_REFUSED), media)


async def _export(request: Request, signal: str) -> Response:
    intake: Intake = request.app.state.intake
    media = _MEDIA.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
    try:
        # The key first: a caller without one learns nothing but 401, whatever else is wrong.
        principal = await run_in_threadpool(intake.principal, request.headers.get("authorization"))
        if media is None:
            raise UnsupportedMedia("Content-Type must be application/x-protobuf or application/json")
        try:
            async with asyncio.timeout(intake.body_timeout_seconds):
                body = await _read_body(request, intake.max_body_bytes)
        except TimeoutError:
            raise SlowBody("the request body did not arrive in time") from None
        encoding = request.headers.get("content-encoding", "")
        batch = await intake.decoder.http(body, media, encoding, intake.max_body_bytes, principal.project_id, signal)
        payload = batch.payload
        settle(payload, await asyncio.wrap_future(intake.consume(principal, batch)), principal)
    except IngestError as exc:
        return _status(exc, media or "json")
    except CommitFailed as exc:
        return _status(Unavailable(str(exc)), media or "json")
    return _success(payload, media, signal)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("Content-Length must be a number")
        if int(length) > limit:
            raise TooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    try:
        # Chunked bodies have no Content-Length: the cap is enforced while streaming.
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise TooLarge(f"body exceeds the limit of {limit} bytes")
    except ClientDisconnect:
        raise BadRequest("client disconnected before sending the whole body") from None
    return bytes(body)


def _success(payload: HttpPayload, media: str, signal: str) -> Response:
    if payload.records is not None:
        return Response(orjson.dumps(records_shape.response(payload.records)), 200, media_type=JSON)
    decoded = payload.otlp
    assert decoded is not None
    if media == "proto":
        message: ExportTraceServiceResponse | ExportLogsServiceResponse
        if signal == LOGS:
            message = ExportLogsServiceResponse()
            if decoded.rejected:
                message.partial_success.CopyFrom(
                    ExportLogsPartialSuccess(
                        rejected_log_records=decoded.rejected, error_message=decoded.error_message()
                    )
                )
        else:
            message = ExportTraceServiceResponse()
            if decoded.rejected:
                message.partial_success.CopyFrom(
                    ExportTracePartialSuccess(rejected_spans=decoded.rejected, error_message=decoded.error_message())
                )
        return Response(message.SerializeToString(), 200, media_type=PROTOBUF)
    body: dict[str, Any] = {}
    if decoded.rejected:
        # Proto3 JSON writes int64 as a decimal string.
        counted = "rejectedLogRecords" if signal == LOGS else "rejectedSpans"
        body["partialSuccess"] = {counted: str(decoded.rejected), "errorMessage": decoded.error_message()}
    return Response(orjson.dumps(body), 200, media_type=JSON)


def _status(exc: IngestError, media: str) -> Response:
    """An OTLP error answer: a google.rpc.Status in the request's encoding."""
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after else None
    code = exc.grpc_code.value[0]
    if media == "proto":
        body = status_pb2.Status(code=code, message=exc.message).SerializeToString()
        return Response(body, exc.http_status, headers=headers, media_type=PROTOBUF)
    return Response(
        orjson.dumps({"code": code, "message": exc.message}), exc.http_status, headers=headers, media_type=JSON
    )
