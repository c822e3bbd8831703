"""What every receiver shares after its wire format: who is calling, decoding, and the commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from loopkit_core.model import FAILURE_TYPES, Record
from loopkit_core.plugins import Plugins
from loopkit_core.projects import AuthError, Principal, require
from loopkit_core.scopes import TELEMETRY_WRITE
from loopkit_core.store.engines import Store
from loopkit_core.store.records import Row, resource_rows, to_rows
from loopkit_core.store.writer import Overloaded, Writer, WriteResult
from loopkit_receivers import otlp_json, otlp_proto, records_shape
from loopkit_receivers.body import decompress
from loopkit_receivers.errors import BadRequest, Forbidden, Unauthenticated, Unavailable
from loopkit_receivers.limits import DEFAULT as DEFAULT_LIMITS
from loopkit_receivers.limits import Limits
from loopkit_receivers.limits import apply as apply_limits
from loopkit_receivers.spans import Decoded

WRITE_SCOPE = TELEMETRY_WRITE
log = logging.getLogger("loopkit.ingest")


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

    def __init__(
        self, store: Store, writer: Writer, max_body_bytes: int, clock: Callable[[], float], plugins: Plugins
    ) -> None:
        self.plugins = plugins
        self.store = store
        self.writer = writer
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        from loopkit_receivers.decode_pool import DecodePool  # it builds on this module's functions

        # Decoding on threads of this process; `loopkit serve` swaps in worker processes (decode_workers).
        self.decoder = DecodePool(0, plugins, [], Limits.from_settings(store.settings))

    def principal(self, authorization: str | None, scope: str = WRITE_SCOPE) -> Principal:
        """The caller behind an authorization value; Unauthenticated or Forbidden otherwise."""
        try:
            return require(self.store.control, authorization, scope, self.clock())
        except AuthError as exc:
            raise (Unauthenticated if exc.status == 401 else Forbidden)(exc.message) from None

    def decode_http(self, body: bytes, media: str, encoding: str, principal: Principal) -> HttpPayload:
        """Decompress (capped) and decode an HTTP body of media type `proto` or `json`."""
        return decode_http(body, media, encoding, self.max_body_bytes, principal.project_id)

    def decode_grpc(self, body: bytes, principal: Principal) -> Decoded:
        """Decode a raw gRPC request message."""
        return otlp_proto.decode(otlp_proto.parse_request(body), principal.project_id, time.time_ns())

    def submit(self, principal: Principal, records: list[Record]) -> Future[WriteResult]:
        """Queue records for one commit under the project's quota; the future resolves once durable."""
        return self.commit(principal, prepare(records, self.plugins, self.decoder.limits))

    def commit(self, principal: Principal, prepared: Prepared) -> Future[WriteResult]:
        """Queue prepared rows for one commit under the project's quota; the future resolves once durable."""
        try:
            return self.writer.submit(
                principal.project_id, prepared.rows, principal.quota_spans, prepared.signatures, prepared.resources
            )
        except Overloaded as exc:
            raise Unavailable(str(exc)) from exc

    def sign(self, records: list[Record]) -> list[dict[str, Any]]:
        """Set each failure's grouping signature (record_signature hook); the distinct ones described."""
        return sign(records, self.plugins)


@dataclass
class Prepared:
    """A request made ready for the writer: its rows and signatures, and what its answer needs."""

    payload: HttpPayload | Decoded
    rows: list[Row]
    signatures: list[dict[str, Any]]
    resources: list[tuple[str, str]]  # (resource_key, JSON) of the rows' resources


def prepare(records: list[Record], plugins: Plugins, limits: Limits = DEFAULT_LIMITS) -> Prepared:
    """Sign records and turn them into rows (the payload is left empty; callers that need it set it)."""
    apply_limits(records, limits)  # over-long values and too many attributes are cut, never rejected
    signatures = sign(records, plugins)
    return Prepared(Decoded(), to_rows(records, time.time_ns()), signatures, resource_rows(records))


def decode_http(body: bytes, media: str, encoding: str, max_body_bytes: int, project_id: str) -> HttpPayload:
    """Decompress (capped) and decode an HTTP body of media type `proto` or `json`."""
    raw = decompress(body, encoding, max_body_bytes)
    now = time.time_ns()
    if media == "proto":
        return HttpPayload(otlp=otlp_proto.decode(otlp_proto.parse_request(raw), project_id, now))
    doc = _parse_json(raw)
    if records_shape.is_records_shape(doc):
        return HttpPayload(records=records_shape.decode(doc, project_id, now))
    return HttpPayload(otlp=otlp_json.decode(doc, project_id, now))


def sign(records: list[Record], plugins: Plugins) -> list[dict[str, Any]]:
    """Set each failure's grouping signature (record_signature hook); the distinct ones described."""
    described: dict[str, dict[str, Any]] = {}
    hook = plugins.hook.record_signature
    for record in records:
        if record.type not in FAILURE_TYPES:
            continue
        try:
            signature = hook(record=record)
        except Exception:  # a broken signature plugin must not lose data: store the record unsigned
            log.exception("record_signature failed; record stored without a signature")
            continue
        if signature is None:
            continue
        record.signature = signature.key
        if signature.key not in described:
            described[signature.key] = {
                "signature": signature.key,
                "template": signature.template,
                "type": record.type,
                "operation": signature.operation,
                "service": record.service,
                "exception_type": record.exception_type or "",
            }
    return list(described.values())


def quota_reason(principal: Principal) -> str:
    """Why the store refused records: the project's quota is used up (final, not retryable)."""
    return f"project quota of {principal.quota_spans} records reached; see /contact.json for an uncapped project"


def settle(payload: HttpPayload | Decoded, result: WriteResult, principal: Principal) -> None:
    """Fit the payload's answer to what the store did: quota refusals rejected, re-sent spans under their stored IDs."""
    if isinstance(payload, HttpPayload) and payload.records is not None:
        payload.records.use_stored_ids(result.stored_as)
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
