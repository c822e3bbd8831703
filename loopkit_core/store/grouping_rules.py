"""The project's fingerprint rules: append-only versions, the newest in force (PUT /v1/grouping/rules)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError

from loopkit_core.fingerprint_rules import FingerprintRule, parse_rules
from loopkit_core.model import rfc3339
from loopkit_core.store.schema import grouping_rules

CONFLICT = "conflict"


def current(engine: Engine) -> dict[str, Any]:
    """The rules in force as the API answers them: version (0 and [] when none was ever saved), rules, who, when."""
    with engine.connect() as conn:
        return _shape(_latest_row(conn))


def rules_in_force(conn: Connection) -> list[FingerprintRule]:
    """The newest version's rules, parsed (they were validated when saved); [] when there are none."""
    row = _latest_row(conn)
    return parse_rules(orjson.loads(row.body)) if row is not None else []


def save(
    engine: Engine, rules: list[FingerprintRule], actor: str, now_ns: int, expected: int | None
) -> dict[str, Any] | str:
    """Append a new version (the previous + 1); CONFLICT when `expected` is not the version in force, or when
    another writer saved the same version first."""
    body = orjson.dumps([rule.to_json() for rule in rules]).decode()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # hold the write lock from the read on (pysqlite begins at the INSERT)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            version = conn.execute(select(func.max(grouping_rules.c.version))).scalar() or 0
            if expected is not None and expected != version:
                return CONFLICT
            row = {"version": version + 1, "body": body, "actor": actor, "created_ns": now_ns}
            # Two writers reading the same version both try version + 1: the primary key lets one in.
            conn.execute(grouping_rules.insert().values(**row))
    except IntegrityError:
        return CONFLICT
    with engine.connect() as conn:
        return _shape(conn.execute(select(grouping_rules).where(grouping_rules.c.version == version + 1)).first())


def _latest_row(conn: Connection) -> Any:
    stmt = select(grouping_rules).order_by(grouping_rules.c.version.desc()).limit(1)
    return conn.execute(stmt).first()


def _shape(row: Any) -> dict[str, Any]:
    if row is None:
        return {"version": 0, "rules": [], "updated_at": None, "updated_by": None}
    return {
        "version": row.version,
        "rules": orjson.loads(row.body),
        "updated_at": rfc3339(row.created_ns),
        "updated_by": row.actor,
    }
