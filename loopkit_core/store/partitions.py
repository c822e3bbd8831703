"""PostgreSQL day partitions of `records`: made ahead of the writer, dropped whole by retention.

On PostgreSQL each project's `records` is range-partitioned on `ts_ns` (project migration 8): one partition per
UTC day near now (`records_d<day number>`), a default partition (`records_default`) for every other time, and,
in a store made before partitioning, its old table as `records_legacy`, covering everything up to the end of the
day of its newest record. A write then touches only its day's indexes however much history the project keeps,
and retention drops a whole day in one statement. Readers are unchanged: they query `records`, and PostgreSQL
reads only the partitions a time range overlaps.

Correctness never depends on a day partition existing: a row whose day has none lands in the default partition
(a partition is not made while the default holds rows of that day), and retention deletes expired rows there,
and in the legacy partition, row by row. SQLite stores keep one table (see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql

from loopkit_core.model import DAY_NS

log = logging.getLogger("loopkit.partitions")
_PG = postgresql.psycopg.dialect()
# Days with their own partition: from this many days before today to tomorrow. Older or later records (backfills,
# skewed clocks, hostile timestamps) share the default partition, so they can never make thousands of tables.
PAST_DAYS = 32
FUTURE_DAYS = 1
# DDL on `records` waits for readers and writers of it; past this it gives up and the rows use the default partition.
LOCK_TIMEOUT = "2s"
DEFAULT = "records_default"
LEGACY = "records_legacy"
_DAY_NAME = re.compile(r"records_d(\d+)")
_BOUND = re.compile(r"FOR VALUES FROM \((MINVALUE|'?-?\d+'?)\) TO \((MAXVALUE|'?-?\d+'?)\)")

_lock = threading.Lock()
_made: dict[str, set[int]] = {}  # schema -> days known to have a partition, to be held by the default, or far
_retry: dict[tuple[str, int], float] = {}  # (schema, day) whose DDL timed out -> when to try it again (monotonic)
RETRY_SECONDS = 60.0
ANALYZE_FLOOR = 1000  # rows changed since the last ANALYZE before a partition's statistics count as stale


def partition_name(day: int) -> str:
    """The table name of one UTC day's partition (day = ts_ns // DAY_NS)."""
    return f"records_d{day}"


def days_of(timestamps: Iterable[int]) -> set[int]:
    """The UTC day numbers of some record times."""
    return {ts // DAY_NS for ts in timestamps}


def ensure(engine: Engine, days: set[int], now_ns: int | None = None) -> list[int]:
    """Make the missing partitions of `days` that are near now, each in its own short transaction; returns those made.

    Called by the writer before its commit, outside its transaction, so the DDL never waits while holding the
    quota counter. Known days cost a set lookup. A day the default partition already holds rows of, or whose DDL
    waited past LOCK_TIMEOUT, is skipped: its rows go to the default partition.
    """
    schema = _schema(engine)
    with _lock:
        known = _made.setdefault(schema, set())
        missing = days - known
        if missing and _retry:
            clock = time.monotonic()
            missing = {day for day in missing if _retry.get((schema, day), 0.0) <= clock}
    if not missing:
        return []
    today = (now_ns if now_ns is not None else time.time_ns()) // DAY_NS
    near = {day for day in missing if today - PAST_DAYS <= day <= today + FUTURE_DAYS}
    with engine.connect() as conn:
        if not _partitioned(conn, schema):
            with _lock:
                known.update(missing)  # a store not (yet) partitioned: nothing to make
            return []
        covered = _covered_days(conn, schema, today)
        conn.rollback()
        outcomes = {day: _make(conn, schema, day, today) for day in sorted(near - covered)}
    made = [day for day, outcome in outcomes.items() if outcome == "made"]
    with _lock:
        # Far days are never made, held days stay in the default: remembered so they cost nothing next time.
        known.update(missing - near, covered, (day for day, outcome in outcomes.items() if outcome != "busy"))
        for day, outcome in outcomes.items():
            if outcome == "busy":
                _retry[(schema, day)] = time.monotonic() + RETRY_SECONDS
            else:
                _retry.pop((schema, day), None)
    return made


def drop_expired(engine: Engine, cutoff_ns: int) -> tuple[int, int]:
    """Drop every partition wholly older than `cutoff_ns`; returns (partitions dropped, records they held).

    Day partitions, and the legacy one once its range has expired. The records are counted first (an index-only
    or sequential scan of the partition, far cheaper than deleting them), so that retention reports them.
    """
    schema = _schema(engine)
    dropped = rows = 0
    with engine.connect() as conn:
        if not _partitioned(conn, schema):
            return 0, 0
        found = _partitions(conn, schema)
        days = sorted(day for day in map(day_of_table, found) if day is not None)
        expired = [partition_name(day) for day in days if (day + 1) * DAY_NS <= cutoff_ns]
        legacy_end = found.get(LEGACY, (None, None))[1]
        if legacy_end is not None and legacy_end <= cutoff_ns:
            expired.insert(0, LEGACY)  # the pre-partitioning table, once its last day has expired
        conn.rollback()
        for name in expired:
            table = _qualified(schema, name)
            try:
                with conn.begin():
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    count = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                    conn.exec_driver_sql(f"DROP TABLE {table}")
            except Exception as exc:
                if not _lock_timeout(exc):
                    raise
                log.warning("retention: %s is busy; dropping it next pass", table)
                continue
            dropped, rows = dropped + 1, rows + count
            if (day := day_of_table(name)) is not None:
                with _lock:
                    _made.get(schema, set()).discard(day)
    return dropped, rows


def row_delete_tables(engine: Engine) -> list[str] | None:
    """The partitions retention must delete expired rows from one by one (None: `records` is one table)."""
    with engine.connect() as conn:
        schema = _schema(engine)
        if not _partitioned(conn, schema):
            return None
        return [name for name in _partitions(conn, schema) if day_of_table(name) is None]


def analyze_stale(engine: Engine) -> list[str]:
    """ANALYZE the partitions of `records` whose statistics are missing or stale; returns their names.

    Stale as autovacuum judges it (more rows changed since the last ANALYZE than 10% of the table, plus a floor),
    for servers where autovacuum is off or behind: without statistics a new day's partition looks nearly empty
    to the planner, which then reads a whole hour by time instead of 500 traces by their index (a diagnosis of
    the last hour of a 20M-record store took 40 s, and 6.5 s once analyzed). Where autovacuum keeps up, this finds none.
    """
    schema = _schema(engine)
    with engine.connect() as conn:
        if not _partitioned(conn, schema):
            return []
        stale = (
            conn.exec_driver_sql(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE n.nspname = %(schema)s AND p.relname = 'records' "
                "AND s.n_mod_since_analyze > %(floor)s + 0.1 * greatest(c.reltuples, 0) ORDER BY c.relname",
                {"schema": schema, "floor": ANALYZE_FLOOR},
            )
            .scalars()
            .all()
        )
        conn.rollback()
        for name in stale:
            conn.exec_driver_sql(f"ANALYZE {_qualified(schema, name)}")
            conn.commit()
    return list(stale)


def layout(engine: Engine) -> dict[str, object]:
    """How a project's records are laid out: partitioned or not, its day partitions, default and legacy ones."""
    with engine.connect() as conn:
        schema = _schema(engine)
        if not _partitioned(conn, schema):
            return {"partitioned": False}
        names = _partitions(conn, schema)
        days = sorted(day for day in map(day_of_table, names) if day is not None)
        return {"partitioned": True, "days": days, "default": DEFAULT in names, "legacy": LEGACY in names}


def forget(schema: str) -> None:
    """Forget what this process knows of a project's partitions (its schema was dropped)."""
    with _lock:
        _made.pop(schema, None)
        for key in [key for key in _retry if key[0] == schema]:
            del _retry[key]


def unique_indexes(conn: Connection, schema: str, name: str, seq: bool = False) -> None:
    """A partition's own unique keys: the span (trace_id, span_id), the record ID, and `seq` where rows are deleted.

    Local to the partition, so they need not hold the partition key: a span re-sent with another start time on
    the same day is refused like an identical copy (`ON CONFLICT DO NOTHING` and COPY check every unique index of
    the partition a row goes to). A partitioned parent only allows unique keys that contain ts_ns.
    """
    table = _qualified(schema, name)
    quote = _PG.identifier_preparer.quote
    conn.exec_driver_sql(f"CREATE UNIQUE INDEX {quote(name + '_span')} ON {table} (trace_id, span_id)")
    conn.exec_driver_sql(f"CREATE UNIQUE INDEX {quote(name + '_record_id')} ON {table} (record_id)")
    if seq:
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX {quote(name + '_seq')} ON {table} (seq)")


def _make(conn: Connection, schema: str, day: int, today: int) -> str:
    """Make one day's partition: "made", "exists" (another process made it), "held" (by the default) or "busy"."""
    lo, hi = day * DAY_NS, (day + 1) * DAY_NS
    parent, table = _qualified(schema, "records"), _qualified(schema, partition_name(day))
    default = _qualified(schema, DEFAULT)
    try:
        with conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            # One maker per project at a time: the others find the partition made and skip it.
            conn.execute(select(func.pg_advisory_xact_lock(_lock_id(schema))))
            if day in _covered_days(conn, schema, today):
                return "exists"
            # Rows of this day already in the default partition keep it (the partition could not be attached).
            held = conn.exec_driver_sql(f"SELECT 1 FROM {default} WHERE ts_ns >= {lo} AND ts_ns < {hi} LIMIT 1").first()
            if held is not None:
                return "held"
            conn.exec_driver_sql(f"CREATE TABLE {table} PARTITION OF {parent} FOR VALUES FROM ({lo}) TO ({hi})")
            unique_indexes(conn, schema, partition_name(day))
    except Exception as exc:
        if not _lock_timeout(exc):
            raise
        log.warning("partitions: %s not made (records busy); its rows go to the default partition", table)
        return "busy"
    return "made"


def _partitioned(conn: Connection, schema: str) -> bool:
    kind = conn.exec_driver_sql(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relname = 'records'",
        {"schema": schema},
    ).scalar()
    return kind == "p"


def _partitions(conn: Connection, schema: str) -> dict[str, tuple[int | None, int | None]]:
    """Every partition of `records`: name -> (low, high) of its range, None for MINVALUE/MAXVALUE or the default."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = %(schema)s AND p.relname = 'records'",
        {"schema": schema},
    ).all()
    found: dict[str, tuple[int | None, int | None]] = {}
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match is None:  # DEFAULT
            found[name] = (None, None)
            continue
        low, high = (None if v in ("MINVALUE", "MAXVALUE") else int(v.strip("'")) for v in match.groups())
        found[name] = (low, high)
    return found


def _covered_days(conn: Connection, schema: str, today: int) -> set[int]:
    """The days near `today` that have a partition: their own, or the legacy one's (it ends at a day boundary)."""
    found = _partitions(conn, schema)
    days = {day for day in map(day_of_table, found) if day is not None}
    legacy_end = found.get(LEGACY, (None, None))[1]
    if legacy_end is not None:
        days.update(range(today - PAST_DAYS, min(legacy_end // DAY_NS, today + FUTURE_DAYS + 1)))
    return days


def day_of_table(name: str) -> int | None:
    """The day number of a day's table name (a PostgreSQL partition, a SQLite day table); None for any other."""
    match = _DAY_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _lock_timeout(exc: Exception) -> bool:
    return "lock timeout" in str(exc) or "LockNotAvailable" in type(getattr(exc, "orig", exc)).__name__


def _schema(engine: Engine) -> str:
    schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
    return schema or "public"


def _qualified(schema: str, name: str) -> str:
    quote = _PG.identifier_preparer.quote
    return f"{quote(schema)}.{quote(name)}"


def _lock_id(schema: str) -> int:
    digest = hashlib.blake2b(f"loopkit-partitions:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
