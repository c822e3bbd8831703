"""What every receiver shares after its wire format: who is calling, decoding, the hand-off to the sink, the answer."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from loopkit_core.identity import AuthError, Principal
from loopkit_core.model import Record
from loopkit_core.sink import Ack, Batch, Overloaded, Sink, quota_reason
from loopkit_receivers import otlp_json, otlp_logs_json, otlp_logs_proto, otlp_proto, records_shape
from loopkit_receivers.body import decompress
from loopkit_receivers.errors import BadRequest, Forbidden, Unauthenticated, Unavailable
from loopkit_receivers.limits import DEFAULT as DEFAULT_LIMITS
from loopkit_receivers.limits import Limits
from loopkit_receivers.limits import apply as apply_limits
from loopkit_receivers.spans import Decoded

TRACES, LOGS = "traces", "logs"  # the signals LoopKit receives (metrics are refused: see otlp_http.refuse_metrics)


@dataclass
class HttpPayload:
    """A decoded POST /v1/traces body: OTLP spans, or the plain records shape."""

    otlp: Decoded | None = None
    records: records_shape.RecordsBatch | None = None

    @property
    def to_store(self) -> list[Record]:
        """The records that passed validation."""
        return self.otlp.records if self.otlp is not None else self.records.records  # type: ignore[union-attr]

    def drop_records(self) -> None:
        """Forget the decoded records once they are rows (only the answer state travels back)."""
        if self.otlp is not None:
            self.otlp.records = []
        elif self.records is not None:
            self.records.records = []


class Decoder(Protocol):
    """Turns request bytes into a Batch (decoded, limited, signed, rows built), possibly in worker processes."""

    async def http(
        self, body: bytes, media: str, encoding: str, max_body_bytes: int, project_id: str, signal: str = TRACES
    ) -> Batch:
        """An HTTP body of media type `proto` or `json` (traces or logs) as a Batch whose payload is an HttpPayload."""
        ...

    def grpc(self, body: bytes, project_id: str, signal: str = TRACES) -> Batch:
        """A raw gRPC request message (traces or logs) as a Batch whose payload is a Decoded."""
        ...


@dataclass
class Intake:
    """What the composition module hands every receiver: the sink, the decoder and the request bounds."""

    sink: Sink
    decoder: Decoder
    max_body_bytes: int
    body_timeout_seconds: float

    def principal(self, authorization: str | None) -> Principal:
        """The producer behind an authorization value; Unauthenticated or Forbidden otherwise."""
        try:
            return self.sink.authenticate(authorization)
        except AuthError as exc:
            raise (Unauthenticated if exc.status == 401 else Forbidden)(exc.message) from None

    def consume(self, principal: Principal, batch: Batch) -> Future[Ack]:
        """Hand a batch to the sink; Unavailable (retryable) when it is too far behind."""
        try:
            return self.sink.consume(principal, batch)
        except Overloaded as exc:
            raise Unavailable(str(exc)) from exc


def decode_http(
    body: bytes,
    media: str,
    encoding: str,
    max_body_bytes: int,
    project_id: str,
    limits: Limits = DEFAULT_LIMITS,
    signal: str = TRACES,
) -> HttpPayload:
    """Decompress (capped) and decode an HTTP body of media type `proto` or `json`, then apply the size limits."""
    raw = decompress(body, encoding, max_body_bytes)
    now = time.time_ns()
    if signal == LOGS:
        if media == "proto":
            logs = otlp_logs_proto.decode(otlp_logs_proto.parse_request(raw), project_id, now, limits.spans)
        else:
            logs = otlp_logs_json.decode(_parse_json(raw), project_id, now, max_records=limits.spans)
        payload = HttpPayload(otlp=logs)
    elif media == "proto":
        request = otlp_proto.parse_request(raw)
        payload = HttpPayload(otlp=otlp_proto.decode(request, project_id, now, max_spans=limits.spans))
    else:
        doc = _parse_json(raw)
        if records_shape.is_records_shape(doc):
            payload = HttpPayload(records=records_shape.decode(doc, project_id, now, max_records=limits.spans))
        else:
            payload = HttpPayload(otlp=otlp_json.decode(doc, project_id, now, max_spans=limits.spans))
    apply_limits(payload.to_store, limits)  # over-long values and too many attributes are cut, never rejected
    return payload


def decode_grpc(body: bytes, project_id: str, limits: Limits = DEFAULT_LIMITS, signal: str = TRACES) -> Decoded:
    """Decode a raw gRPC request message, then apply the size limits."""
    if signal == LOGS:
        logs = otlp_logs_proto.parse_request(body)
        decoded = otlp_logs_proto.decode(logs, project_id, time.time_ns(), max_records=limits.spans)
    else:
        request = otlp_proto.parse_request(body)
        decoded = otlp_proto.decode(request, project_id, time.time_ns(), max_spans=limits.spans)
    apply_limits(decoded.records, limits)
    return decoded


def settle(payload: HttpPayload | Decoded, ack: Ack, principal: Principal) -> None:
    """Fit the payload's answer to what the store did: quota refusals rejected, re-sent spans under their stored IDs."""
    if isinstance(payload, HttpPayload) and payload.records is not None:
        payload.records.use_stored_ids(ack.stored_as)
    if not ack.over_quota:
        return
    if isinstance(payload, Decoded):
        payload.reject(quota_reason(principal), len(ack.over_quota))
    elif payload.records is not None:
        payload.records.refuse(ack.over_quota, quota_reason(principal))
    elif payload.otlp is not None:
        payload.otlp.reject(quota_reason(principal), len(ack.over_quota))


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
