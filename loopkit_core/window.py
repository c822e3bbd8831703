"""The bounded window a diagnoser reads: grouped queries that stay cheap on millions of records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from loopkit_core.store.records import selector_condition, to_json
from loopkit_core.store.schema import issue_signatures, issues, records, signatures

FAILURE_TYPES = ("error", "tool_failure")


@dataclass(frozen=True)
class SignatureGroup:
    """The records of one ingest signature in the window."""

    signature: str
    template: str
    type: str
    operation: str
    service: str
    exception_type: str
    count: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True)
class KnownIssue:
    """An issue a previous diagnosis of this project found (identity kept across runs)."""

    fingerprint: str
    issue_id: str
    title: str
    template: str | None
    selector: dict[str, Any]
    first_seen_ns: int


@dataclass(frozen=True)
class Window:
    """Records of one project with start_ns <= timestamp < end_ns; the only data a diagnoser may read."""

    project_id: str
    start_ns: int
    end_ns: int
    engine: Engine

    def _in_window(self) -> Any:
        return (records.c.ts_ns >= self.start_ns) & (records.c.ts_ns < self.end_ns)

    def signature_groups(self) -> list[SignatureGroup]:
        """One row per distinct signature among the window's errors and tool failures (grouped in SQL)."""
        r, s = records.c, signatures.c
        counted = (
            select(
                r.signature, func.count().label("n"), func.min(r.ts_ns).label("first"), func.max(r.ts_ns).label("last")
            )
            .where(r.signature.is_not(None), self._in_window())
            .group_by(r.signature)
            .subquery()
        )
        stmt = select(counted, s.template, s.type, s.operation, s.service, s.exception_type).join(
            signatures, s.signature == counted.c.signature
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            SignatureGroup(
                row.signature,
                row.template,
                row.type,
                row.operation,
                row.service,
                row.exception_type,
                row.n,
                row.first,
                row.last,
            )
            for row in rows
        ]

    def known_issues(self, diagnoser: str) -> list[KnownIssue]:
        """Issues this diagnoser reported in earlier runs of this project."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(issues).where(issues.c.diagnoser == diagnoser)).all()
        return [
            KnownIssue(
                row.fingerprint, row.issue_id, row.title, row.template, orjson.loads(row.selector), row.first_seen_ns
            )
            for row in rows
        ]

    def known_signatures(self) -> dict[str, str]:
        """Signature -> issue fingerprint for every signature an earlier diagnosis assigned."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(issue_signatures.c.signature, issue_signatures.c.fingerprint)).all())

    def summary(self, selector: dict[str, Any]) -> tuple[int, int, int]:
        """(count, first_ns, last_ns) of a selector's records in the window."""
        r = records.c
        stmt = select(func.count(), func.min(r.ts_ns), func.max(r.ts_ns)).where(
            self._in_window(), selector_condition(selector)
        )
        with self.engine.connect() as conn:
            count, first, last = conn.execute(stmt).one()
        return count, first or 0, last or 0

    def sample(self, selector: dict[str, Any], limit: int = 10, slowest: bool = False) -> list[dict[str, Any]]:
        """Up to `limit` of a selector's records in the window: the newest, or the slowest."""
        r = records.c
        order = (r.duration_ms.desc(), r.record_id) if slowest else (r.ts_ns.desc(), r.record_id.desc())
        stmt = select(records).where(self._in_window(), selector_condition(selector)).order_by(*order).limit(limit)
        with self.engine.connect() as conn:
            return [to_json(row) for row in conn.execute(stmt).all()]

    def counts_by_type(self) -> dict[str, int]:
        """How many records of each signal type the window holds."""
        stmt = select(records.c.type, func.count()).where(self._in_window()).group_by(records.c.type)
        with self.engine.connect() as conn:
            return dict(conn.execute(stmt).all())
