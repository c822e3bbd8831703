"""SQLite day tables of `records`: tables per UTC day near now, in the project's own file.

A SQLite project store keeps its records in `records_d<day number>` tables, one per UTC day of record time from
PAST_DAYS before today to FUTURE_DAYS after, each with the indexes of `records` (its own unique span and record ID
keys, as PostgreSQL's day partitions have). `records` itself holds what came before this layout and every record
of a day far from now (backfills, skewed clocks, hostile timestamps), so no timestamp can make thousands of tables.
A write then touches one day's indexes however much history the project keeps, and retention drops a whole day
(`DROP TABLE`, a fraction of a second with secure_delete=FAST) instead of deleting its rows one by one.

A busy day is split further by time: once the day's last table holds `sqlite_table_rows` records, the writer opens
the next one, `records_d<day>_<ns into the day>`, for record times from just after the newest time the full table
holds to the end of the day (a backfill in time order is bounded as live ingest is). A table's random-key indexes
(trace, session) cost a commit a page for each key once they are larger than a commit, and more as they grow: a
bounded table keeps that cost to what the day's first records paid (docs/benchmarks.md). The bounds only ever
divide the day's last table, above its newest record, so a record's time always names the one table that holds it
or will: a re-sent span meets its stored copy there, as it does within a day.

Readers are unchanged: they query `records`. Just before a SELECT reaches SQLite, `rewrite` puts in place of the
table the day tables it needs: the one table when a single one holds the range (aliased `records`, so indexes and
plans are exactly those of one table), else a UNION ALL of them that selects only the columns the statement reads
(SQLite 3.40 reads every column of a compound view otherwise, and loses its covering indexes). A connection whose
reads all lie in one time range says so with the execution option `records_range=(start_ns, end_ns)`; without it a
read covers every table. Over a UNION ALL, SQLite runs a read as a co-routine that yields every matching row to the
outer query, unless it can flatten the union: the window's aggregates (counts, GROUP BY) run once per table
instead, through `parts` (each arm is planned without the outer GROUP BY: a window's signature groups took 0.65 s
that way against 13 ms from one table), and an ordered read selects its ORDER BY columns, the condition on which
SQLite merges the tables' index orders. Writes go to their day's table through `route`, in the writer's
transaction: the tables share one file, so a batch that spans midnight still commits (or not) as a whole.
"""

from __future__ import annotations

import re
import sqlite3
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event

from loopkit_core.model import DAY_NS
from loopkit_core.store.partitions import FUTURE_DAYS, PAST_DAYS, partition_name
from loopkit_core.store.schema import TS_NS, Row

BASE = "records"
RANGE_OPTION = "records_range"
TABLES_OPTION = "records_tables"  # the exact tables a statement reads (one of `parts`), overriding RANGE_OPTION
# The bare table name where a statement reads it (FROM records, JOIN records, ", records"), with its alias if any;
# not `records.column`, not a name that only starts or ends with it (`_bare`). SQLAlchemy qualifies every column it
# renders. The patterns begin with their literal text, which `re` finds by a fast search: a lookbehind first made
# it try every position of statements that list thousands of row numbers (0.5 s of a 20M-record diagnosis).
_TABLE = re.compile(r"records(?![\w.\"])(?:\s+AS\s+(\w+))?")
MAX_ARMS = 200  # tables in one UNION ALL; more are nested (SQLITE_MAX_COMPOUND_SELECT is 500)
# Two scalar subqueries: SQLite answers a lone min() or max() with one index seek, but both in one SELECT with a scan
# of the whole index (~1 s on 20 million rows, run before every read).
BASE_RANGE = "SELECT (SELECT min(ts_ns) FROM records), (SELECT max(ts_ns) FROM records)"
_INFO_KEY = "loopkit_day_tables"  # per DB-API connection: (schema_version, _Layout)
ROWS_KEY = "loopkit_table_rows"  # per DB-API connection: the records a day's table takes before the next opens
TABLE_ROWS = 2_000_000  # ... unless the engine says otherwise (the `sqlite_table_rows` setting)
_NAME = re.compile(r"records_d(\d+)(?:_(\d+))?")


@dataclass(frozen=True)
class DayTable:
    """One table of a day's records: those with start_ns <= ts_ns < end_ns."""

    name: str
    start_ns: int
    end_ns: int

    @property
    def day(self) -> int:
        """The UTC day number the table belongs to."""
        return self.start_ns // DAY_NS


@dataclass(frozen=True)
class _Layout:
    tables: tuple[DayTable, ...]  # by start time
    names: frozenset[str]
    by_day: dict[int, list[DayTable]]


def install(engine: Engine) -> None:
    """Make a SQLite project engine read `records` through its day tables (every project store's engine has this)."""
    event.listen(engine, "before_cursor_execute", rewrite, retval=True)


def table_name(day: int, start_ns: int | None = None) -> str:
    """A day's table: `records_d<day>` (as PostgreSQL's partition) from its start, `records_d<day>_<ns>` from later."""
    offset = 0 if start_ns is None else start_ns - day * DAY_NS
    return partition_name(day) if offset == 0 else f"records_d{day}_{offset}"


def day_of(name: str) -> int | None:
    """The day number of a day table's name; None for any other table."""
    match = _NAME.fullmatch(name)
    return int(match[1]) if match else None


def route(
    dbapi: sqlite3.Connection, info: dict[str, Any], rows: list[Row], now_ns: int | None = None
) -> dict[str, list[Row]]:
    """The rows of a write grouped by the table each belongs in (made if new): its day's, or `records` far from now.

    Runs in the writer's transaction: a day whose last table is full gets its next one here (see above).
    """
    now = now_ns if now_ns is not None else time.time_ns()
    today = now // DAY_NS
    low, high = today - PAST_DAYS, today + FUTURE_DAYS
    by_day: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        by_day[row[TS_NS] // DAY_NS].append(row)
    grouped: dict[str, list[Row]] = defaultdict(list)
    for day, group in by_day.items():
        if not low <= day <= high:
            grouped[BASE] += group
            continue
        of_day = _open(dbapi, info, day)
        last = of_day[-1]
        if len(of_day) == 1:
            grouped[last.name] += group
            continue
        starts = [table.start_ns for table in of_day]
        for row in group:  # nearly all rows belong in the last table: one comparison each
            ts = row[TS_NS]
            grouped[last.name if ts >= last.start_ns else of_day[bisect_right(starts, ts) - 1].name].append(row)
    return grouped


def shared(grouped: dict[str, list[Row]]) -> set[str]:
    """The tables of a routed write that share their day with another of its tables (a day split within a write)."""
    days = Counter(day_of(name) for name in grouped if name != BASE)
    return {name for name in grouped if name != BASE and days[day_of(name)] > 1}


def _open(dbapi: sqlite3.Connection, info: dict[str, Any], day: int) -> list[DayTable]:
    """A day's tables for a write, made if it has none, with a new last one if its last is full."""
    of_day = _layout(dbapi, info).by_day.get(day)
    if not of_day:
        ensure(dbapi, info, table_name(day))
        return [DayTable(table_name(day), day * DAY_NS, (day + 1) * DAY_NS)]
    last = of_day[-1]
    if last_seq(dbapi, last.name) < info.get(ROWS_KEY, TABLE_ROWS):
        return of_day
    # A full table has rows, all within its bounds. Above every time it holds, so no stored record's table ever
    # changes; later rows of an earlier time (start times spread over an exporter's batch, late spans) keep going
    # to the full one.
    start = dbapi.execute(f"SELECT max(ts_ns) FROM {last.name}").fetchone()[0] + 1
    if start >= last.end_ns:  # a record stamped at the day's end (a skewed clock) keeps the day in this table
        return of_day
    name = table_name(day, start)
    ensure(dbapi, info, name)
    return [*of_day[:-1], DayTable(last.name, last.start_ns, start), DayTable(name, start, last.end_ns)]


def last_seq(dbapi: sqlite3.Connection, table: str) -> int:
    """The highest row number of a table (0 when empty): its rows so far, from one index seek."""
    return dbapi.execute(f"SELECT max(seq) FROM {table}").fetchone()[0] or 0


def ensure(dbapi: sqlite3.Connection, info: dict[str, Any], name: str) -> None:
    """Make a day table (and its indexes) like `records` if it does not exist yet, in the caller's transaction."""
    if name == BASE or name in _layout(dbapi, info).names:
        return
    statements = dbapi.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'records' AND sql IS NOT NULL "
        "ORDER BY type = 'index', name"
    ).fetchall()
    suffix = name.removeprefix("records")
    for kind, object_name, sql in statements:
        if kind == "table":
            dbapi.execute(_TABLE.sub(name, sql, count=1).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
        else:
            # Index names are per database: each day's copy gets the day as a suffix.
            made = sql.replace(
                f"INDEX {object_name} ON records", f"INDEX IF NOT EXISTS {object_name}{suffix} ON {name}"
            )
            if made == sql:  # never index `records` again under its own name (that would fail every commit)
                raise RuntimeError(f"cannot copy index {object_name} of records to {name}: {sql}")
            dbapi.execute(made)
    info.pop(_INFO_KEY, None)


def tables(dbapi: sqlite3.Connection, info: dict[str, Any]) -> list[DayTable]:
    """The day tables of this store, by start time (read again only after a schema change)."""
    return list(_layout(dbapi, info).tables)


def _layout(dbapi: sqlite3.Connection, info: dict[str, Any]) -> _Layout:
    version = dbapi.execute("PRAGMA schema_version").fetchone()[0]
    cached = info.get(_INFO_KEY)
    if cached is not None and cached[0] == version:
        return cached[1]
    found = _day_tables(dbapi)
    by_day: dict[int, list[DayTable]] = defaultdict(list)
    for table in found:
        by_day[table.day].append(table)
    made = _Layout(tuple(found), frozenset(table.name for table in found), dict(by_day))
    info[_INFO_KEY] = (version, made)
    return made


def _day_tables(dbapi: sqlite3.Connection) -> list[DayTable]:
    """The day tables named in the schema, by start time; each ends where the next of its day starts."""
    names = dbapi.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'records_d%'").fetchall()
    starts = sorted(
        (int(m[1]) * DAY_NS + int(m[2] or 0), name) for (name,) in names if (m := _NAME.fullmatch(name)) is not None
    )
    found = []
    for i, (start, name) in enumerate(starts):
        day_end = (start // DAY_NS + 1) * DAY_NS
        following = starts[i + 1][0] if i + 1 < len(starts) else day_end
        found.append(DayTable(name, start, min(following, day_end)))
    return found


def record_tables(dbapi: sqlite3.Connection) -> list[str]:
    """Every table that holds records: `records` and the day tables, oldest first (for tools outside the server)."""
    return [BASE, *(table.name for table in _day_tables(dbapi))]


def record_counts(dbapi: sqlite3.Connection) -> dict[str, int]:
    """Each table that holds records (`records` first) and its row count (for tools outside the server)."""
    return {name: dbapi.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in record_tables(dbapi)}


def layout(engine: Engine) -> dict[str, object]:
    """How a SQLite project's records are laid out: its days, their tables, and how many records `records` holds."""
    with engine.connect() as conn:
        found = tables(conn.connection.dbapi_connection, conn.info)
        base = conn.exec_driver_sql("SELECT count(*) FROM main.records").scalar_one()
    return {"days": sorted({table.day for table in found}), "tables": len(found), "base_records": base}


def arms(dbapi: sqlite3.Connection, info: dict[str, Any], start_ns: int | None, end_ns: int | None) -> list[str]:
    """The tables a read of [start_ns, end_ns) needs, oldest first: `records` if it holds rows there, and the days'."""
    chosen = [
        table.name
        for table in _layout(dbapi, info).tables
        if (start_ns is None or table.end_ns > start_ns) and (end_ns is None or table.start_ns < end_ns)
    ]
    lo, hi = dbapi.execute(BASE_RANGE).fetchone()
    if lo is not None and (end_ns is None or lo < end_ns) and (start_ns is None or hi >= start_ns):
        chosen.insert(0, BASE)
    return chosen


def rewrite(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """before_cursor_execute hook: a SELECT of `records` reads the tables its range needs instead (see above)."""
    if executemany or "records" not in statement:
        return statement, parameters
    if statement.lstrip("( \n")[:4].upper() not in ("SELE", "WITH"):
        return statement, parameters
    if not any(_bare(statement, m) for m in _TABLE.finditer(statement)):
        return statement, parameters
    options = context.execution_options if context is not None else {}
    given = options.get(TABLES_OPTION)
    if given is not None:
        chosen = list(given)
    else:
        start, end = options.get(RANGE_OPTION) or (None, None)
        chosen = arms(cursor.connection, conn.info, start, end)
    if not chosen or chosen == [BASE]:
        return statement, parameters
    sources: dict[str, str] = {}  # alias -> what replaces it: a statement may read `records` twenty times

    def source(match: re.Match[str]) -> str:
        if not _bare(statement, match):
            return match[0]
        alias = match.group(1) or BASE
        if alias not in sources:
            sources[alias] = _source(alias, statement, chosen)
        return sources[alias]

    return _TABLE.sub(source, statement), parameters


def parts(conn: Connection, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """Execution options that split a read of [start_ns, end_ns) into one read per table (SQLite's day tables).

    One empty set of options elsewhere (PostgreSQL's planner splits a read over its partitions itself). A caller
    runs its statement once with each and combines the answers: counts add up, minima and maxima compare.
    """
    if conn.dialect.name != "sqlite":
        return [{}]
    chosen = arms(conn.connection.dbapi_connection, conn.info, start_ns, end_ns)
    return [{TABLES_OPTION: (name,)} for name in chosen]


def _source(alias: str, statement: str, chosen: list[str]) -> str:
    """What replaces `records` read as `alias`: a table, or a union of the columns the statement reads of it."""
    if len(chosen) == 1:
        return f"{chosen[0]} AS {alias}"
    named = re.compile(rf"{alias}\.(\w+)").finditer(statement)
    columns = sorted({m[1] for m in named if _bare(statement, m)}) or ["ts_ns"]
    listed = ", ".join(columns)
    arms = [f"SELECT {listed} FROM {name}" for name in chosen]
    while len(arms) > MAX_ARMS:  # a project kept forever: SQLite allows 500 terms in one compound SELECT
        groups = [arms[i : i + MAX_ARMS] for i in range(0, len(arms), MAX_ARMS)]
        arms = [f"SELECT {listed} FROM ({' UNION ALL '.join(group)})" for group in groups]
    return f"({' UNION ALL '.join(arms)}) AS {alias}"


def _bare(statement: str, match: re.Match[str]) -> bool:
    """Whether a match of a name stands alone: not the end of a longer name, a qualified name or a quoted one."""
    at = match.start()
    return at == 0 or not (statement[at - 1].isalnum() or statement[at - 1] in '_."')


def drop_expired(engine: Engine, cutoff_ns: int) -> tuple[int, int]:
    """Drop every day table of a day wholly older than `cutoff_ns`; returns (tables dropped, records they held).

    A day is kept whole until its last record expires, as PostgreSQL's day partitions are. Each table is counted
    (from its smallest index) and dropped in its own short transaction, so the writer waits for one at most.
    """
    dropped = rows = 0
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        expired = [table.name for table in tables(dbapi, conn.info) if (table.day + 1) * DAY_NS <= cutoff_ns]
        for name in expired:
            with conn.begin():
                count = conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one()
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            dropped, rows = dropped + 1, rows + count
    return dropped, rows
