"""Ingest on core's side of the sink: sign decoded records, build their rows, and commit them through the writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from loopkit_core.identity import Principal
from loopkit_core.model import FAILURE_TYPES, Record
from loopkit_core.plugins import Plugins
from loopkit_core.projects import require
from loopkit_core.sink import WRITE_SCOPE, Ack, Batch
from loopkit_core.store.engines import Store
from loopkit_core.store.records import resource_rows, to_rows
from loopkit_core.store.writer import Writer

log = logging.getLogger("loopkit.ingest")
MAX_SIGNATURE_KEY = 32  # the stored column's width (records.signature, signatures.signature)
MAX_TEMPLATE = 4096  # characters of a signature's template and operation, as stored once in `signatures`


def prepare(records: list[Record], plugins: Plugins, payload: Any = None) -> Batch:
    """Sign records (record_signature hook) and turn them into rows; runs in decode workers as well."""
    signatures = sign(records, plugins)
    return Batch(payload, to_rows(records, time.time_ns()), signatures, resource_rows(records))


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
        if not _usable(signature):
            # A plugin's key that the store cannot hold would fail the whole commit (PostgreSQL's VARCHAR(32)).
            log.error("record_signature returned an unusable key %r; record stored without a signature", signature)
            continue
        record.signature = signature.key
        if signature.key not in described:
            described[signature.key] = {
                "signature": signature.key,
                "template": signature.template[:MAX_TEMPLATE],
                "type": record.type,
                "operation": signature.operation[:MAX_TEMPLATE],
                "service": record.service,
                "exception_type": record.exception_type or "",
            }
    return list(described.values())


def _usable(signature: Any) -> bool:
    key = getattr(signature, "key", None)
    return (
        isinstance(key, str)
        and 0 < len(key) <= MAX_SIGNATURE_KEY
        and key.isascii()
        and key.isprintable()
        and isinstance(getattr(signature, "template", None), str)
        and isinstance(getattr(signature, "operation", None), str)
    )


class StoreSink:
    """The Sink every receiver is given: keys checked against the control database, batches to the writer."""

    def __init__(self, store: Store, writer: Writer, clock: Callable[[], float]) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock

    def authenticate(self, authorization: str | None, scope: str = WRITE_SCOPE) -> Principal:
        """The producer behind an authorization header value; projects.AuthError (401/403) otherwise."""
        return require(self.store.control, authorization, scope, self.clock())

    def consume(self, principal: Principal, batch: Batch) -> Future[Ack]:
        """Queue a batch for one commit under the project's quota; the future resolves once it is durable."""
        return self.writer.submit(
            principal.project_id, batch.rows, principal.quota_spans, batch.signatures, batch.resources
        )
