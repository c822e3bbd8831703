"""What every receiver shares after its wire format: who is calling, decoding, and the commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from loopkit_core.model import Record
from loopkit_core.projects import AuthError, Principal, require
from loopkit_core.store.engines import Store
from loopkit_core.store.records import to_rows
from loopkit_core.store.writer import Overloaded, Writer, WriteResult
from loopkit_receivers import otlp_json, otlp_proto, records_shape
from loopkit_receivers.body import decompress
from loopkit_receivers.errors import BadRequest, Forbidden, Unauthenticated, Unavailable
from loopkit_receivers.spans import Decoded

WRITE_SCOPE = "telemetry:write"


@dataclass
class HttpPayload:
    """A decoded POST /v1/traces body: OTLP spans, or the plain records shape."""

    otlp: Decoded | None = None
    records: records_shape.RecordsBatch | None = None

    @property
    def to_store(self) -> list[Record]:
        """The records that passed validation."""
        return self.otlp.records if self.otlp is not None else self.records.records  # type: ignore[union-attr]


class Ingestor:
    """Authenticates producers, decodes payloads, and hands records to the batching writer."""

    def __init__(self, store: Store, writer: Writer, max_body_bytes: int, clock: Callable[[], float]) -> None:
        self.store = store
        self.writer = writer
        self.max_body_bytes = max_body_bytes
        self.clock = clock

    def principal(self, authorization: str | None, scope: str = WRITE_SCOPE) -> Principal:
        """The caller behind an authorization value; Unauthenticated or Forbidden otherwise."""
        try:
            return require(self.store.control, authorization, scope, self.clock())
        except AuthError as exc:
            raise (Unauthenticated if exc.status == 401 else Forbidden)(exc.message) from None

    def decode_http(self, body: bytes, media: str, encoding: str, principal: Principal) -> HttpPayload:
        """Decompress (capped) and decode an HTTP body of media type `proto` or `json`."""
        raw = decompress(body, encoding, self.max_body_bytes)
        now = time.time_ns()
        if media == "proto":
            return HttpPayload(otlp=otlp_proto.decode(otlp_proto.parse_request(raw), principal.project_id, now))
        doc = _parse_json(raw)
        if records_shape.is_records_shape(doc):
            return HttpPayload(records=records_shape.decode(doc, principal.project_id, now))
        return HttpPayload(otlp=otlp_json.decode(doc, principal.project_id, now))

    def decode_grpc(self, body: bytes, principal: Principal) -> Decoded:
        """Decode a raw gRPC request message."""
        return otlp_proto.decode(otlp_proto.parse_request(body), principal.project_id, time.time_ns())

    def submit(self, principal: Principal, records: list[Record]) -> Future[WriteResult]:
        """Queue records for one commit under the project's quota; the future resolves once durable."""
        try:
            return self.writer.submit(principal.project_id, to_rows(records, time.time_ns()), principal.quota_spans)
        except Overloaded as exc:
            raise Unavailable(str(exc)) from exc


def quota_reason(principal: Principal) -> str:
    """Why the store refused records: the project's quota is used up (final, not retryable)."""
    return f"project quota of {principal.quota_spans} records reached; see /contact.json for an uncapped project"


def settle(payload: HttpPayload | Decoded, result: WriteResult, principal: Principal) -> None:
    """Report the records the store refused for quota as rejected, in the payload's own answer."""
    if not result.over_quota:
        return
    if isinstance(payload, Decoded):
        payload.reject(quota_reason(principal), len(result.over_quota))
    elif payload.records is not None:
        payload.records.refuse(result.over_quota, quota_reason(principal))
    elif payload.otlp is not None:
        payload.otlp.reject(quota_reason(principal), len(result.over_quota))


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
