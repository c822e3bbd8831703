"""Record rows: converting the model to rows, the dedup insert, and bounded window reads."""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Engine, and_, or_, select

from loopkit_core.model import Record, rfc3339
from loopkit_core.selectors import (
    AnyOf,
    RecordIds,
    Records,
    RuleGroup,
    Selector,
    Signatures,
    SlowCalls,
    parse_selector,
)
from loopkit_core.store import day_tables, dialect, partial_indexes, pg_copy, resends
from loopkit_core.store.rule_conditions import match_condition, part_condition, rule_fingerprints
from loopkit_core.store.schema import (
    RECORD_COLUMNS,
    Row,
    issue_signatures,
    records,
    resources,
    signatures,
)

MAX_PAGE = 1000


def to_rows(batch: list[Record], received_ns: int) -> list[Row]:
    """Rows for the insert, in RECORD_COLUMNS order; each row points to its resource (see resource_rows)."""
    dumps = orjson.dumps
    resource_keys: dict[int, str] = {}
    marks = partial_indexes.Marks()
    runs = partial_indexes.trace_runs(batch)
    rows = []
    for r, run in zip(batch, runs, strict=True):
        key = resource_keys.get(id(r.resource))
        if key is None:  # the spans of one resource share its dict: encode and hash it once
            key = resource_keys[id(r.resource)] = resource_row(r.resource)[0]
        rows.append(
            (
                r.record_id,
                r.ts_ns,
                r.end_ns,
                r.duration_ms,
                received_ns,
                r.type,
                r.name,
                r.service,
                r.status,
                r.message,
                r.trace_id,
                r.span_id,
                r.parent_span_id,
                r.session_id,
                r.user_id,
                r.kind,
                r.scope,
                r.exception_type,
                dumps(r.attributes).decode(),
                "",  # resource: stored once, under resource_key
                dumps(r.events).decode() if r.events else "[]",  # most spans have none: skip the call
                dumps(r.links).decode() if r.links else "[]",
                r.signature,
                key,
                marks.of(r.session_id, r.trace_id, r.ts_ns),
                run,
            )
        )
    return rows


def resource_rows(batch: list[Record]) -> list[tuple[str, str]]:
    """(resource_key, JSON) of each distinct resource of a batch, for insert_resources."""
    distinct = {id(r.resource): r.resource for r in batch}
    return sorted(dict(resource_row(resource) for resource in distinct.values()).items())


def resource_row(resource: dict[str, Any]) -> tuple[str, str]:
    """A resource's key (a hash of its JSON text) and JSON text."""
    body = orjson.dumps(resource).decode()
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest(), body


# The same span re-sent (same trace and span ID) is stored once: the first copy wins (ON CONFLICT DO NOTHING on any
# unique index, record_id or, on PostgreSQL, (trace_id, span_id), which also holds across processes sharing it;
# SQLite looks the spans up through its trace index first, partial_indexes.unstored). The statement
# is compiled once per dialect and schema to the driver's positional form: the hot path hands tuples straight to the
# DB-API executemany, skipping SQLAlchemy's per-row parameter processing (~19 us a row, measured by
# bench/write_path.py). The columns' types need no bind processing on SQLite or psycopg.
_RECORD_KEYS = tuple(RECORD_COLUMNS)
# The NUL-safe text columns, escaped on PostgreSQL; not the JSON ones (attributes, resource, events, links).
_ESCAPED = tuple(i for i, name in enumerate(RECORD_COLUMNS) if isinstance(records.c[name].type, dialect.NulSafe))


# PostgreSQL inserts of this many rows or more go through COPY (store/pg_copy.py): at 512 rows it costs the server
# 0.54x the CPU of executemany and this process 0.42x (bench/pg_write_path.py); the two are even at 4 rows.
COPY_MIN_ROWS = 16


def insert_rows(conn: Connection, rows: list[Row]) -> int:
    """Insert rows in one statement; rows already stored (same record ID, or trace and span ID) are skipped.

    Returns the number of rows added. Of two copies of a span in `rows`, the first is kept.
    """
    given = len(rows)
    rows = resends.new_rows(conn, rows)  # copies the per-day unique indexes cannot see
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":  # raw driver calls skip the columns' NUL escaping: do it here
        rows = dialect.escape_nul_rows(rows, _ESCAPED)
        if len(rows) >= COPY_MIN_ROWS:
            return pg_copy.insert_copy(conn, records, _RECORD_KEYS, rows)
    sql = dialect.insert_ignoring_sql(conn, records, (), _RECORD_KEYS)
    if conn.dialect.name != "sqlite":
        return conn.exec_driver_sql(sql, rows).rowcount
    # SQLite: each row goes to its day's table (store/day_tables.py), made on first use; all in this transaction.
    dbapi, inserted = conn.connection.dbapi_connection, 0
    if not dbapi.in_transaction:  # the span lookup and the insert under one write lock (the writer's has begun)
        dbapi.execute("BEGIN IMMEDIATE")
    rows = [partial_indexes.indexed(rows[0])] if given == 1 else rows  # inserted alone (near a quota)
    routed = day_tables.route(dbapi, conn.info, rows)
    split = day_tables.shared(routed)  # a day divided between two tables in this write: its marks are per table
    for table, group in routed.items():
        before = day_tables.last_seq(dbapi, table)
        group = partial_indexes.for_table(table, partial_indexes.remarked(group) if table in split else group)
        fresh = partial_indexes.unstored(dbapi, table, group)
        added = conn.exec_driver_sql(_day_sql(sql, table), fresh).rowcount if fresh else 0
        if added < len(group) or len(rows) < given:  # only resends lose rows
            partial_indexes.index_added(dbapi, table, before, group)
        inserted += added
    return inserted


@functools.lru_cache(maxsize=64)
def _day_sql(sql: str, table: str) -> str:
    """The insert of `records` aimed at one of its day tables."""
    return sql.replace("INTO records ", f"INTO {table} ", 1)


def insert_records(conn: Connection, batch: list[Record], received_ns: int) -> int:
    """Insert records and their resources in the caller's transaction (the writer's path, without it)."""
    insert_resources(conn, resource_rows(batch))
    return insert_rows(conn, to_rows(batch, received_ns))


def insert_resources(conn: Connection, rows: list[tuple[str, str]]) -> None:
    """Store resources (resource_key, JSON body) not stored yet; a known key is left as it is."""
    sql = dialect.insert_ignoring_sql(conn, resources, ("resource_key",), ("resource_key", "body"))
    conn.exec_driver_sql(sql, rows)


_SIGNATURE_KEYS = ("signature", "template", "type", "operation", "service", "exception_type")


def insert_signatures(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Describe new signatures (template, operation, ...); already known ones are left as they are."""
    # Driver SQL, as for records: SQLAlchemy's per-statement processing was 4% of the writer thread per request.
    sql = dialect.insert_ignoring_sql(conn, signatures, ("signature",), _SIGNATURE_KEYS)
    values = [tuple(row[key] for key in _SIGNATURE_KEYS) for row in rows]
    if conn.dialect.name == "postgresql":
        values = dialect.escape_nul_rows(values)
    conn.exec_driver_sql(sql, values)


# The columns an API record object is built from, in the order _record_json unpacks them.
_JSON_COLUMNS = (
    "record_id", "type", "name", "service", "ts_ns", "end_ns", "duration_ms", "status", "message", "exception_type",
    "trace_id", "span_id", "parent_span_id", "session_id", "user_id", "kind", "scope", "attributes", "resource_key",
    "resource", "events", "links", "signature", "received_ns",
)  # fmt: skip


_RECORD_ID, _RESOURCE_KEY, _SIGNATURE = (_JSON_COLUMNS.index(c) for c in ("record_id", "resource_key", "signature"))


@functools.lru_cache(maxsize=32)
def _json_columns(fields: tuple[str, ...]) -> operator.itemgetter:
    """Picks _JSON_COLUMNS out of a row with these fields (a select of `records`, whatever its column order)."""
    return operator.itemgetter(*(fields.index(name) for name in _JSON_COLUMNS))


def _record_json(
    values: tuple[Any, ...],
    fingerprints: dict[str, str],
    resource_bodies: dict[str, Any],
    loads: Callable[[str], Any] = orjson.loads,
) -> dict[str, Any]:
    """A stored row's _JSON_COLUMNS values as the API's record object (`fingerprint`: its issue's, once diagnosed).

    `resource_bodies` maps resource keys to resource objects (see records_json); rows written before resources were
    stored apart carry their resource JSON themselves. `loads` turns a stored JSON column into its value.
    """
    (
        record_id, type_, name, service, ts_ns, end_ns, duration_ms, status, message, exception_type,
        trace_id, span_id, parent_span_id, session_id, user_id, kind, scope, attributes, resource_key,
        resource, events, links, signature, received_ns,
    ) = values  # fmt: skip
    return {
        "record_id": record_id,
        "type": type_,
        "name": name,
        "service": service,
        "timestamp": rfc3339(ts_ns),
        "end_timestamp": rfc3339(end_ns),
        "timestamp_unix_nano": ts_ns,
        "duration_ms": duration_ms,
        "status": status,
        "message": message,
        "exception_type": exception_type,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "session_id": session_id,
        "user_id": user_id,
        "kind": kind,
        "scope": scope,
        "attributes": loads(attributes),
        "resource": resource_bodies[resource_key] if resource_key else loads(resource),
        "events": loads(events),
        "links": loads(links),
        "signature": signature,
        "fingerprint": fingerprints.get(signature) if signature else None,
        "received_at": rfc3339(received_ns),
    }


@dataclass(frozen=True)
class WindowQuery:
    """A bounded read: [start_ns, end_ns), equality filters, a page size and a keyset position."""

    start_ns: int
    end_ns: int
    limit: int = 100
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    after: tuple[int, str] | None = None  # (ts_ns, record_id) of the last record already returned
    selectors: tuple[dict[str, Any], ...] = ()  # issues' selectors: records matching any of them


def selector_condition(selector: Selector | dict[str, Any]) -> ColumnElement[bool]:
    """The SQL condition for an issue's records: a typed selector, or its tagged or untagged JSON form."""
    c = records.c
    match parse_selector(selector):
        case Signatures(signatures=keys, unless=unless):
            return and_(c.signature.in_(keys), *(~match_condition(m) for m in unless))
        case RecordIds(record_ids=ids):
            return c.record_id.in_(ids)
        case Records(type=type_, name=name, service=service, attributes=attributes):
            conditions = [c.type == type_]
            conditions += [c[k] == v for k, v in (("name", name), ("service", service)) if v is not None]
            conditions += [dialect.json_attribute_equals(c.attributes, k, v) for k, v in attributes.items()]
            return and_(*conditions)
        case SlowCalls(name=name, service=service, min_duration_ms=min_duration_ms):
            conditions = [c.name == name, c.duration_ms >= float(min_duration_ms)]
            if service is not None:
                conditions.append(c.service == service)
            return and_(*conditions)
        case RuleGroup(parts=parts):
            return or_(*(part_condition(part) for part in parts))
        case AnyOf(selectors=parts):
            return or_(*(selector_condition(part) for part in parts))
    raise AssertionError("parse_selector returns one of the six selector types")


def read_window(
    engine: Engine, query: WindowQuery, spliced: bool = False
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """One page, newest first (`spliced` as in records_json), and the keyset position of the next (None at the end)."""
    c = records.c
    with engine.connect() as conn:
        conn.execution_options(**{day_tables.RANGE_OPTION: (query.start_ns, query.end_ns)})
        # By trace: rows by number, through the trace index as this backend keeps it, so on SQLite no condition
        # on time may use an index (partial_indexes.during), the cursor's neither.
        by_trace = any(column == "trace_id" for column, _ in query.filters) and conn.dialect.name == "sqlite"
        ts = c.ts_ns + 0 if by_trace else c.ts_ns
        conditions = [ts >= query.start_ns, ts < query.end_ns]
        for column, values in query.filters:
            if column == "trace_id":
                conditions.append(partial_indexes.in_traces(conn, values))
                continue
            col = c[column]
            conditions.append(col == values[0] if len(values) == 1 else col.in_(values))
        if query.selectors:
            conditions.append(or_(*(selector_condition(s) for s in query.selectors)))
        if query.after is not None:
            after_ts, rid = query.after
            conditions.append(or_(ts < after_ts, and_(ts == after_ts, c.record_id < rid)))
        stmt = select(records).where(*conditions).order_by(c.ts_ns.desc(), c.record_id.desc())
        rows = conn.execute(stmt.limit(query.limit + 1)).all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        page = records_json(conn, rows, spliced=spliced)
    next_after = (rows[-1].ts_ns, rows[-1].record_id) if more and rows else None
    return page, next_after


def get_record(engine: Engine, record_id: str) -> dict[str, Any] | None:
    """One record by ID, or None."""
    with engine.connect() as conn:
        rows = conn.execute(select(records).where(records.c.record_id == record_id)).all()
        return records_json(conn, rows)[0] if rows else None


def get_records(engine: Engine, record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Records by ID (those that exist), for rendering evidence."""
    if not record_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(records).where(records.c.record_id.in_(record_ids))).all()
        return {record["record_id"]: record for record in records_json(conn, rows)}


def records_json(
    conn: Connection, rows: list[Any], fingerprints: bool = True, spliced: bool = False
) -> list[dict[str, Any]]:
    """Stored rows as API record objects, their resources (and, unless told not to, fingerprints) looked up.

    `spliced`: attributes, events and links stay their stored JSON text, in orjson.Fragment, for an answer orjson.dumps
    writes at once (parsing them to write them again cost a page a quarter of its time; docs/architecture.md).
    """
    if not rows:
        return []
    # One positional pick per row, its indexes found once per result: Row._fields builds a new tuple on every call
    # (13% of a 1,000-record page when each row asked), and 25 attribute lookups on a Row cost more still.
    pick = _json_columns(rows[0]._fields)
    picked = [pick(row) for row in rows]
    found = resource_bodies(conn, {v[_RESOURCE_KEY] for v in picked if v[_RESOURCE_KEY]})
    signatures = {v[_SIGNATURE] for v in picked if v[_SIGNATURE]}
    signed = _fingerprints(conn, signatures) if fingerprints else {}
    ruled = rule_fingerprints(conn, [v[_RECORD_ID] for v in picked if v[_SIGNATURE]]) if fingerprints else {}
    loads = orjson.Fragment if spliced else orjson.loads
    out = [_record_json(v, signed, found, loads) for v in picked]
    for record in out:
        if record["record_id"] in ruled:  # a fingerprint rule groups it now, not its signature's issue
            record["fingerprint"] = ruled[record["record_id"]]
    return out


def resource_bodies(conn: Connection, keys: set[str]) -> dict[str, Any]:
    """Resource key -> resource object (parsed once per key), for the keys given."""
    if not keys:
        return {}
    column = resources.c.resource_key
    query = select(column, resources.c.body).where(dialect.one_of(conn, column, keys))
    return {key: orjson.loads(body) for key, body in conn.execute(query)}


def _fingerprints(conn: Connection, signatures: set[str]) -> dict[str, str]:
    """The issue fingerprint of each signature that a diagnosis has assigned to an issue."""
    if not signatures:
        return {}
    rows = conn.execute(
        select(issue_signatures.c.signature, issue_signatures.c.fingerprint).where(
            dialect.one_of(conn, issue_signatures.c.signature, signatures)
        )
    ).all()
    return {r.signature: r.fingerprint for r in rows}
