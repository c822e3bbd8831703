"""Ingest errors, each with its HTTP status and its gRPC status code."""

from __future__ import annotations

import grpc


class IngestError(Exception):
    """A request-level failure; receivers map it to HTTP or gRPC without further logic."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(IngestError):
    """Malformed payload: not retried by clients."""


class UnsupportedMedia(IngestError):
    """Content type or content encoding LoopKit does not speak."""

    http_status = 415


class TooLarge(IngestError):
    """Body over the limit, before or after decompression."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class SlowBody(IngestError):
    """The body did not arrive in time (a stalled or deliberately slow client)."""

    http_status = 408
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(IngestError):
    """No key, or a key LoopKit does not know."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(IngestError):
    """A valid key without the scope this call needs."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(IngestError):
    """Overloaded or shutting down: clients retry after `retry_after` seconds."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    retry_after = 1


METRICS_REFUSED = (
    "LoopKit does not store metrics: send traces to /v1/traces and logs to /v1/logs, "
    "and remove metrics from this exporter's pipeline"
)


class NotStored(IngestError):
    """A signal LoopKit does not store (metrics): final, so exporters drop it instead of retrying.

    gRPC UNIMPLEMENTED and HTTP 501 are outside OTLP's retryable sets (gRPC: CANCELLED, DEADLINE_EXCEEDED,
    ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS; HTTP: 429, 502, 503, 504), see docs/api.md.
    """

    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
