"""PostgreSQL bulk insert through COPY, skipping rows that break a unique index (ON CONFLICT DO NOTHING)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from loopkit_core.store import dialect

_PG = postgresql.psycopg.dialect()
_SAVEPOINT = "loopkit_copy"


def insert_copy(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert rows (tuples in `columns` order) with COPY in the caller's transaction; rows already stored are skipped.

    Returns the number of rows added. A row breaking a unique index (already stored, here or by a concurrent
    transaction, or repeated within `rows`) is skipped as `ON CONFLICT DO NOTHING` would, and of two copies the
    first wins. Values are written as they are: escape NUL in text columns first (dialect.escape_nul_rows).

    COPY cannot skip conflicts, and they are rare (a span re-sent after a lost acknowledgement), so the rows are
    first copied straight into the table inside a savepoint; only on a unique violation is that undone and the
    rows copied into a temporary staging table, then moved by `INSERT ... SELECT ... ON CONFLICT DO NOTHING`.
    """
    if not rows:
        return 0
    sql = _statements(dialect.schema_of(conn), table, columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            _copy(cursor, sql.copy_direct, rows)
        except psycopg.errors.UniqueViolation:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
            return _insert_staged(cursor, sql, rows)
        cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return len(rows)
    except psycopg.Error as exc:
        # Callers see SQLAlchemy's exceptions, as from any other statement (IntegrityError, DataError, ...).
        raise DBAPIError.instance(sql.copy_direct, None, exc, psycopg.Error) from exc
    finally:
        cursor.close()


def insert_staged(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> int:
    """insert_copy's path for rows with conflicts: COPY into staging, then INSERT ... ON CONFLICT DO NOTHING."""
    if not rows:
        return 0
    sql = _statements(dialect.schema_of(conn), table, columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        return _insert_staged(cursor, sql, rows)
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql.copy_staging, None, exc, psycopg.Error) from exc
    finally:
        cursor.close()


def _insert_staged(cursor: psycopg.Cursor, sql: _Statements, rows: Sequence[tuple[Any, ...]]) -> int:
    cursor.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
    if not cursor.fetchone()[0]:
        # A database where temporary tables are not allowed: the same skipping insert, a statement per row.
        cursor.executemany(sql.insert_ignoring, rows)
        return cursor.rowcount  # psycopg sums the rows each statement added
    # IF NOT EXISTS: the table lives as long as the pooled connection, and a rolled-back creation is made again.
    cursor.execute(sql.create_staging)
    _copy(cursor, sql.copy_staging, rows)
    cursor.execute(sql.move)
    return cursor.rowcount


def _copy(cursor: psycopg.Cursor, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with cursor.copy(statement) as stream:  # text format: psycopg escapes tabs, newlines and backslashes
        write = stream.write_row
        for row in rows:
            write(row)


@dataclass(frozen=True)
class _Statements:
    copy_direct: str  # COPY into the table
    create_staging: str
    copy_staging: str
    move: str  # staging -> table, skipping conflicts, emptying staging
    insert_ignoring: str  # INSERT ... VALUES (%s, ...) ON CONFLICT DO NOTHING, for executemany


@functools.cache
def _statements(schema: str | None, table: Table, columns: tuple[str, ...]) -> _Statements:
    """The statements for one table (in `schema`) and column list, built once."""
    quote = _PG.identifier_preparer.quote
    definitions = ", ".join(f"{quote(c)} {table.c[c].type.compile(dialect=_PG)}" for c in columns)
    # The name carries a digest of the definition: another column list (a schema change) gets its own table.
    digest = hashlib.blake2b(f"{table.name}({definitions})".encode(), digest_size=6).hexdigest()
    # Qualified with pg_temp: a table of that name elsewhere on the search path is never the one written.
    staging = f"pg_temp.loopkit_stage_{table.name}_{digest}"
    names = ", ".join(quote(c) for c in columns)
    target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    return _Statements(
        copy_direct=f"COPY {target} ({names}) FROM STDIN",
        # ON COMMIT DELETE ROWS: emptied in place by a commit that used it (no catalog change, unlike CREATE and
        # DROP per transaction); a commit that did not touch it skips that.
        create_staging=f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({definitions}) ON COMMIT DELETE ROWS",
        copy_staging=f"COPY {staging} ({names}) FROM STDIN",
        # The DELETE ... RETURNING also empties staging for the next call in the same transaction; it returns the
        # rows in the order COPY wrote them (one heap, appended to by this connection alone).
        move=(
            f"WITH moved AS (DELETE FROM {staging} RETURNING {names}) "
            f"INSERT INTO {target} ({names}) SELECT {names} FROM moved ON CONFLICT DO NOTHING"
        ),
        insert_ignoring=(
            f"INSERT INTO {target} ({names}) VALUES ({', '.join('%s' for _ in columns)}) ON CONFLICT DO NOTHING"
        ),
    )
