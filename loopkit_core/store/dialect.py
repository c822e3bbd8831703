"""Dialect: the few statements that differ between SQLite and PostgreSQL, picked from the connection."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Float,
    String,
    Table,
    Text,
    TypeDecorator,
    any_,
    bindparam,
    literal,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Boolean as BooleanType

# Positional DB-API forms, for statements handed straight to executemany with tuples.
_POSITIONAL = {"sqlite": sqlite.dialect(), "postgresql": postgresql.psycopg.dialect(paramstyle="format")}


def insert(bind: Connection | Engine, table: Table) -> Insert:
    """An INSERT for the bind's dialect; both kinds support on_conflict_do_nothing / _do_update."""
    module = postgresql if bind.dialect.name == "postgresql" else sqlite
    return module.insert(table)  # type: ignore[return-value]


def one_of(conn: Connection, column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `column = ANY(array)`, one parameter for them all.

    Binding and parsing a parameter per value cost a thousand-record page a tenth of its time on PostgreSQL, and a
    diagnosis's trace reads a quarter of theirs (docs/benchmarks.md). The array's item type is the column's, so a
    value is escaped (NUL) as the column's own are.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, sorted(set(values)), type_=ARRAY(column.type)))
    return column.in_(list(values))  # a list: any iterable (a set, a dict's values) is read once, here


def schema_of(conn: Connection) -> str | None:
    """The schema a connection's unqualified tables live in (PostgreSQL projects), or None."""
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    return translate.get(None)


def insert_ignoring_sql(conn: Connection, table: Table, conflict: tuple[str, ...], columns: tuple[str, ...]) -> str:
    """`INSERT ... ON CONFLICT (conflict) DO NOTHING` as driver SQL with positional parameters, for executemany.

    With no `conflict` columns, a row that would break any unique index is skipped.

    Compiled once per dialect and schema: raw executemany skips SQLAlchemy's per-row parameter processing,
    and schema_translate_map does not apply to driver SQL, so the schema is rendered into the text.
    """
    return _insert_ignoring_sql(conn.dialect.name, schema_of(conn), table, conflict, columns)


@functools.cache
def _insert_ignoring_sql(
    dialect_name: str, schema: str | None, table: Table, conflict: tuple[str, ...], columns: tuple[str, ...]
) -> str:
    module = postgresql if dialect_name == "postgresql" else sqlite
    stmt = module.insert(table).on_conflict_do_nothing(index_elements=list(conflict) or None)
    compiled = stmt.compile(
        dialect=_POSITIONAL[dialect_name],
        column_keys=list(columns),
        schema_translate_map={None: schema} if schema else None,
        render_schema_translate=bool(schema),
    )
    return str(compiled)


class json_attribute_equals(FunctionElement[bool]):  # noqa: N801 (a SQL function, named like one)
    """`attributes.<key> == value` on a JSON text column, type included ("1" is not 1), on either dialect."""

    type = BooleanType()
    inherit_cache = True
    name = "json_attribute_equals"

    def __init__(self, column: Any, key: str, value: str | int | float | bool) -> None:
        value_type = Boolean() if isinstance(value, bool) else BigInteger() if isinstance(value, int) else None
        if value_type is None:
            value_type = Float() if isinstance(value, float) else String()
        super().__init__(column, literal(key, String()), bindparam(None, value, type_=value_type, unique=True))


# SQLite's json_extract reads true as 1 and an array as its JSON text: the JSON type keeps true apart from 1 and
# the string "[1]" apart from the array [1], as jsonb equality does on PostgreSQL.
_SQLITE_JSON_TYPES = {Boolean: "('true', 'false')", BigInteger: "('integer', 'real')", Float: "('integer', 'real')"}


@compiles(json_attribute_equals, "sqlite")
def _json_equals_sqlite(element: json_attribute_equals, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, value = (compiler.process(c, **kw) for c in element.clauses)
    kinds = _SQLITE_JSON_TYPES.get(type(list(element.clauses)[2].type), "('text')")
    path = f"'$.\"' || {key} || '\"'"
    return f"(json_type({column}, {path}) IN {kinds} AND json_extract({column}, {path}) = {value})"


@compiles(json_attribute_equals, "postgresql")
def _json_equals_postgresql(element: json_attribute_equals, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, value = (compiler.process(c, **kw) for c in element.clauses)
    sql_type = compiler.dialect.type_compiler_instance.process(list(element.clauses)[2].type)
    # jsonb equality compares type and value, as SQLite's json_extract comparison does for scalars. jsonb refuses
    # the escape \u0000 (orjson writes NUL so): such a character reads as U+FFFD here instead of failing the query.
    text = f"replace({column}, '\\u0000', '\\ufffd')"
    return f"(CAST({text} AS JSONB) -> {key}) = to_jsonb(CAST({value} AS {sql_type}))"


# PostgreSQL text cannot hold NUL (U+0000), which telemetry may carry. On PostgreSQL, text columns store it
# escaped, losslessly: U+FFFE (a noncharacter) is the escape, NUL -> U+FFFE "0", U+FFFE -> U+FFFE U+FFFE.
# Bound values (inserts and comparisons alike) are escaped the same way, so equality filters still match.
NUL, ESCAPE = "\x00", "\ufffe"
_UNESCAPE = re.compile("\ufffe(.)", re.DOTALL)


def escape_nul(value: str) -> str:
    """A string PostgreSQL text can hold (identity when it has no NUL and no U+FFFE)."""
    if NUL not in value and ESCAPE not in value:
        return value
    return value.replace(ESCAPE, ESCAPE + ESCAPE).replace(NUL, ESCAPE + "0")


def unescape_nul(value: str) -> str:
    """The original string of a value written by escape_nul."""
    if ESCAPE not in value:
        return value
    return _UNESCAPE.sub(lambda m: NUL if m.group(1) == "0" else m.group(1), value)


def escape_nul_rows(rows: list[tuple[Any, ...]], columns: tuple[int, ...] | None = None) -> list[tuple[Any, ...]]:
    """Rows for raw executemany on PostgreSQL, the strings of `columns` (indexes; None: all) escaped.

    Rows without NUL or U+FFFE there stay as they are. Leave JSON text columns out: JSON never holds a raw NUL
    (it is written as the escape \\u0000), and they are read back without unescaping, so an escaped U+FFFE there
    would come back doubled.
    """
    if columns == ():
        return rows
    # One more index, so itemgetter always gives a tuple (of one index alone it gives the bare value).
    pick = None if columns is None else itemgetter(*columns, columns[0])
    out = rows
    for i, row in enumerate(rows):
        values = row if pick is None else pick(row)
        if any(v.__class__ is str and (NUL in v or ESCAPE in v) for v in values):
            if out is rows:
                out = list(rows)
            out[i] = tuple(
                escape_nul(v) if v.__class__ is str and (columns is None or c in columns) else v
                for c, v in enumerate(row)
            )
    return out


class NulSafe(TypeDecorator):
    """Text that round-trips NUL on PostgreSQL; on SQLite no processing at all (no per-value cost)."""

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """Escape on PostgreSQL only."""
        if dialect.name != "postgresql":
            return None
        return lambda value: escape_nul(value) if isinstance(value, str) else value

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """Unescape on PostgreSQL only."""
        if dialect.name != "postgresql":
            return None
        # The escape is checked inline: a diagnosis reads ~600,000 values, nearly none escaped (~0.1 us a value).
        return lambda value: unescape_nul(value) if isinstance(value, str) and ESCAPE in value else value


class NulSafeText(NulSafe):
    """TEXT, NUL-safe on PostgreSQL."""

    impl = Text
    cache_ok = True


class NulSafeString(NulSafe):
    """VARCHAR(n), NUL-safe on PostgreSQL."""

    impl = String
    cache_ok = True


class json_attribute_key(FunctionElement[str]):  # noqa: N801 (a SQL function, named like one)
    """An attribute's JSON type and text as one string (`text:Timeout`, `integer:3`, ...), NULL when absent.

    Fingerprint rules group by it and compare with it, so "1" and 1 stay apart and a missing attribute differs
    from an empty one. The type names are the backend's (SQLite json_type, PostgreSQL jsonb_typeof);
    `loopkit_core.fingerprint_rules.attribute_value` reads either back as a JSON value.
    """

    type = String()
    inherit_cache = True
    name = "json_attribute_key"

    def __init__(self, column: Any, key: str) -> None:
        super().__init__(column, literal(key, String()))


@compiles(json_attribute_key, "sqlite")
def _json_key_sqlite(element: json_attribute_key, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    path = f"'$.\"' || {key} || '\"'"
    return f"(json_type({column}, {path}) || ':' || coalesce(CAST(json_extract({column}, {path}) AS TEXT), ''))"


@compiles(json_attribute_key, "postgresql")
def _json_key_postgresql(element: json_attribute_key, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    value = f"(CAST(replace({column}, '\\u0000', '\\ufffd') AS JSONB) -> {key})"
    return f"(jsonb_typeof({value}) || ':' || coalesce({value} #>> '{{}}', ''))"


class glob_match(FunctionElement[bool]):  # noqa: N801 (a SQL function, named like one)
    """`column` fits a glob (`*` any run of characters, `?` one character, all else literal), case-sensitive.

    SQLite: GLOB (case-sensitive, `[` escaped as `[[]`); PostgreSQL: LIKE with `%`, `_` and `\\` escaped (LIKE is
    case-sensitive there). Both count characters, not bytes, for `?`.
    """

    type = BooleanType()
    inherit_cache = True
    name = "glob_match"

    def __init__(self, column: Any, pattern: str) -> None:
        # Both dialects' forms are bound (one is used): rewriting a bound value while compiling would defeat
        # SQLAlchemy's statement cache, which reuses the compiled text with the statement's own parameters.
        glob = pattern.replace("[", "[[]")
        like = "".join({"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(ch, ch) for ch in pattern)
        super().__init__(column, literal(glob, String()), literal(escape_nul(like), String()))


@compiles(glob_match, "sqlite")
def _glob_sqlite(element: glob_match, compiler: SQLCompiler, **kw: Any) -> str:
    # Only the bound form this dialect uses is compiled: a compiled but unused parameter would shift the others.
    column, glob, _ = element.clauses
    return f"({compiler.process(column, **kw)} GLOB {compiler.process(glob, **kw)})"


@compiles(glob_match, "postgresql")
def _glob_postgresql(element: glob_match, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, like = element.clauses
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(like, **kw)} ESCAPE '\\')"


def byte_ordered(engine: Engine) -> bool:
    """Whether ORDER BY on the engine's text columns compares code points (SQLite's BINARY; PostgreSQL's C).

    Then Python's own string order is the database's, and a grouped read can be reordered in Python.
    """
    if engine.dialect.name == "sqlite":
        return True
    return _byte_ordered(engine)


@functools.cache
def _byte_ordered(engine: Engine) -> bool:
    # The database's default collation is the text columns' (they name none). glibc's C.UTF-8 and PostgreSQL's
    # C and POSIX order by code point; any other locale, or ICU, orders text by language rules.
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT datcollate, datlocprovider FROM pg_database WHERE datname = current_database()"
        ).first()
    if row is None:
        return False
    collate, provider = row
    provider = provider.decode() if isinstance(provider, bytes) else str(provider)
    return provider == "c" and str(collate).lower() in ("c", "posix", "c.utf-8", "c.utf8")
