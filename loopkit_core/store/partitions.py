"""Record partitions: a project's records live in time-ranged tables, read through one `records` view.

Why: an insert touches only the table its record's time falls in, so its cost follows that table's size and not
the project's history; retention drops whole tables instead of deleting row by row; and every reader keeps reading
`records` (a UNION ALL view over the tables), so record IDs and every API stay as they were. See docs/storage.md.

- Each partition holds the records whose `ts_ns` lies in its range [lo_ns, hi_ns), and a range never crosses a
  period boundary (`record_partition_seconds`, a UTC day by default), so a day is dropped at once.
- Ranges never overlap, so a record, and any re-sent copy of it (same start time), always lands in the same table,
  whose unique indexes deduplicate it exactly.
- A partition that has taken `record_partition_rows` records is cut: its range now ends just past its newest
  record and a new partition takes the rest of the period.
- A store from before partitions keeps its table, renamed, as the "legacy" partition (-inf, migration time).

Every change to the catalog happens under the lock writers hold for the quota counter (store/records.py
accepted_total: SQLite's write lock, PostgreSQL's row lock), so a writer's routing never sees a half-made change.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Index, MetaData, Table, delete, func, insert, inspect, select, update
from sqlalchemy.sql import visitors

from loopkit_core.model import MAX_NS
from loopkit_core.settings import Settings
from loopkit_core.store import dialect
from loopkit_core.store.schema import RECORD_COLUMNS, record_partitions, records

TS_NS = RECORD_COLUMNS.index("ts_ns")
RECORD_ID = RECORD_COLUMNS.index("record_id")
TRACE_ID, SPAN_ID = RECORD_COLUMNS.index("trace_id"), RECORD_COLUMNS.index("span_id")
# The ID of a record whose time is not its own (records-shape records sent without a timestamp get the time they
# arrived; model.record_id_for_span): a resend gets the same ID but another time, maybe in another partition.
UNTIMED_ID = "rec_" + "0" * 11
# How far apart in time such a record and its resend may be and still be recognised (a retrying exporter gives up
# after minutes: the OpenTelemetry Collector's default is 5).
RESEND_HORIZON_NS = 3600 * 10**9
MIN_NS = -(2**63)
LEGACY_NAME = "records_p1"
VIEW_TERMS = 400  # partitions per compound SELECT of the view (SQLite allows 500 terms)


@dataclass(frozen=True)
class Layout:
    """How records are split: the longest span of time one partition covers, and the rows that trigger a cut."""

    period_ns: int = 86_400 * 10**9
    max_rows: int = 500_000

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        """The layout a server's settings ask for."""
        return cls(int(settings.record_partition_seconds * 10**9), settings.record_partition_rows)


DEFAULT_LAYOUT = Layout()


@dataclass(frozen=True)
class Partition:
    """One row of the catalog."""

    part_id: int
    table_name: str
    lo_ns: int | None  # None: no lower bound
    hi_ns: int
    legacy: bool
    rows: int

    def holds(self, ts_ns: int) -> bool:
        """Whether a record of this time belongs here."""
        return (self.lo_ns is None or self.lo_ns <= ts_ns) and ts_ns < self.hi_ns

    @property
    def table(self) -> Table:
        """The partition's table."""
        return partition_table(self.table_name)


def load(conn: Connection) -> list[Partition]:
    """The catalog, in time order."""
    rows = conn.execute(select(record_partitions).order_by(record_partitions.c.hi_ns)).all()
    return [Partition(r.part_id, r.table_name, r.lo_ns, r.hi_ns, bool(r.legacy), r.rows) for r in rows]


def overlapping(parts: Sequence[Partition], start_ns: int, end_ns: int) -> list[Partition]:
    """The partitions that may hold records with start_ns <= ts_ns < end_ns."""
    return [p for p in parts if p.hi_ns > start_ns and (p.lo_ns is None or p.lo_ns < end_ns)]


@functools.cache
def partition_table(name: str) -> Table:
    """A partition's table: the columns and indexes of `records`, under the partition's name."""
    table = Table(name, MetaData(), *(column._copy() for column in records.columns))
    for index in records.indexes:
        columns = [table.c[column.name] for column in index.columns]
        where = index.dialect_options["sqlite"]["where"]
        options = {"sqlite_where": _rebound(where, table)} if where is not None else {}
        Index(index.name.replace("records", name, 1), *columns, unique=index.unique, **options)
    return table


def _rebound(clause: Any, table: Table) -> Any:
    """An index predicate on `records` rewritten onto another table's columns."""

    def swap(element: Any) -> Any:
        return table.c[element.name] if getattr(element, "table", None) is records else None

    return visitors.replacement_traverse(clause, {}, swap)


class Router:
    """Sends rows to their partitions within one write transaction (the catalog is read once per transaction)."""

    def __init__(self, conn: Connection, layout: Layout = DEFAULT_LAYOUT) -> None:
        self.conn, self.layout = conn, layout
        self._reload()

    def _reload(self) -> None:
        self.parts = load(self.conn)
        self._his = [p.hi_ns for p in self.parts]

    def split(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Partition, list[tuple[Any, ...]]]]:
        """Rows grouped by partition (first-seen order kept within each), making partitions for uncovered times."""
        groups: dict[int, list[tuple[Any, ...]]] = {}
        found: dict[int, Partition] = {}
        missing = []
        last: Partition | None = None
        for row in rows:
            ts = row[TS_NS]
            if last is None or not last.holds(ts):  # most rows of a batch share one partition: check it first
                last = self._find(ts)
                if last is None:
                    missing.append(row)
                    continue
                found.setdefault(last.part_id, last)
            groups.setdefault(last.part_id, []).append(row)
        if missing:
            for ts in sorted({row[TS_NS] for row in missing}):
                if self._find(ts) is None:
                    self._create_for(ts)
            for row in missing:
                part = self._find(row[TS_NS])
                assert part is not None, "a partition was just made for this time"
                found.setdefault(part.part_id, part)
                groups.setdefault(part.part_id, []).append(row)
        return [(found[part_id], group) for part_id, group in groups.items()]

    def stored_elsewhere(self, part: Partition, rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """The spans (trace ID, span ID) among untimed rows bound for `part` that a partition near their time holds.

        A row whose time is not its own (the receive time) has no partition of its own: a resend of it, or of a
        span first sent with a timestamp, may fall in a neighbouring partition. Those within RESEND_HORIZON_NS
        are searched; rows with their own time need no search (a resend has the same time, so the same table).
        """
        untimed = [row for row in rows if row[RECORD_ID].startswith(UNTIMED_ID) and row[TRACE_ID] and row[SPAN_ID]]
        if not untimed:
            return set()
        times = [row[TS_NS] for row in untimed]
        near = overlapping(self.parts, min(times) - RESEND_HORIZON_NS, max(times) + RESEND_HORIZON_NS)
        trace_ids = sorted({row[TRACE_ID] for row in untimed})
        found: set[tuple[str, str]] = set()
        for other in near:
            if other.part_id == part.part_id:
                continue
            table = other.table
            for start in range(0, len(trace_ids), 500):  # bounded IN lists; the (trace_id, span_id) index serves
                query = select(table.c.trace_id, table.c.span_id).where(
                    table.c.trace_id.in_(trace_ids[start : start + 500])
                )
                found.update((r.trace_id, r.span_id) for r in self.conn.execute(query))
        return found

    def _find(self, ts: int) -> Partition | None:
        i = bisect.bisect_right(self._his, ts)
        if i < len(self.parts) and self.parts[i].holds(ts):
            return self.parts[i]
        return None

    def _create_for(self, ts: int) -> None:
        """A partition for the uncovered time `ts`: its period, less what neighbours already cover."""
        period = self.layout.period_ns
        lo, hi = ts - ts % period, min(ts - ts % period + period, MAX_NS)
        i = bisect.bisect_right(self._his, ts)
        if i > 0:
            lo = max(lo, self.parts[i - 1].hi_ns)
        if i < len(self.parts) and self.parts[i].lo_ns is not None:
            hi = min(hi, self.parts[i].lo_ns)
        create(self.conn, self.parts, lo, hi)
        self._reload()

    def added(self, part: Partition, count: int) -> None:
        """Count `count` rows inserted into `part`; cut it once it has taken the layout's number of rows."""
        if not count:
            return
        self.conn.execute(
            update(record_partitions)
            .where(record_partitions.c.part_id == part.part_id)
            .values(rows=record_partitions.c.rows + count)
        )
        i = next(i for i, p in enumerate(self.parts) if p.part_id == part.part_id)
        current = self.parts[i] = replace(self.parts[i], rows=self.parts[i].rows + count)
        if current.rows >= self.layout.max_rows and not current.legacy and cut(self.conn, self.parts, current):
            self._reload()


def create(conn: Connection, parts: Sequence[Partition], lo_ns: int, hi_ns: int) -> Partition:
    """Make an empty partition for [lo_ns, hi_ns) and put it in the view."""
    part_id = max((p.part_id for p in parts), default=1) + 1  # 1 is the legacy table's, even once dropped
    name = f"records_p{part_id}"
    table = partition_table(name)
    table.create(conn)
    row = {"part_id": part_id, "table_name": name, "lo_ns": lo_ns, "hi_ns": hi_ns, "legacy": 0, "rows": 0}
    conn.execute(insert(record_partitions).values(**row, created_ns=time.time_ns()))
    new = Partition(part_id, name, lo_ns, hi_ns, False, 0)
    rebuild_view(conn, [*parts, new])
    return new


def cut(conn: Connection, parts: Sequence[Partition], part: Partition) -> bool:
    """End a full partition's range just past its newest record; a new partition takes the rest of its period.

    No stored record falls past the new end, so every re-sent copy still finds its original. False when there is
    nothing left to hand over (the newest record is at the end of the range).
    """
    newest = conn.execute(select(func.max(part.table.c.ts_ns))).scalar()
    if newest is None or newest + 1 >= part.hi_ns:
        return False
    at = newest + 1
    conn.execute(update(record_partitions).where(record_partitions.c.part_id == part.part_id).values(hi_ns=at))
    rest = [replace(p, hi_ns=at) if p.part_id == part.part_id else p for p in parts]
    create(conn, rest, at, part.hi_ns)
    return True


def drop(conn: Connection, parts: Sequence[Partition], part: Partition) -> int:
    """Remove a partition and its records (the view first: it depends on the table); returns how many it held."""
    count = conn.execute(select(func.count()).select_from(part.table)).scalar() or 0
    rebuild_view(conn, [p for p in parts if p.part_id != part.part_id])
    part.table.drop(conn)
    conn.execute(delete(record_partitions).where(record_partitions.c.part_id == part.part_id))
    return count


def rebuild_view(conn: Connection, parts: Sequence[Partition]) -> None:
    """(Re)make the `records` view as the UNION ALL of `parts`; with none, an empty view of the same columns.

    SQLite caps a compound SELECT at 500 terms: past VIEW_TERMS partitions, `records` unites sub-views
    (`records_v1`, `records_v2`, ...) of VIEW_TERMS partitions each.
    """
    quote = conn.dialect.identifier_preparer.quote
    schema = dialect.schema_of(conn)
    prefix = f"{quote(schema)}." if schema else ""
    names = ", ".join(quote(c.name) for c in records.columns)

    def union(tables: Sequence[str]) -> str:
        return " UNION ALL ".join(f"SELECT {names} FROM {prefix}{quote(table)}" for table in tables)

    conn.exec_driver_sql(f"DROP VIEW IF EXISTS {prefix}{quote(records.name)}")
    for k in range(1, len(parts) // VIEW_TERMS + 3):  # the sub-views the previous build may have made
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {prefix}{quote(f'records_v{k}')}")
    tables = [p.table_name for p in parts]
    if not tables:
        typed = ((c.type.compile(dialect=conn.dialect), quote(c.name)) for c in records.columns)
        body = "SELECT " + ", ".join(f"CAST(NULL AS {kind}) AS {name}" for kind, name in typed) + " WHERE 1 = 0"
    elif len(tables) <= VIEW_TERMS:
        body = union(tables)
    else:
        views = []
        for k, start in enumerate(range(0, len(tables), VIEW_TERMS), start=1):
            views.append(f"records_v{k}")
            conn.exec_driver_sql(
                f"CREATE VIEW {prefix}{quote(views[-1])} AS {union(tables[start : start + VIEW_TERMS])}"
            )
        body = union(views)
    conn.exec_driver_sql(f"CREATE VIEW {prefix}{quote(records.name)} AS {body}")


def adopt_legacy(conn: Connection) -> None:
    """Migration: turn a store's `records` table into partition 1 (or drop it when empty) and make the view."""
    schema = dialect.schema_of(conn)
    if records.name not in inspect(conn).get_table_names(schema=schema):
        return  # already a view
    quote = conn.dialect.identifier_preparer.quote
    prefix = f"{quote(schema)}." if schema else ""
    count = conn.execute(select(func.count()).select_from(records)).scalar() or 0
    parts: list[Partition] = []
    if count == 0:
        conn.exec_driver_sql(f"DROP TABLE {prefix}{quote(records.name)}")
    else:
        newest = conn.execute(select(func.max(records.c.ts_ns))).scalar()
        # Renamed in place (no copy): its indexes keep their names; new records past `hi` go to new partitions.
        conn.exec_driver_sql(f"ALTER TABLE {prefix}{quote(records.name)} RENAME TO {quote(LEGACY_NAME)}")
        hi = min(max(newest + 1, time.time_ns()), MAX_NS)
        row = {"part_id": 1, "table_name": LEGACY_NAME, "lo_ns": None, "hi_ns": hi, "legacy": 1, "rows": count}
        conn.execute(insert(record_partitions).values(**row, created_ns=time.time_ns()))
        parts = load(conn)
    rebuild_view(conn, parts)
