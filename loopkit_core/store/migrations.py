"""Migrations: ordered, versioned schema steps for the control store and each project store, on both backends.

Every database (SQLite file) or schema (PostgreSQL) has a `loopkit_schema_version` table: one row per step
applied. Opening a store applies the missing steps in one transaction, holding a lock so that two processes
starting together never both migrate (SQLite: BEGIN IMMEDIATE, the write lock; PostgreSQL: a transaction
advisory lock named after the schema). A store made before versioning (no version table) is stamped by step 1,
which only creates what is missing.

Adding a step (see docs/architecture.md) is three lines at the end of this module::

    @step("project", 4, "records: index user_id")
    def _records_user_index(conn: Connection) -> None:
        Index("ix_records_user", records.c.user_id).create(conn, checkfirst=True)
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
)
from sqlalchemy.schema import CreateSchema

from loopkit_core.store import partitions
from loopkit_core.store.schema import (
    ACCEPTED,
    control_metadata,
    eval_runs,
    grouping_rules,
    issue_merges,
    project_metadata,
    project_retention,
    records,
    resources,
    server_secrets,
    stages,
)

Target = Literal["control", "project"]
CURSOR_SECRET = "cursor"
log = logging.getLogger("loopkit.migrations")

version_metadata = MetaData()
schema_version = Table(
    "loopkit_schema_version",
    version_metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", BigInteger, nullable=False),  # unix seconds
)


@dataclass(frozen=True)
class Step:
    """One schema change: applied once, in version order, inside the opening transaction."""

    version: int
    description: str
    apply: Callable[[Connection], None]


STEPS: dict[Target, list[Step]] = {"control": [], "project": []}


def step(target: Target, version: int, description: str) -> Callable[[Callable[[Connection], None]], Callable]:
    """Register a function as migration `version` of the control store or of every project store."""

    def register(apply: Callable[[Connection], None]) -> Callable[[Connection], None]:
        steps = STEPS[target]
        if any(s.version == version for s in steps):
            raise ValueError(f"{target} migration {version} is registered twice")
        steps.append(Step(version, description, apply))
        steps.sort(key=lambda s: s.version)
        return apply

    return register


def latest(target: Target) -> int:
    """The version a store of this kind has once migrated."""
    return max(s.version for s in STEPS[target])


def migrate(engine: Engine, target: Target, schema: str | None = None) -> list[int]:
    """Bring one store up to date; returns the versions applied here (empty when another process did it).

    `engine` carries the schema_translate_map for `schema` on PostgreSQL; on SQLite `schema` is None.
    """
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        if postgres:
            conn.execute(select(func.pg_advisory_xact_lock(_lock_id(schema or "public"))))
            if schema:
                conn.execute(CreateSchema(schema, if_not_exists=True))
        else:
            # pysqlite only begins before DML; take the write lock now so the version read below is the truth.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        version_metadata.create_all(conn)
        current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
        if current > latest(target):
            # A newer LoopKit migrated it (e.g. mid rolling upgrade): go on, steps only ever add things.
            log.warning(
                "%s store %s is at schema version %d; this LoopKit knows %d", target, schema, current, latest(target)
            )
        applied = []
        for s in STEPS[target]:
            if s.version <= current:
                continue
            s.apply(conn)
            row = {"version": s.version, "description": s.description, "applied_at": int(time.time())}
            conn.execute(schema_version.insert().values(**row))
            applied.append(s.version)
        conn.commit()
    return applied


def current_version(engine: Engine) -> int:
    """The highest applied version of a store (0 when it has never been versioned)."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, schema_version.name, schema=_translated(conn)):
            return 0
        return conn.execute(select(func.max(schema_version.c.version))).scalar() or 0


def _translated(conn: Connection) -> str | None:
    return (conn.get_execution_options().get("schema_translate_map") or {}).get(None)


def _lock_id(name: str) -> int:
    # pg_advisory_xact_lock takes a signed 64-bit key; one key per schema, so distinct projects don't wait.
    digest = hashlib.blake2b(f"loopkit-migrate:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# Version 1: the schema as first released (create_all only creates what is missing, so it also stamps old stores).
@step("control", 1, "initial schema: projects, api_keys")
def _control_initial(conn: Connection) -> None:
    control_metadata.create_all(conn)


@step("project", 1, "initial schema: records, signatures, issues, packets, approvals, verdicts, counters")
def _project_initial(conn: Connection) -> None:
    project_metadata.create_all(conn)


@step("control", 2, "project_retention: per-project retention period")
def _control_retention(conn: Connection) -> None:
    project_retention.create(conn, checkfirst=True)


@step("project", 2, "records: unique (trace_id, span_id) deduplicates spans; replaces the trace_id index")
def _records_span_key(conn: Connection) -> None:
    # Record IDs made before this step hash (project, trace, span), so stored spans are already unique on the pair.
    span_key = next(index for index in records.indexes if index.name == "ux_records_span")
    span_key.create(conn, checkfirst=True)
    # The old index, on a stand-in table: declaring it on `records` would bring it back in new stores.
    legacy = Table("records", MetaData(), Column("trace_id", String(32)))
    Index("ix_records_trace", legacy.c.trace_id).drop(conn, checkfirst=True)


@step("project", 3, "resources: each distinct resource stored once, records point to it by resource_key")
def _resources(conn: Connection) -> None:
    resources.create(conn, checkfirst=True)
    schema = _translated(conn)
    if "resource_key" not in {c["name"] for c in inspect(conn).get_columns("records", schema=schema)}:
        # SQLAlchemy has no ADD COLUMN construct; raw SQL is not schema-translated, so qualify the table here.
        prefix = f"{conn.dialect.identifier_preparer.quote_schema(schema)}." if schema else ""
        conn.exec_driver_sql(f"ALTER TABLE {prefix}records ADD COLUMN resource_key VARCHAR(32)")


@step("project", 4, "stages: append-only loop stages per packet; issues.first_packet_id (which diagnosis saw it first)")
def _stages(conn: Connection) -> None:
    stages.create(conn, checkfirst=True)
    schema = _translated(conn)
    if "first_packet_id" not in {c["name"] for c in inspect(conn).get_columns("issues", schema=schema)}:
        prefix = f"{conn.dialect.identifier_preparer.quote_schema(schema)}." if schema else ""
        conn.exec_driver_sql(f"ALTER TABLE {prefix}issues ADD COLUMN first_packet_id VARCHAR(40)")


@step("project", 5, "eval_runs: append-only eval runs an agent reported for a packet's issues")
def _eval_runs(conn: Connection) -> None:
    eval_runs.create(conn, checkfirst=True)


@step("project", 6, "grouping_rules: append-only versions of the project's fingerprint rules")
def _grouping_rules(conn: Connection) -> None:
    grouping_rules.create(conn, checkfirst=True)


@step("control", 3, "server_secrets: a random secret per installation, which signs telemetry cursors")
def _server_secrets(conn: Connection) -> None:
    server_secrets.create(conn, checkfirst=True)
    # Made here, under the migration lock, so every process sharing the control store reads the same one.
    if conn.execute(select(server_secrets.c.name).where(server_secrets.c.name == CURSOR_SECRET)).first() is None:
        row = {"name": CURSOR_SECRET, "value": secrets.token_hex(32), "created_at": int(time.time())}
        conn.execute(server_secrets.insert().values(**row))


@step("project", 7, "issue_merges: the append-only audit of issues people merged and unmerged")
def _issue_merges(conn: Connection) -> None:
    issue_merges.create(conn, checkfirst=True)


@step("project", 8, "records: PostgreSQL range partitions by day of ts_ns (the old table becomes records_legacy)")
def _records_partitions(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite keeps one table per project file (docs/architecture.md)
    schema = _translated(conn) or "public"
    quote = conn.dialect.identifier_preparer.quote
    q = quote(schema)

    def sql(text: str, params: dict[str, Any] | None = None) -> Any:
        return conn.exec_driver_sql(text, params) if params else conn.exec_driver_sql(text)

    # The old table keeps its rows and indexes under new names; the partitioned parent takes the names.
    sql(f"ALTER TABLE {q}.records RENAME TO {partitions.LEGACY}")
    names = sql(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %(schema)s AND tablename = %(table)s",
        {"schema": schema, "table": partitions.LEGACY},
    ).scalars()
    for name in list(names):
        sql(f"ALTER INDEX {q}.{quote(name)} RENAME TO {quote(name[:50] + '_legacy')}")
    sql(f"CREATE TABLE {q}.records (LIKE {q}.{partitions.LEGACY} INCLUDING DEFAULTS) PARTITION BY RANGE (ts_ns)")
    # The sequence behind seq must outlive the legacy table, which retention drops one day.
    sequence = sql("SELECT pg_get_serial_sequence(%(table)s, 'seq')", {"table": f"{q}.{partitions.LEGACY}"}).scalar()
    if sequence:
        sql(f"ALTER SEQUENCE {sequence} OWNED BY {q}.records.seq")
    # No unique key on the parent: one there must hold the partition key, so it could not keep a span re-sent with
    # another start time out. Each partition has its own (partitions.unique_indexes); the old table has them already.
    for index in records.indexes:
        if not index.unique:
            index.create(conn)
    last = sql(f"SELECT max(ts_ns) FROM {q}.{partitions.LEGACY}").scalar()
    if last is None:
        sql(f"DROP TABLE {q}.{partitions.LEGACY}")
    else:
        # Everything up to the end of its newest record's day: later rows of that day still belong to it.
        end = (last // partitions.DAY_NS + 1) * partitions.DAY_NS
        sql(f"ALTER TABLE {q}.records ATTACH PARTITION {q}.{partitions.LEGACY} FOR VALUES FROM (MINVALUE) TO ({end})")
    sql(f"CREATE TABLE {q}.{partitions.DEFAULT} PARTITION OF {q}.records DEFAULT")
    partitions.unique_indexes(conn, schema, partitions.DEFAULT, seq=True)
    # The quota counter exists from here on: a first commit never counts `records` while holding nothing, which
    # with a partition being made by another process could deadlock (records -> counter -> DDL -> records).
    sql(
        f"INSERT INTO {q}.counters (name, value) SELECT %(name)s, count(*) FROM {q}.records "
        "ON CONFLICT (name) DO NOTHING",
        {"name": ACCEPTED},
    )


@step("project", 9, "records: SQLite day tables (records_d<day>) for the days near now; `records` keeps the rest")
def _records_day_tables(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL has its day partitions (step 8)
    # Nothing moves: the rows already stored stay in `records`, which readers keep reading alongside the day tables
    # (store/day_tables.py), and the writer makes each day's table on first use. The version tells an older LoopKit
    # (which would not see the day tables) that it opens a newer store. The quota counter is made here if missing,
    # from the rows stored so far, so no commit ever counts every table of the store.
    if conn.exec_driver_sql("SELECT 1 FROM counters WHERE name = ?", (ACCEPTED,)).first() is None:
        conn.exec_driver_sql("INSERT INTO counters (name, value) SELECT ?, count(*) FROM records", (ACCEPTED,))


def _add_records_column(conn: Connection, name: str, sql_type: str) -> None:
    """Add a nullable column to `records` and, on SQLite, to each day table (PostgreSQL's partitions get it too).

    NULL in every stored row; a table that has it already is left as it is.
    """
    schema = _translated(conn)
    prefix = f"{conn.dialect.identifier_preparer.quote_schema(schema)}." if schema else ""
    tables = ["records"]
    if conn.dialect.name == "sqlite":
        days = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'records_d%'")
        tables += [day for (day,) in days]
    for table in tables:
        if name not in {c["name"] for c in inspect(conn).get_columns(table, schema=schema)}:
            conn.exec_driver_sql(f"ALTER TABLE {prefix}{table} ADD COLUMN {name} {sql_type}")


@step("project", 10, "records.session_repeat: SQLite indexes a session's first row per trace and write")
def _records_session_repeat(conn: Connection) -> None:
    _add_records_column(conn, "session_repeat", "SMALLINT")
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL's session index keeps every row (schema.py)
    # Day tables made from now on copy this partial index from `records`; those made before keep their full one,
    # which serves the same reads (every row of theirs has session_repeat NULL).
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_records_session")
    next(index for index in records.indexes if index.name == "ix_records_session").create(conn)


@step("project", 11, "records.trace_run: SQLite's trace index holds one entry per run of a trace's rows in a write")
def _records_trace_run(conn: Connection) -> None:
    _add_records_column(conn, "trace_run", "INTEGER")
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL keeps its (trace_id, span_id) keys (schema.py)
    # Day tables made from now on copy `records`' indexes: the partial trace index and no (trace_id, span_id) key.
    # Those made before keep their unique key, which also serves trace reads there (their rows have trace_run NULL
    # until the upgrade). `records`' rows all have trace_run NULL: the new index holds every row with a trace.
    conn.exec_driver_sql("DROP INDEX IF EXISTS ux_records_span")
    next(index for index in records.indexes if index.name == "ix_records_trace_run").create(conn, checkfirst=True)


@step("project", 12, "records: a busy SQLite day in several tables (records_d<day>_<ns>), which an older LoopKit skips")
def _records_day_table_bounds(conn: Connection) -> None:
    # Nothing changes: the writer opens a day's later tables when one is full (store/day_tables.py). The version
    # tells an older LoopKit, which would read only each day's first table, that the store is newer.
    return
