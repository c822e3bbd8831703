"""PostgreSQL bulk insert: rows streamed with COPY into a staging table, then moved with ON CONFLICT DO NOTHING."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

from loopkit_core.store import dialect

_PG = postgresql.psycopg.dialect()


def insert_copy(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert rows (tuples in `columns` order) through COPY; rows breaking a unique index are skipped.

    Returns the number of rows added. COPY cannot skip conflicts itself, so the rows go into a temporary staging
    table of this connection first, then one `INSERT ... SELECT ... ON CONFLICT DO NOTHING` moves them, in the
    order given (the first of two copies of a row wins, as with executemany), and empties the staging table.
    Values are written as they are: escape NUL in text columns first (dialect.escape_nul_rows).
    """
    if not rows:
        return 0
    create, copy, move = _statements(dialect.schema_of(conn), table, columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        # IF NOT EXISTS: the table lives as long as the pooled connection, and a rolled-back creation is redone.
        cursor.execute(create)
        with cursor.copy(copy) as stream:
            write = stream.write_row
            for row in rows:
                write(row)
        cursor.execute(move)
        return cursor.rowcount
    finally:
        cursor.close()


@functools.cache
def _statements(schema: str | None, table: Table, columns: tuple[str, ...]) -> tuple[str, str, str]:
    """CREATE (staging), COPY (into staging) and the move (staging -> table), for one table and column list."""
    quote = _PG.identifier_preparer.quote
    definitions = ", ".join(f"{quote(c)} {table.c[c].type.compile(dialect=_PG)}" for c in columns)
    # The name carries a digest of the definition: a changed column list (a schema change) gets its own table.
    digest = hashlib.blake2b(f"{table.name}({definitions})".encode(), digest_size=6).hexdigest()
    # Qualified with pg_temp: a table of that name elsewhere on the search path is never the one written.
    staging = f"pg_temp.loopkit_stage_{table.name}_{digest}"
    names = ", ".join(quote(c) for c in columns)
    target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    # ON COMMIT DELETE ROWS: emptied in place at each commit (no catalog change, unlike CREATE/DROP per commit).
    create = f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({definitions}) ON COMMIT DELETE ROWS"
    copy = f"COPY {staging} ({names}) FROM STDIN"
    # The DELETE ... RETURNING empties the staging table for the next call in the same transaction, in the same
    # statement; it returns rows in the order COPY wrote them (one heap, appended, no concurrent writer).
    move = (
        f"WITH moved AS (DELETE FROM {staging} RETURNING {names}) "
        f"INSERT INTO {target} ({names}) SELECT {names} FROM moved ON CONFLICT DO NOTHING"
    )
    return create, copy, move


def insert_unnest(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert rows as one `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`, one array per column."""
    if not rows:
        return 0
    sql = _unnest_statement(dialect.schema_of(conn), table, columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, [list(values) for values in zip(*rows, strict=True)])
        return cursor.rowcount
    finally:
        cursor.close()


@functools.cache
def _unnest_statement(schema: str | None, table: Table, columns: tuple[str, ...]) -> str:
    quote = _PG.identifier_preparer.quote
    arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=_PG)}[]" for c in columns)
    names = ", ".join(quote(c) for c in columns)
    target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    return f"INSERT INTO {target} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
