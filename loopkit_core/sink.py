"""The sink: where receivers hand decoded records (the Collector's consumer), and what it answers.

Receivers only translate a wire format. They ask the sink who is calling (`authenticate`), decode the body
into a `Batch` through the decoder they were given, hand the batch to `consume`, and answer their client once
the returned future says the batch is durable (`Ack`). They never see the store: rows inside a batch are
opaque to them, built by `loopkit_core.ingest.prepare`.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from loopkit_core.identity import Principal
from loopkit_core.scopes import TELEMETRY_WRITE

WRITE_SCOPE = TELEMETRY_WRITE


@dataclass
class Batch:
    """One request made ready for the store: the receiver's payload (to answer with) and the rows to commit."""

    payload: Any  # the receiver's decoded request (its answer state), records already turned into rows
    rows: list[tuple[Any, ...]]  # opaque to receivers: store rows, built by loopkit_core.ingest.prepare
    signatures: list[dict[str, Any]]  # the rows' distinct grouping signatures, described
    resources: list[tuple[str, str]]  # (resource_key, JSON) of the rows' resources


@dataclass
class Ack:
    """What the commit did with one batch's rows."""

    inserted: int = 0  # new rows (duplicates of stored records are not counted)
    over_quota: list[int] = field(default_factory=list)  # indexes of rows refused by the project's quota
    # Rows whose span was already stored under another record ID (re-sent with another start time): index -> that ID.
    stored_as: dict[int, str] = field(default_factory=dict)


class Overloaded(Exception):
    """The sink is too far behind (or shutting down); the client should retry later."""

    retry_after_seconds = 1


class CommitFailed(Exception):
    """The store refused a commit (disk full, database locked too long, ...)."""

    def __init__(self, project_id: str) -> None:
        super().__init__(f"could not store records for project {project_id}")


class Sink(Protocol):
    """What receivers need from core: identity from the key, and a durable hand-off of decoded batches."""

    def authenticate(self, authorization: str | None, scope: str = WRITE_SCOPE) -> Principal:
        """The producer behind an authorization header value; projects.AuthError (401/403) otherwise."""
        ...

    def consume(self, principal: Principal, batch: Batch) -> Future[Ack]:
        """Queue a batch for one commit under the project's quota; the future resolves once it is durable.

        Raises Overloaded when the queue is full; the future fails with CommitFailed when the store refuses.
        """
        ...


def quota_reason(principal: Principal) -> str:
    """Why the store refused records: the project's quota is used up (final, not retryable)."""
    return f"project quota of {principal.quota_spans} records reached; see /contact.json for an uncapped project"
