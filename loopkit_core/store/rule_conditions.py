"""Fingerprint rules as SQL over stored records: a rule's match, a variable's value, a rule group's part, and which
rule issue a record belongs to (docs/grouping.md#fingerprint-rules). Both backends; see store/dialect.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, Connection, and_, case, false, func, select

from loopkit_core.fingerprint_rules import fingerprint
from loopkit_core.model import FAILURE_TYPES
from loopkit_core.selectors import ATTRIBUTE_PREFIX, MATCH_COLUMNS, Match, RulePart
from loopkit_core.store import dialect
from loopkit_core.store.grouping_rules import rules_in_force
from loopkit_core.store.schema import issues, records


def match_condition(match: Match) -> ColumnElement[bool]:
    """A fingerprint rule's match as SQL, never NULL (a missing attribute or message is a plain no-match)."""
    c = records.c
    equal = [(k, getattr(match, k)) for k in MATCH_COLUMNS]
    conditions: list[ColumnElement[bool]] = [c[k] == v for k, v in equal if v is not None]
    # Cheapest first (both stores stop an AND at its first false): columns, the glob, then the JSON attributes.
    if match.message is not None:
        conditions.append(dialect.glob_match(c.message, match.message))
    conditions += [dialect.json_attribute_equals(c.attributes, k, v) for k, v in match.attributes.items()]
    # NOT over a NULL would drop the row from both a rule's records and the records it leaves to the clusterer.
    return func.coalesce(and_(*conditions), false(), type_=Boolean)


def variable_expression(name: str, columns: Any = None) -> ColumnElement[Any]:
    """The SQL value of a fingerprint variable: a column, or an attribute's JSON type and text (NULL if absent);
    `columns`: where the record's columns are read (a subquery's), records by default."""
    c = records.c if columns is None else columns
    if name.startswith(ATTRIBUTE_PREFIX):
        return dialect.json_attribute_key(c.attributes, name.removeprefix(ATTRIBUTE_PREFIX))
    return c[name]


def signed() -> list[ColumnElement[bool]]:
    """The failures rules group: records with a signature. Only failures are signed at ingest, so the type filter
    changes no answer; it lets both stores read the window's failures through the (type, ts_ns) index instead
    of every record of the window."""
    return [records.c.type.in_(FAILURE_TYPES), records.c.signature.is_not(None)]


def part_condition(part: RulePart) -> ColumnElement[bool]:
    """One rule's share of a rule group: a failure its match holds for, no earlier rule's does, with these values."""
    conditions = [*signed(), match_condition(part.match)]
    conditions += [~match_condition(m) for m in part.unless]
    for name, value in part.values.items():
        expression = variable_expression(name)
        conditions.append(expression.is_(None) if value is None else expression == value)
    return and_(*conditions)


def rule_fingerprints(conn: Connection, record_ids: list[str]) -> dict[str, str | None]:
    """For each of these records a fingerprint rule in force matches: its rule issue's fingerprint once a diagnosis
    tracks that issue, else None (one query for the rules, one over the records, one over the issues)."""
    rules = rules_in_force(conn) if record_ids else []
    if not rules:
        return {}
    names = list(dict.fromkeys(name for rule in rules for name in rule.variables))
    first = case(*((match_condition(rule.match), index) for index, rule in enumerate(rules)), else_=None)
    keys = [variable_expression(name).label(f"v{i}") for i, name in enumerate(names)]
    listed = dialect.one_of(conn, records.c.record_id, record_ids)
    stmt = select(records.c.record_id, first.label("rule"), *keys).where(listed)
    found: dict[str, str] = {}
    for row in conn.execute(stmt).all():
        if row.rule is not None:
            rule = rules[row.rule]
            values = dict(zip(names, row[2:], strict=True))
            found[row.record_id] = fingerprint(rule, {name: values[name] for name in rule.variables})
    tracked = set()
    if found:
        query = select(issues.c.fingerprint).where(dialect.one_of(conn, issues.c.fingerprint, found.values()))
        tracked = set(conn.execute(query).scalars().all())
    return {record_id: key if key in tracked else None for record_id, key in found.items()}
