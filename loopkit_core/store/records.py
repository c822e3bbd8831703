"""Record rows: converting the model to rows, the dedup insert, and bounded window reads."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, func, or_, select
from sqlalchemy.dialects import sqlite

from loopkit_core.model import Record, rfc3339
from loopkit_core.store.schema import counters, records

MAX_PAGE = 1000
# Timestamps are signed 64-bit unix nanoseconds (SQLite INTEGER).
MAX_NS = 2**63 - 1


def to_rows(batch: list[Record], received_ns: int) -> list[dict[str, Any]]:
    """Rows for the insert; a resource shared by many spans is encoded once."""
    dumps = orjson.dumps
    resource_json: dict[int, str] = {}
    rows = []
    for r in batch:
        res = resource_json.get(id(r.resource))
        if res is None:
            res = resource_json[id(r.resource)] = dumps(r.resource).decode()
        rows.append(
            {
                "record_id": r.record_id,
                "ts_ns": r.ts_ns,
                "end_ns": r.end_ns,
                "duration_ms": r.duration_ms,
                "received_ns": received_ns,
                "type": r.type,
                "name": r.name,
                "service": r.service,
                "status": r.status,
                "message": r.message,
                "trace_id": r.trace_id,
                "span_id": r.span_id,
                "parent_span_id": r.parent_span_id,
                "session_id": r.session_id,
                "user_id": r.user_id,
                "kind": r.kind,
                "scope": r.scope,
                "exception_type": r.exception_type,
                "attributes": dumps(r.attributes).decode(),
                "resource": res,
                "events": dumps(r.events).decode(),
                "links": dumps(r.links).decode(),
                "fingerprint": r.fingerprint,
            }
        )
    return rows


# The same span re-sent (same record ID) is stored once: the first copy wins.
INSERT = sqlite.insert(records).on_conflict_do_nothing(index_elements=["record_id"])


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert rows in one executemany; duplicates of stored record IDs are skipped. Returns rows added."""
    return conn.execute(INSERT, rows).rowcount


def record_exists(conn: Connection, record_id: str) -> bool:
    """Whether a record ID is already stored."""
    return conn.execute(select(records.c.seq).where(records.c.record_id == record_id)).first() is not None


ACCEPTED = "accepted_total"


def accepted_total(conn: Connection) -> int:
    """Records ever accepted by the project (what quotas count); falls back to a count of stored rows."""
    value = conn.execute(select(counters.c.value).where(counters.c.name == ACCEPTED)).scalar()
    if value is None:
        value = conn.execute(select(func.count()).select_from(records)).scalar() or 0
    return value


def write_accepted_total(conn: Connection, value: int) -> None:
    """Store the running total of records ever accepted."""
    stmt = sqlite.insert(counters).values(name=ACCEPTED, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": value}))


def to_json(row: Any) -> dict[str, Any]:
    """A stored row as the API's record object."""
    loads = orjson.loads
    return {
        "record_id": row.record_id,
        "type": row.type,
        "name": row.name,
        "service": row.service,
        "timestamp": rfc3339(row.ts_ns),
        "end_timestamp": rfc3339(row.end_ns),
        "timestamp_unix_nano": row.ts_ns,
        "duration_ms": row.duration_ms,
        "status": row.status,
        "message": row.message,
        "exception_type": row.exception_type,
        "trace_id": row.trace_id,
        "span_id": row.span_id,
        "parent_span_id": row.parent_span_id,
        "session_id": row.session_id,
        "user_id": row.user_id,
        "kind": row.kind,
        "scope": row.scope,
        "attributes": loads(row.attributes),
        "resource": loads(row.resource),
        "events": loads(row.events),
        "links": loads(row.links),
        "fingerprint": row.fingerprint,
        "received_at": rfc3339(row.received_ns),
    }


@dataclass(frozen=True)
class WindowQuery:
    """A bounded read: [start_ns, end_ns), equality filters, a page size and a keyset position."""

    start_ns: int
    end_ns: int
    limit: int = 100
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    after: tuple[int, str] | None = None  # (ts_ns, record_id) of the last record already returned


FILTER_COLUMNS = ("type", "name", "service", "record_id", "trace_id", "session_id", "fingerprint")


def read_window(engine: Engine, query: WindowQuery) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """One page, newest first, and the keyset position of the next page (None at the end)."""
    c = records.c
    conditions = [c.ts_ns >= query.start_ns, c.ts_ns < query.end_ns]
    for column, values in query.filters:
        col = c[column]
        conditions.append(col == values[0] if len(values) == 1 else col.in_(values))
    if query.after is not None:
        ts, rid = query.after
        conditions.append(or_(c.ts_ns < ts, and_(c.ts_ns == ts, c.record_id < rid)))
    stmt = select(records).where(*conditions).order_by(c.ts_ns.desc(), c.record_id.desc()).limit(query.limit + 1)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_after = (rows[-1].ts_ns, rows[-1].record_id) if more and rows else None
    return [to_json(r) for r in rows], next_after


def get_record(engine: Engine, record_id: str) -> dict[str, Any] | None:
    """One record by ID, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.record_id == record_id)).first()
    return None if row is None else to_json(row)


def encode_cursor(query: WindowQuery, after: tuple[int, str]) -> str:
    """An opaque cursor that pins the window, so later pages read the same bounded window."""
    s, e, t, r = query.start_ns, query.end_ns, after[0], after[1]
    payload = orjson.dumps({"s": s, "e": e, "t": t, "r": r, "c": _cursor_check(s, e, t, r)})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int, tuple[int, str]]:
    """(start_ns, end_ns, after) from a cursor; ValueError when it is not one of ours."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        data = orjson.loads(raw)
        start, end, ts, rid, check = data["s"], data["e"], data["t"], data["r"], data["c"]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if check != _cursor_check(start, end, ts, rid):  # an edited cursor is refused, not half-obeyed
        raise ValueError("invalid cursor")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_NS for v in (start, end, ts)):
        raise ValueError("invalid cursor")
    if start > end:
        raise ValueError("invalid cursor")
    if not isinstance(rid, str) or len(rid) > 40:
        raise ValueError("invalid cursor")
    return start, end, (ts, rid)


def _cursor_check(*fields: object) -> str:
    return hashlib.blake2b(repr(fields).encode(), digest_size=8).hexdigest()
