"""The bounded window a diagnoser reads: grouped queries that stay cheap on millions of records."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    CompoundSelect,
    Connection,
    Engine,
    Executable,
    Integer,
    Row,
    Select,
    and_,
    bindparam,
    case,
    column,
    false,
    func,
    or_,
    select,
    true,
    union_all,
    values,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from loopkit_core.fingerprint_rules import FingerprintRule
from loopkit_core.model import SIGNAL_TYPES
from loopkit_core.releases import ReleaseGroup
from loopkit_core.selectors import AnyOf, Match, Selector, parse_selector
from loopkit_core.store import day_tables
from loopkit_core.store.dialect import NulSafeText, byte_ordered, escape_nul
from loopkit_core.store.grouping_rules import rules_in_force
from loopkit_core.store.partial_indexes import during, in_traces, run_people, traced
from loopkit_core.store.records import records_json, resource_bodies, selector_condition
from loopkit_core.store.releases import release_counts, releases_of_rows, resource_releases
from loopkit_core.store.rule_conditions import match_condition, signed, variable_expression
from loopkit_core.store.schema import issue_signatures, issues, records, signatures
from loopkit_core.store.traces import in_sessions

_DEFAULT_MAX_OPERATIONS = 5000  # distinct operations walked one by one in the index before grouping rows instead


@dataclass(frozen=True)
class SignatureGroup:
    """The records of one ingest signature in the window."""

    signature: str
    template: str
    type: str
    operation: str
    service: str
    exception_type: str
    count: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True)
class RuleMatches:
    """The records of one fingerprint rule in the window that share a type and the values of its variables."""

    rule: int  # the rule's position in the project's rules
    type: str
    values: dict[str, str | None]  # variable -> stored key (see loopkit_core.selectors.RulePart)
    count: int
    first_ns: int
    last_ns: int
    signatures: tuple[str, ...] = ()  # the ingest signatures of these records (Window.failure_groups fills it)


@dataclass(frozen=True)
class FailureGroups:
    """The window's failures in one pass under a project's fingerprint rules (Window.failure_groups)."""

    signature_groups: list[SignatureGroup]  # the failures no rule matches, per signature
    rule_groups: list[RuleMatches]  # each rule's groups, at most limit + 1 per rule, largest first
    ruled_signatures: frozenset[str]  # signatures of the rule groups' records
    cut: frozenset[int]  # rules with more than `limit` groups (their smallest are not in rule_groups)


@dataclass(frozen=True)
class Group:
    """The records of one value of a column (e.g. one operation name) among a selector's records."""

    value: str | None
    count: int
    first_ns: int
    last_ns: int


# Columns of a selector's spread (Window.memoized): where its records are, read once per diagnosis.
SPREAD_COLUMNS = ("trace_id", "session_id", "user_id", "resource_key")
SPREAD_ROWS = 20_000  # distinct (trace, session, user, resource) rows kept per selector; more: each read asks SQL

# Columns a diagnoser may group a selector's records by.
GROUP_COLUMNS = (
    "type",
    "name",
    "service",
    "status",
    "exception_type",
    "session_id",
    "user_id",
    "trace_id",
    "message",
)


@dataclass(frozen=True)
class Operation:
    """One operation (span/record name within a service) and its records in the window."""

    name: str
    service: str
    count: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True)
class SpanRef:
    """Where one record sits in its trace: enough to walk from a span to its ancestors."""

    record_id: str
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None


@dataclass(frozen=True)
class AttributeRow:
    """One record's operation and attributes (span, resource, events): what telling attributes compare."""

    name: str
    service: str
    attributes: Any
    resource_key: str | None  # equal keys, equal resource objects (one parsed object per key and read)
    resource: Any
    events: Any


@dataclass(frozen=True)
class KnownIssue:
    """An issue a previous diagnosis of this project found (identity kept across runs)."""

    fingerprint: str
    issue_id: str
    title: str
    template: str | None
    selector: dict[str, Any]
    first_seen_ns: int


@dataclass(frozen=True)
class Window:
    """Records of one project with start_ns <= timestamp < end_ns; the only data a diagnoser may read."""

    project_id: str
    start_ns: int
    end_ns: int
    engine: Engine
    # Only the records of these resources (a release-aware verification's releases); None: every record.
    resource_keys: tuple[str, ...] | None = None
    # Selector (canonical JSON) -> an equivalent selector in this window, or the signatures all its records carry
    # here (see narrow()); "condition:" + selector -> its narrowed SQL condition, built once. Exact only for this
    # time range: preceding() starts without any.
    _narrowed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Set by memoized(): each selector's spread, read once (shared with the windows made from this one by
    # `replace`, hence keyed by the window's bounds too).
    memo: dict[Any, Any] | None = field(default=None, compare=False, repr=False)

    def narrow(self, selector: Selector | dict[str, Any], within: tuple[str, ...] | Selector) -> None:
        """Record that in this window `selector`'s records are exactly `within`'s (a selector), or all carry one of
        the signatures `within` (a tuple): reads of it then go through the signature index. The caller must have
        counted this from the same window (the signature clusterer does, from failure_groups); a wrong hint gives
        wrong reads."""
        self._narrowed[_key(parse_selector(selector))] = within
        for key in [k for k in self._narrowed if k.startswith("condition:")]:
            del self._narrowed[key]  # built before this hint

    def _condition(self, selector: Selector | dict[str, Any]) -> ColumnElement[bool]:
        # A selector's SQL condition, narrowed by what narrow() recorded (a merged issue's any-of part by part).
        if not self._narrowed:
            return selector_condition(selector)
        parsed = parse_selector(selector)
        whole = "condition:" + _key(parsed)
        if whole in self._narrowed:  # the SQL of an issue's selector is built once per diagnosis, not once per read
            return self._narrowed[whole]
        parts = parsed.selectors if isinstance(parsed, AnyOf) else (parsed,)
        conditions = []
        for part in parts:
            within = self._narrowed.get(_key(part))
            if within is None:
                conditions.append(selector_condition(part))
            elif isinstance(within, tuple):
                conditions.append(and_(records.c.signature.in_(within), selector_condition(part)))
            else:
                conditions.append(selector_condition(within))
        self._narrowed[whole] = conditions[0] if len(conditions) == 1 else or_(*conditions)
        return self._narrowed[whole]

    def memoized(self) -> Window:
        """This window, reading each selector's spread (its records per trace, session, user and resource) once.

        One diagnosis reads every issue's records several ways (sessions, users, traces, releases, reach); a
        memoized window answers those from one grouped read per issue. Meant for one diagnosis: records written
        after the first read of a selector are not seen by the later reads of the same window.
        """
        return replace(self, memo={})

    def _spread(self, selector: Selector | dict[str, Any]) -> list[tuple[Any, ...]] | None:
        """(trace_id, session_id, user_id, resource_key, count, first_ns, last_ns) rows of a selector's records.

        None when the window is not memoized or the selector has more than SPREAD_ROWS distinct rows (reading
        them all would not be bounded; each caller then asks SQL its own bounded question).
        """
        if self.memo is None:
            return None
        key = ("spread", self.start_ns, self.end_ns, self.resource_keys, _key(parse_selector(selector)))
        return self._once(key, lambda: self._read_spread(selector))

    def _once(self, key: Any, read: Callable[[], Any]) -> Any:
        """memo[key], read once: a thread asking for a key that another is reading waits for that read.

        A diagnosis on PostgreSQL reads the issues' impact, causes and telling attributes at once (diagnose.py),
        and all three ask for the same spreads.
        """
        assert self.memo is not None
        if key in self.memo:
            return self.memo[key]
        lock = ("lock", key)
        with self.memo.setdefault(lock, threading.Lock()):  # setdefault: one lock, whoever comes first
            if key not in self.memo:
                self.memo[key] = read()
                del self.memo[lock]  # a later caller finds the answer; one holding the lock finds it too
        return self.memo[key]

    def _read_spread(self, selector: Selector | dict[str, Any]) -> list[tuple[Any, ...]] | None:
        """The spread of _spread(), read from SQL (grouped table by table); None past SPREAD_ROWS rows."""
        r = records.c
        columns = [r[c] for c in SPREAD_COLUMNS]
        stmt = (
            select(*columns, func.count(), func.min(r.ts_ns), func.max(r.ts_ns))
            .where(self._in_window(), self._condition(selector))
            .group_by(*columns)
            .limit(SPREAD_ROWS + 1)
        )
        merged: dict[tuple[Any, ...], list[int]] = {}
        with self._connect() as conn:
            for row in self._per_table(conn, stmt):
                _add(merged, tuple(row[: len(columns)]), row[len(columns) :])
        rows = [(*group, *figures) for group, figures in merged.items()]
        return rows if len(rows) <= SPREAD_ROWS else None

    def _spread_groups(self, selector: Selector | dict[str, Any], by: str, limit: int) -> list[Group] | None:
        """groups() answered from the selector's spread, in SQL's own order; None when that order is not known."""
        rows = self._spread(selector)
        if rows is None or not byte_ordered(self.engine):
            return None
        merged = self._spread_totals(rows, SPREAD_COLUMNS.index(by))
        # ORDER BY count DESC, value: NULL sorts first on SQLite and last on PostgreSQL, whose stored text is
        # escaped (dialect.escape_nul) and compared byte by byte (byte_ordered), as Python compares code points.
        postgres = self.engine.dialect.name == "postgresql"

        def order(item: tuple[str | None, list[int]]) -> tuple[int, bool, str]:
            value = item[0]
            if value is None:
                return (-item[1][0], postgres, "")
            return (-item[1][0], not postgres, escape_nul(value) if postgres else value)

        ordered = sorted(merged.items(), key=order)[:limit]
        return [Group(value, n, first, last) for value, (n, first, last) in ordered]

    def _spread_totals(self, rows: list[tuple[Any, ...]], at: int) -> dict[str | None, list[int]]:
        """value -> [count, first_ns, last_ns] of one spread column, added up once per spread (rows is its key)."""
        assert self.memo is not None

        def add_up() -> dict[str | None, list[int]]:
            merged: dict[str | None, list[int]] = {}
            for row in rows:
                _add(merged, row[at], row[4:7])
            return merged

        return self._once(("totals", id(rows), at), add_up)  # the spread's list lives as long as this entry

    def _each(self, read: Callable[[Any], Any], items: Sequence[Any], name: str) -> list[Any]:
        """[read(item) for item in items], two reads at a time on PostgreSQL (on threads named `name`-N).

        PostgreSQL reads in processes of its own, so two reads keep two of them busy. SQLite's reads hold the GIL
        for much of their time and gained nothing so: there they run one after another.
        """
        if len(items) > 1 and self.engine.dialect.name == "postgresql":
            with ThreadPoolExecutor(_READERS, thread_name_prefix=name) as pool:
                return list(pool.map(read, items))
        return [read(item) for item in items]

    def _connect(self) -> Connection:
        """A connection that reads records of this window's time range only (SQLite skips other days' tables)."""
        return self.engine.connect().execution_options(**{day_tables.RANGE_OPTION: (self.start_ns, self.end_ns)})

    def _per_table(
        self, conn: Connection, stmt: Executable, params: dict[str, Any] | None = None
    ) -> Iterator[Row[Any]]:
        """An aggregate's rows from each table of this window in turn (day_tables.parts); the caller combines them."""
        for options in day_tables.parts(conn, self.start_ns, self.end_ns):
            yield from conn.execute(stmt.execution_options(**options), params).all()  # fetchall: not row by row

    def _in_window(self, by_time: bool = True) -> Any:
        # by_time=False: beside a read of rows by number (traces, sessions), which SQLite must not trade for a scan
        # of the window's range (partial_indexes.during).
        if by_time:
            condition = (records.c.ts_ns >= self.start_ns) & (records.c.ts_ns < self.end_ns)
        else:
            condition = during(self.engine.dialect.name, self.start_ns, self.end_ns)
        if self.resource_keys is not None:
            condition = condition & records.c.resource_key.in_(self.resource_keys)
        return condition

    def releases(self, selector: dict[str, Any] | None = None) -> list[ReleaseGroup]:
        """The window's records (or a selector's) per release (resource service.version), grouped in SQL."""
        spread = None if selector is None else self._spread(selector)
        if spread is not None:
            totals = self._spread_totals(spread, SPREAD_COLUMNS.index("resource_key"))
            with self._connect() as conn:
                return releases_of_rows(conn, [(key, *seen) for key, seen in totals.items()])
        condition = self._in_window() if selector is None else self._in_window() & self._condition(selector)
        with self._connect() as conn:
            return releases_of_rows(conn, [tuple(row) for row in self._per_table(conn, release_counts(condition))])

    def of_releases(self, keep: Callable[[str | None], bool]) -> Window:
        """The same window narrowed to the records whose release passes `keep` (see releases.counts_toward)."""
        with self._connect() as conn:
            keys = tuple(sorted(key for key, release in resource_releases(conn).items() if keep(release)))
        if self.resource_keys is not None:
            keys = tuple(key for key in keys if key in self.resource_keys)
        return replace(self, resource_keys=keys)

    def signature_groups(self, unless: tuple[Match, ...] = ()) -> list[SignatureGroup]:
        """One row per distinct signature among the window's errors and tool failures (grouped in SQL), leaving out
        the records of any of the `unless` matches (those the project's fingerprint rules group)."""
        r, s = records.c, signatures.c
        counted = (
            select(
                r.signature, func.count().label("n"), func.min(r.ts_ns).label("first"), func.max(r.ts_ns).label("last")
            )
            .where(r.signature.is_not(None), self._in_window(), *(~match_condition(m) for m in unless))
            .group_by(r.signature)
            .subquery()
        )
        stmt = select(counted, s.template, s.type, s.operation, s.service, s.exception_type).join(
            signatures, s.signature == counted.c.signature
        )
        merged: dict[str, list[int]] = {}
        described: dict[str, Any] = {}
        with self._connect() as conn:
            for row in self._per_table(conn, stmt):
                _add(merged, row.signature, (row.n, row.first, row.last))
                described[row.signature] = row
        return [
            SignatureGroup(
                signature, row.template, row.type, row.operation, row.service, row.exception_type, *merged[signature]
            )
            for signature, row in sorted(described.items())  # the one table's order: its signature index's
        ]

    def grouping_rules(self) -> list[FingerprintRule]:
        """The project's fingerprint rules in force (the newest saved version), in order; [] when it has none."""
        with self._connect() as conn:
            return rules_in_force(conn)

    def rule_groups(self, rules: list[FingerprintRule], limit: int = 1000) -> list[RuleMatches]:
        """Each rule's errors and tool failures in the window that no earlier rule matched, grouped in SQL by type
        and the rule's fingerprint variables: at most `limit` + 1 groups per rule, largest first."""
        r = records.c
        out: list[RuleMatches] = []
        with self._connect() as conn:
            for index, rule in enumerate(rules):
                names = rule.variables
                keys = [variable_expression(name).label(f"v{i}") for i, name in enumerate(names)]
                earlier = [~match_condition(other.match) for other in rules[:index]]
                stmt = (
                    select(r.type, *keys, func.count().label("n"), func.min(r.ts_ns), func.max(r.ts_ns))
                    .where(self._in_window(), *signed(), match_condition(rule.match), *earlier)
                    .group_by(r.type, *keys)
                    .order_by(func.count().desc(), r.type, *keys)
                    .limit(limit + 1)
                )
                for row in conn.execute(stmt).all():
                    values = dict(zip(names, row[1 : 1 + len(names)], strict=True))
                    out.append(RuleMatches(index, row[0], values, row.n, row[-2], row[-1]))
        return out

    def failure_groups(self, rules: list[FingerprintRule], limit: int = 1000) -> FailureGroups:
        """The window's errors and tool failures in one pass: each record's first matching rule is computed once (a
        CASE over the rules' matches, in order) and the records are grouped by (rule, type, the rule's variables,
        signature); the records no rule matches are the signature groups. Same answers as signature_groups(unless)
        and rule_groups(rules, limit), at the cost of one scan of the window's failures."""
        r = records.c
        names = list(dict.fromkeys(name for rule in rules for name in rule.variables))
        first = case(*((match_condition(rule.match), index) for index, rule in enumerate(rules)), else_=None)
        needed = {"attributes" if name.startswith("attributes.") else name for name in names}
        # Materialized, so the rules' CASE runs once per failure (SQLite would otherwise inline it into every
        # expression that names `rule`).
        tagged = (
            select(r.type, r.signature, r.ts_ns, first.label("rule"), *(r[column] for column in sorted(needed)))
            .where(self._in_window(), *signed())
            .cte("tagged")
            .prefix_with("MATERIALIZED")
        )
        t = tagged.c
        # Each rule keys its groups on its own variables; the others are NULL for it (and, the CASE being lazy, an
        # attribute is only read out of the JSON for the records of rules that name it).
        users = {name: [i for i, rule in enumerate(rules) if name in rule.variables] for name in names}
        masked = [
            case((t.rule.in_(users[name]), variable_expression(name, t)), else_=None).label(f"v{i}")
            for i, name in enumerate(names)
        ]
        fine = (
            select(
                t.rule,
                t.type,
                t.signature,
                *masked,
                func.count().label("n"),
                func.min(t.ts_ns).label("first"),
                func.max(t.ts_ns).label("last"),
            )
            .group_by(t.rule, t.type, t.signature, *masked)
            .subquery()
        )
        f = fine.c
        values = [f[f"v{i}"] for i in range(len(names))]
        # Each (rule, type, values) group's count on every one of its rows (a window sum: one more pass over groups).
        totals = select(fine, func.sum(f.n).over(partition_by=[f.rule, f.type, *values]).label("total")).subquery()
        g = totals.c
        # A rule's groups ranked as rule_groups orders them: count, type, then the rule's variables in its order.
        width = max((len(rule.variables) for rule in rules), default=0)
        order = [
            case(
                *(
                    (g.rule == i, g[f"v{names.index(rule.variables[j])}"])
                    for i, rule in enumerate(rules)
                    if j < len(rule.variables)
                ),
                else_=None,
            )
            for j in range(width)
        ]
        rank = func.dense_rank().over(partition_by=g.rule, order_by=[g.total.desc(), g.type, *order])
        ranked = select(totals, rank.label("rank")).subquery()
        k, s = ranked.c, signatures.c
        stmt = (
            select(ranked, s.template, s.type.label("signature_type"), s.operation, s.service, s.exception_type)
            .outerjoin(signatures, s.signature == k.signature)
            .where(or_(k.rule.is_(None), k.rank <= limit + 1))
            .order_by(k.rule, k.rank, k.signature)
        )
        with self._connect() as conn:
            rows = conn.execute(stmt).all()
        by_signature: list[SignatureGroup] = []
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        ruled: set[str] = set()
        cut: set[int] = set()
        for row in rows:
            if row.rule is None:
                if row.template is not None:  # as signature_groups' inner join
                    by_signature.append(
                        SignatureGroup(
                            row.signature,
                            row.template,
                            row.signature_type,
                            row.operation,
                            row.service,
                            row.exception_type,
                            row.n,
                            row.first,
                            row.last,
                        )
                    )
                continue
            ruled.add(row.signature)
            if row.rank > limit:
                cut.add(row.rule)
            own = {name: getattr(row, f"v{names.index(name)}") for name in rules[row.rule].variables}
            key = (row.rule, row.type, tuple(own.items()))
            group = groups.setdefault(key, {"values": own, "n": 0, "first": row.first, "last": row.last, "sigs": []})
            group["n"] += row.n
            group["first"], group["last"] = min(group["first"], row.first), max(group["last"], row.last)
            group["sigs"].append(row.signature)
        matches = [
            RuleMatches(rule, type_, g["values"], g["n"], g["first"], g["last"], tuple(sorted(set(g["sigs"]))))
            for (rule, type_, _), g in groups.items()
        ]
        by_signature.sort(key=lambda g: g.signature)
        return FailureGroups(by_signature, matches, frozenset(ruled), frozenset(cut))

    def known_issues(self, diagnoser: str) -> list[KnownIssue]:
        """Issues this diagnoser reported in earlier runs of this project."""
        with self._connect() as conn:
            rows = conn.execute(select(issues).where(issues.c.diagnoser == diagnoser)).all()
        return [
            KnownIssue(
                row.fingerprint, row.issue_id, row.title, row.template, orjson.loads(row.selector), row.first_seen_ns
            )
            for row in rows
        ]

    def known_signatures(self) -> dict[str, str]:
        """Signature -> issue fingerprint for every signature an earlier diagnosis assigned."""
        with self._connect() as conn:
            return dict(conn.execute(select(issue_signatures.c.signature, issue_signatures.c.fingerprint)).all())

    def summary(self, selector: Selector | dict[str, Any]) -> tuple[int, int, int]:
        """(count, first_ns, last_ns) of a selector's records in the window."""
        r = records.c
        stmt = select(func.count(), func.min(r.ts_ns), func.max(r.ts_ns)).where(
            self._in_window(), self._condition(selector)
        )
        with self._connect() as conn:
            count, first, last = _total(self._per_table(conn, stmt)) or (0, 0, 0)
        return count, first, last

    def groups(self, selector: Selector | dict[str, Any], by: str = "name", limit: int = 1000) -> list[Group]:
        """A selector's records in the window grouped by one column (grouped in SQL), largest first."""
        if by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {by!r}; one of {', '.join(GROUP_COLUMNS)}")
        if by in SPREAD_COLUMNS:
            found = self._spread_groups(selector, by, limit)
            if found is not None:
                return found
        column = records.c[by]
        stmt = (
            select(column, func.count().label("n"), func.min(records.c.ts_ns), func.max(records.c.ts_ns))
            .where(self._in_window(), self._condition(selector))
            .group_by(column)
            .order_by(func.count().desc(), column)
            .limit(limit)
        )
        with self._connect() as conn:
            return [Group(value, n, first, last) for value, n, first, last in conn.execute(stmt).all()]

    def distinct(self, selector: Selector | dict[str, Any], by: str, limit: int) -> int:
        """How many distinct values of a column (NULL is one) a selector's records carry, counted up to `limit`.

        Stops reading at the `limit`-th value: "more than 50 messages" costs 50 values, not the issue's records.
        """
        return self._count_distinct(selector, by, limit, values_only=False)

    def count_values(self, selector: Selector | dict[str, Any], by: str, limit: int) -> int:
        """How many distinct non-empty values of a column a selector's records carry, counted up to `limit`.

        A memoized window counts a spread column's values from the selector's spread, without sorting its groups.
        """
        rows = self._spread(selector) if by in SPREAD_COLUMNS else None
        if rows is not None:
            totals = self._spread_totals(rows, SPREAD_COLUMNS.index(by))
            return min(sum(1 for value in totals if value), limit)
        return self._count_distinct(selector, by, limit, values_only=True)

    def _count_distinct(self, selector: Selector | dict[str, Any], by: str, limit: int, values_only: bool) -> int:
        """Distinct values of a column counted in SQL up to `limit` (values_only: not NULL, not empty)."""
        if by not in GROUP_COLUMNS:
            raise ValueError(f"cannot count {by!r}; one of {', '.join(GROUP_COLUMNS)}")
        column = records.c[by]
        values = select(column).where(self._in_window(), self._condition(selector))
        if values_only:
            values = values.where(column.is_not(None), column != "")
        counted = select(func.count()).select_from(values.distinct().limit(limit).subquery())
        with self._connect() as conn:
            return conn.execute(counted).scalar_one()

    def sample(
        self,
        selector: Selector | dict[str, Any],
        limit: int = 10,
        slowest: bool = False,
        exclude: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` of a selector's records in the window: the newest, or the slowest; none of `exclude`'s."""
        r = records.c
        order = (r.duration_ms.desc(), r.record_id) if slowest else (r.ts_ns.desc(), r.record_id.desc())
        where = [self._in_window(), self._condition(selector)]
        if exclude is not None:
            # NOT (x IN ...) is NULL where x is NULL (a call without a signature): coalesce keeps those rows.
            where.append(~func.coalesce(self._condition(exclude), false(), type_=Boolean))
        stmt = select(records).where(*where).order_by(*order).limit(limit)
        with self._connect() as conn:
            return records_json(conn, conn.execute(stmt).all(), fingerprints=False)

    def attribute_sample(
        self, selector: Selector | dict[str, Any], limit: int = 10, exclude: dict[str, Any] | None = None
    ) -> list[AttributeRow]:
        """The records sample() would return (newest first), read as their attributes only: no full record JSON."""
        r = records.c
        where = [self._in_window(), self._condition(selector)]
        if exclude is not None:  # as in sample(): NULL conditions keep their rows
            where.append(~func.coalesce(self._condition(exclude), false(), type_=Boolean))
        # The ordering columns are read too: over several day tables SQLite merges the tables' index orders only
        # when they are columns of the result, and otherwise sorts every row of the window that matches.
        columns = (r.name, r.service, r.attributes, r.resource_key, r.resource, r.events, r.ts_ns, r.record_id)
        stmt = select(*columns).where(*where).order_by(r.ts_ns.desc(), r.record_id.desc()).limit(limit)
        with self._connect() as conn:
            rows = conn.execute(stmt).all()
            bodies = resource_bodies(conn, {row.resource_key for row in rows if row.resource_key})
        loads = orjson.loads
        return [
            AttributeRow(
                row.name,
                row.service,
                loads(row.attributes),
                row.resource_key,
                bodies[row.resource_key] if row.resource_key else loads(row.resource),
                # Most spans carry no events: "[]" is not worth a parse.
                loads(row.events) if row.events != "[]" else [],
            )
            for row in rows
        ]

    def counts_by_type(self) -> dict[str, int]:
        """How many records of each signal type the window holds."""
        key = ("counts_by_type", self.start_ns, self.end_ns, self.resource_keys)
        if self.memo is not None and self._grouped_reads() and self.resource_keys is None:
            self._read_groups()
            return dict(self.memo[key])
        if self._grouped_reads():
            # One pass over the window's rows in time order; a count per type would visit each heap page again.
            stmt = select(records.c.type, func.count()).where(self._in_window()).group_by(records.c.type)
            with self._connect() as conn:
                counts = dict(conn.execute(stmt).all())
        else:
            # One range count per type on the (type, ts_ns) index: a covering index read, not a table scan. Spans,
            # most records, are what a memoized range's operations leave (every record has a name and a service):
            # counting them again was a fifth of a million-record window's counting.
            memo = self.memo if self.memo is not None else {}
            operations = memo.get(_operations_key(self.start_ns, self.end_ns, self.resource_keys))
            counts = {}
            with self._connect() as conn:
                for signal_type in SIGNAL_TYPES:
                    if signal_type == "span" and operations is not None:
                        continue
                    stmt = select(func.count()).where(records.c.type == signal_type, self._in_window())
                    counts[signal_type] = sum(n for (n,) in self._per_table(conn, stmt))
            if operations is not None:
                counts["span"] = sum(op.count for op in operations) - sum(counts.values())
        return {t: n for t in SIGNAL_TYPES if (n := counts.get(t, 0))}

    def preceding(self, length_ns: int) -> Window:
        """The window of `length_ns` that ends where this one starts (e.g. a baseline), in the same project."""
        return replace(self, start_ns=max(self.start_ns - length_ns, 0), end_ns=self.start_ns, _narrowed={})

    def part(self, start_ns: int, end_ns: int) -> Window:
        """The part [start_ns, end_ns) of this window (e.g. its first half), sharing its memo."""
        if not self.start_ns <= start_ns <= end_ns <= self.end_ns:
            raise ValueError("a part must lie within the window")
        return replace(self, start_ns=start_ns, end_ns=end_ns, _narrowed={})

    def _grouped_reads(self) -> bool:
        """Whether whole-window counts are one grouped read rather than one index range per group.

        On PostgreSQL an index range still visits the heap for each row's visibility (index-only only where VACUUM
        has set the visibility map, which the newest rows never have), so counting per operation visits the
        window's pages once per operation on them; one grouped read visits each once. SQLite's covering indexes
        answer the per-group counts from the index alone, which is cheaper there.
        """
        return self.engine.dialect.name == "postgresql"

    def operations(self, max_operations: int = _DEFAULT_MAX_OPERATIONS) -> list[Operation]:
        """Every operation (name, service) with records in the window, with its count, in (name, service) order.

        Walks the distinct (name, service) pairs of the per-operation index, one seek each, and counts
        each pair's slice of the window inside the index: the cost grows with the number of operations,
        not with the number of records. A project with more than `max_operations` distinct operations
        (say, names carrying IDs) is grouped over the window's rows instead, which is bounded too; so is
        every window on PostgreSQL (see _grouped_reads). A memoized window reads each range's once.
        """
        key = _operations_key(self.start_ns, self.end_ns, self.resource_keys, max_operations)
        if self.memo is not None and key in self.memo:
            return list(self.memo[key])  # a caller's sort or filter must not change the memo
        r = records.c
        grouped = (
            select(r.name, r.service, func.count(), func.min(r.ts_ns), func.max(r.ts_ns))
            .where(self._in_window())
            .group_by(r.name, r.service)
            .order_by(r.name, r.service)
        )
        if self.memo is not None and self._grouped_reads() and self.resource_keys is None:
            self._read_groups()
            if key in self.memo:  # memoized for the default bound only: the grouped read has none
                return list(self.memo[key])
        found: list[Operation] = []
        with self._connect() as conn:
            if self._grouped_reads() or self.resource_keys is not None:
                found = [Operation(*row) for row in conn.execute(grouped).all()]
            else:
                pairs = self._operation_pairs(conn, max_operations)
                if len(pairs) > max_operations:
                    found = self._grouped_operations(conn, grouped)
                else:
                    for name, service in pairs:
                        params = {"name": name, "service": service, "start": self.start_ns, "end": self.end_ns}
                        total = _total(self._per_table(conn, _COUNT_OPERATION, params))
                        if total is not None:
                            found.append(Operation(name, service, *total))
        if self.memo is not None:
            self.memo[key] = list(found)
        return found

    def _grouped_operations(self, conn: Connection, grouped: Select[Any]) -> list[Operation]:
        """operations() grouped over the window's rows, table by table, in (name, service) order as SQL sorts it."""
        merged: dict[tuple[str, str], list[int]] = {}
        for name, service, *figures in self._per_table(conn, grouped):
            _add(merged, (name, service), figures)
        # SQLite compares text as UTF-8 bytes (BINARY), which orders as Python orders code points.
        return [Operation(name, service, *merged[name, service]) for name, service in sorted(merged)]

    def _read_groups(self) -> None:
        """Memoize this range's operations and type counts, and its two halves', from one grouped read.

        PostgreSQL (see _grouped_reads): each of these is a pass over the range's rows, and a diagnosis asks for
        the window's operations, its type counts and, for the latency detector's stand-in baseline, its halves'
        operations (cut where that detector cuts: start + length // 2). One pass answers all of them.
        """
        assert self.memo is not None
        if ("counts_by_type", self.start_ns, self.end_ns, None) in self.memo:
            return
        middle = self.start_ns + (self.end_ns - self.start_ns) // 2
        r = records.c
        first = r.ts_ns < middle
        second = r.ts_ns >= middle
        stmt = (
            select(r.name, r.service, r.type)
            .add_columns(func.count(), func.min(r.ts_ns), func.max(r.ts_ns))
            .add_columns(*(f.filter(first) for f in (func.count(), func.min(r.ts_ns), func.max(r.ts_ns))))
            .add_columns(*(f.filter(second) for f in (func.count(), func.min(r.ts_ns), func.max(r.ts_ns))))
            .where(self._in_window())
            .group_by(r.name, r.service, r.type)
            .order_by(r.name, r.service)  # operations() order: SQL's own collation, as its other reads
        )
        ranges = [(self.start_ns, self.end_ns), (self.start_ns, middle), (middle, self.end_ns)]
        ops: list[dict[tuple[str, str], list[int]]] = [{}, {}, {}]
        types: list[dict[str, int]] = [{}, {}, {}]
        with self._connect() as conn:
            for name, service, signal_type, *figures in conn.execute(stmt):
                for i in range(3):
                    count, low, high = figures[3 * i : 3 * i + 3]
                    if not count:
                        continue
                    types[i][signal_type] = types[i].get(signal_type, 0) + count
                    seen = ops[i].setdefault((name, service), [0, low, high])
                    seen[0] += count
                    seen[1], seen[2] = min(seen[1], low), max(seen[2], high)
        for (start, end), found, counted in zip(ranges, ops, types, strict=True):
            listed = [Operation(name, service, *figures) for (name, service), figures in found.items()]
            self.memo.setdefault(_operations_key(start, end, None), listed)
            by_type = {t: n for t in SIGNAL_TYPES if (n := counted.get(t, 0))}
            self.memo.setdefault(("counts_by_type", start, end, None), by_type)

    def _operation_counts(self) -> dict[tuple[str, str], int]:
        """(name, service) -> records in this range, from the memoized operations()."""
        assert self.memo is not None
        key = ("operation_counts", self.start_ns, self.end_ns, self.resource_keys)
        if key not in self.memo:
            self.memo[key] = {(op.name, op.service): op.count for op in self.operations()}
        return self.memo[key]

    def _operation_pairs(self, conn: Any, max_operations: int) -> list[tuple[str, str]]:
        """The distinct (name, service) pairs of the project, up to max_operations + 1, one index seek each."""
        r = records.c
        pairs: list[tuple[str, str]] = []
        row = conn.execute(select(r.name, r.service).order_by(r.name, r.service).limit(1)).first()
        while row is not None and len(pairs) <= max_operations:
            pairs.append((row.name, row.service))
            row = (
                conn.execute(_NEXT_SERVICE, {"name": row.name, "service": row.service}).first()
                or conn.execute(_NEXT_NAME, {"name": row.name}).first()
            )
        return pairs

    def durations(
        self, name: str, service: str, limit: int = 2000, strata: int = 20, count: int | None = None
    ) -> list[float]:
        """One operation's durations (ms) in the window, ascending: all of them, or a bounded sample.

        With at most `limit` records the answer is exact. Otherwise it is a deterministic time-stratified
        sample: the window is cut into `strata` equal slices and the first ceil(limit/strata) records of
        each slice (in time order) are read from the per-operation index, so the cost is bounded by
        `limit` index entries however many records the window holds, and every part of the window is
        represented (a cut-off "first N" would only see its start). `count`: the operation's records in this
        window when the caller already knows it (an Operation of operations()), which saves counting them again.
        """
        params: dict[str, Any] = {"name": name, "service": service, "start": self.start_ns, "end": self.end_ns}
        if self.resource_keys is not None:  # a release-narrowed window: the newest `limit` of its releases' records
            r = records.c
            stmt = (
                select(r.duration_ms, r.ts_ns)  # ts_ns: merged index orders across day tables (attribute_sample)
                .where(r.name == name, r.service == service, self._in_window())
                .order_by(r.ts_ns.desc())
                .limit(limit)
            )
            with self._connect() as conn:
                return sorted(conn.execute(stmt).scalars().all())
        if self.memo is not None and self._grouped_reads():
            # A memoized window on PostgreSQL reads every operation's sample of this range in one statement, unless
            # the range has so many operations (names carrying IDs) that most would be read for nothing.
            counts = self._operation_counts()
            if len(counts) <= _MAX_OPERATIONS_SAMPLED_AT_ONCE:
                return list(self._duration_samples(limit, strata).get((name, service), ()))
            count = counts.get((name, service), 0)
        with self._connect() as conn:
            # Count at most limit + 1 index entries first: reading durations twice would cost more.
            if count is None:
                count = conn.execute(_COUNT_UP_TO, {**params, "limit": limit + 1}).scalar_one()
            if count == 0:
                return []
            if count <= limit:
                return sorted(conn.execute(_DURATIONS, params).scalars().all())
            span = self.end_ns - self.start_ns
            for i in range(strata + 1):
                params[f"t{i}"] = self.start_ns + span * i // strata
            params["per_stratum"] = -(-limit // strata)
            return sorted(conn.execute(_stratified_durations(strata), params).scalars().all())

    def _duration_samples(self, limit: int, strata: int) -> dict[tuple[str, str], list[float]]:
        """(name, service) -> that operation's durations() in this range, for every operation, memoized.

        The same samples as one read per operation (all durations up to `limit`, else the first of each time
        stratum in (ts_ns, duration_ms) order), read as one lateral join over the operations and strata: on
        PostgreSQL a diagnosis made ~500 such reads, one statement each (docs/benchmarks.md).
        """
        assert self.memo is not None
        key = ("duration_samples", self.start_ns, self.end_ns, limit, strata)
        if key in self.memo:
            return self.memo[key]
        counts = self._operation_counts()
        exact = sorted(op for op, n in counts.items() if 0 < n <= limit)
        sampled = sorted(op for op, n in counts.items() if n > limit)
        span = self.end_ns - self.start_ns
        bounds = [(self.start_ns + span * i // strata, self.start_ns + span * (i + 1) // strata) for i in range(strata)]
        reads = [
            (ops[start : start + _OPERATIONS_A_READ], per_stratum)
            for ops, per_stratum in ((exact, None), (sampled, -(-limit // strata)))
            for start in range(0, len(ops), _OPERATIONS_A_READ)
        ]

        def read(chunk: list[tuple[str, str]], per_stratum: int | None) -> list[Any]:
            with self._connect() as conn:
                return conn.execute(_lateral_durations(chunk, self.start_ns, self.end_ns, bounds, per_stratum)).all()

        answers = self._each(lambda args: read(*args), reads, "loopkit-durations")
        found: dict[tuple[str, str], list[float]] = {}
        for (chunk, _), rows in zip(reads, answers, strict=True):
            for i, sample in rows:
                found[chunk[i]] = sample
        self.memo[key] = found
        return found

    def traces(self, trace_ids: list[str], limit: int = 1000) -> list[dict[str, Any]]:
        """Records of the given traces in the window (at most `limit`, oldest first), e.g. a slow span's children."""
        if not trace_ids:
            return []
        r = records.c
        with self._connect() as conn:
            stmt = (
                select(records)
                .where(in_traces(conn, trace_ids), self._in_window(by_time=False))
                .order_by(r.ts_ns, r.record_id)
                .limit(limit)
            )
            return records_json(conn, conn.execute(stmt).all(), fingerprints=False)

    def sessions(self, session_ids: list[str], limit: int = 1000, roots_only: bool = False) -> list[dict[str, Any]]:
        """Records of the given sessions in the window (at most `limit`, oldest first), e.g. what a user did.

        With `roots_only`, only root spans (no parent) that are not user signals: the requests a user made.
        """
        if not session_ids:
            return []
        r = records.c
        with self._connect() as conn:
            # The window's tables hold the session index rows of their own rows (one per session, trace and day).
            stmt = select(records).where(in_sessions(conn, sorted(set(session_ids))), self._in_window(by_time=False))
            if roots_only:
                stmt = stmt.where(r.parent_span_id.is_(None), r.type != "user_signal")
            stmt = stmt.order_by(r.ts_ns, r.record_id).limit(limit)
            return records_json(conn, conn.execute(stmt).all(), fingerprints=False)

    def reach(self, selector: dict[str, Any], limit: int = 10_000) -> tuple[set[str], set[str], set[str]]:
        """(traces, sessions, users) a selector's records touch in the window: theirs and their traces' records.

        A failing child span rarely carries `session.id` (its root does), so sessions and users are read
        from every record of the traces the selector's records belong to. Each set holds at most `limit`.
        """
        return self.reaches([selector], limit)[0]

    def reaches(
        self, selectors: Sequence[dict[str, Any]], limit: int = 10_000
    ) -> list[tuple[set[str], set[str], set[str]]]:
        """reach() of each selector, reading the records of a trace that several selectors share once."""
        owns = [self._own_people(selector, limit) for selector in selectors]
        people = self._trace_people(sorted({t for own in owns for t, _, _ in own if t}), limit)
        found = []
        for own in owns:
            traces = sorted({t for t, _, _ in own if t})
            sessions = {s for _, s, _ in own if s}
            users = {u for _, _, u in own if u}
            for trace in traces:
                seen = people.get(trace)
                if seen is not None:
                    sessions |= seen[0]
                    users |= seen[1]
            found.append((set(traces[:limit]), set(sorted(sessions)[:limit]), set(sorted(users)[:limit])))
        return found

    def _own_people(self, selector: dict[str, Any], limit: int) -> list[Any]:
        """Distinct (trace_id, session_id, user_id) of a selector's own records in the window, at most `limit`.

        Past `limit`: the first `limit` in (trace, session, user) order, NULL last, when the selector's spread (read
        for a plain window too) holds them, else the ones SQL returns first. A memoized and a plain window agree.
        """
        spread = self._spread(selector) if self.memo is not None else self._read_spread(selector)
        if spread is not None:
            own = {row[:3] for row in spread}
            if len(own) <= limit:
                return list(own)
            return sorted(own, key=lambda row: tuple((value is None, value or "") for value in row))[:limit]
        r = records.c
        stmt = (
            select(r.trace_id, r.session_id, r.user_id)
            .where(self._in_window(), self._condition(selector))
            .distinct()
            .limit(limit)
        )
        with self._connect() as conn:
            return list(conn.execute(stmt).all())

    def _trace_people(self, traces: list[str], limit: int) -> dict[str, tuple[set[str], set[str]]]:
        """trace_id -> (sessions, users) of every record of these traces in the window."""
        chunks = [traces[start : start + _TRACES_A_READ] for start in range(0, len(traces), _TRACES_A_READ)]
        # Two at a time on PostgreSQL made a diagnosis 0.95x (docs/benchmarks.md); merged in chunk order as before.
        found = self._each(lambda chunk: self._people_of(chunk, limit), chunks, "loopkit-people")
        people: dict[str, tuple[set[str], set[str]]] = {}
        for rows in found:
            for trace, session, user in rows:
                sessions, users = people.setdefault(trace, (set(), set()))
                if session:
                    sessions.add(session)
                if user:
                    users.add(user)
        return people

    def _people_of(self, traces: list[str], limit: int) -> list[Any]:
        """Distinct (trace, session, user) of these traces' records in the window with a session or a user."""
        r = records.c
        with self._connect() as conn:
            found = run_people(conn, traces, self.start_ns, self.end_ns, self.resource_keys, limit)
            if found is not None:
                return found
            stmt = (
                select(r.trace_id, r.session_id, r.user_id)
                .where(self._in_window(by_time=False), in_traces(conn, traces))
                .where((r.session_id.is_not(None)) | (r.user_id.is_not(None)))
                .distinct()
                .limit(limit)
            )
            return list(self._per_table(conn, stmt))

    def trace_members(self, selector: dict[str, Any], trace_ids: list[str], limit: int = 1000) -> list[SpanRef]:
        """A selector's records in the window that belong to the given traces (at most `limit`)."""
        if not trace_ids:
            return []
        r = records.c
        with self._connect() as conn:
            stmt = (
                select(r.record_id, r.trace_id, r.span_id, r.parent_span_id)
                .where(in_traces(conn, trace_ids), self._in_window(by_time=False), self._condition(selector))
                .order_by(r.trace_id, r.record_id)
                .limit(limit)
            )
            return [SpanRef(*row) for row in conn.execute(stmt).all()]

    def span_tree(self, trace_ids: list[str], limit: int = 5000) -> list[SpanRef]:
        """Every record of the given traces (IDs and parents only, at most `limit`), to walk parent chains."""
        if not trace_ids:
            return []
        r = records.c
        with self.engine.connect() as conn:
            trace = traced(conn, trace_ids)
            stmt = (
                select(r.record_id, r.trace_id, r.span_id, r.parent_span_id)
                .where(trace.condition)
                .order_by(r.trace_id, r.record_id)
                .limit(limit)
            )
            return [SpanRef(*row) for row in conn.execute(trace.within(stmt)).all()]


# Per-operation statements, built once (bound parameters keep SQLAlchemy's compiled cache warm).
# Each one is a range of the index ix_records_operation (name, service, ts_ns, duration_ms).
_r = records.c
_NEXT_SERVICE = (
    select(_r.name, _r.service)
    .where(_r.name == bindparam("name"), _r.service > bindparam("service"))
    .order_by(_r.name, _r.service)
    .limit(1)
)
_NEXT_NAME = select(_r.name, _r.service).where(_r.name > bindparam("name")).order_by(_r.name, _r.service).limit(1)
_OPERATION_IN_WINDOW = (
    (_r.name == bindparam("name"))
    & (_r.service == bindparam("service"))
    & (_r.ts_ns >= bindparam("start"))
    & (_r.ts_ns < bindparam("end"))
)
_COUNT_OPERATION = select(func.count(), func.min(_r.ts_ns), func.max(_r.ts_ns)).where(_OPERATION_IN_WINDOW)
_DURATIONS = select(_r.duration_ms).where(_OPERATION_IN_WINDOW)
_COUNT_UP_TO = select(func.count()).select_from(_DURATIONS.limit(bindparam("limit")).subquery())


@functools.cache
def _stratified_durations(strata: int) -> CompoundSelect:
    # Each slice reads ts_ns too: over several day tables SQLite merges their index orders only for ordering
    # columns that are columns of the result (see attribute_sample); callers take the first column.
    slices = [
        select(_r.duration_ms, _r.ts_ns)
        .where(
            _r.name == bindparam("name"),
            _r.service == bindparam("service"),
            _r.ts_ns >= bindparam(f"t{i}"),
            _r.ts_ns < bindparam(f"t{i + 1}"),
        )
        .order_by(_r.ts_ns, _r.duration_ms)  # the index's own order: ties in time broken alike everywhere
        .limit(bindparam("per_stratum"))
        .subquery()
        .select()
        for i in range(strata)
    ]
    return union_all(*slices)


_TRACES_A_READ = 1000  # traces in one read of their records (bounded IN lists)
_READERS = 2  # reads at once on PostgreSQL (Window._each: the trace people, the duration samples)
_OPERATIONS_A_READ = 200  # operations in one lateral read of durations (bounded VALUES lists)
_MAX_OPERATIONS_SAMPLED_AT_ONCE = 1000  # beyond it a range's samples are read operation by operation, on demand


def _lateral_durations(
    ops: list[tuple[str, str]], start_ns: int, end_ns: int, bounds: list[tuple[int, int]], per_stratum: int | None
) -> Select[Any]:
    """(position in `ops`, duration_ms) of the operations in [start_ns, end_ns): all, or per_stratum a stratum."""
    # Positions, not names, come back: a few hundred thousand rows would each unescape two texts otherwise.
    listed = values(column("i", Integer), column("name", NulSafeText), column("service", NulSafeText), name="ops").data(
        [(i, name, service) for i, (name, service) in enumerate(ops)]
    )
    # The range as constants too (the strata lie within it): PostgreSQL prunes day partitions at plan time.
    read = select(_r.duration_ms).where(
        _r.name == listed.c.name, _r.service == listed.c.service, _r.ts_ns >= start_ns, _r.ts_ns < end_ns
    )
    if per_stratum is None:
        durations = read.lateral("durations")
        joined = listed.join(durations, true())
    else:
        strata = values(column("lo", BigInteger), column("hi", BigInteger), name="strata").data(bounds)
        durations = (
            read.where(_r.ts_ns >= strata.c.lo, _r.ts_ns < strata.c.hi)
            .order_by(_r.ts_ns, _r.duration_ms)
            .limit(per_stratum)
            .lateral("durations")
        )
        joined = listed.join(strata, true()).join(durations, true())
    # One sorted array per operation: a row per duration cost the client as much as the read (docs/benchmarks.md).
    sample = func.array_agg(aggregate_order_by(durations.c.duration_ms, durations.c.duration_ms))
    return select(listed.c.i, sample).select_from(joined).group_by(listed.c.i)


def _operations_key(
    start_ns: int, end_ns: int, resource_keys: tuple[str, ...] | None, max_operations: int = _DEFAULT_MAX_OPERATIONS
) -> tuple[Any, ...]:
    """The memo key of operations() of a range (read by counts_by_type, filled by _read_groups too)."""
    return ("operations", start_ns, end_ns, resource_keys, max_operations)


def _add(merged: dict[Any, list[int]], key: Any, figures: Sequence[int]) -> None:
    """Fold one table's (count, first_ns, last_ns) of a group into `merged`: counts add up, the range widens."""
    count, first, last = figures
    seen = merged.get(key)
    if seen is None:
        merged[key] = [count, first, last]
    else:
        seen[0] += count
        seen[1], seen[2] = min(seen[1], first), max(seen[2], last)


def _total(rows: Iterable[Sequence[Any]]) -> list[int] | None:
    """(count, first_ns, last_ns) over the tables' (count, min, max) rows; None when no table has a record."""
    merged: dict[None, list[int]] = {}
    for row in rows:
        if row[0]:
            _add(merged, None, row)
    return merged.get(None)


def _key(selector: Selector) -> str:
    # One selector's canonical JSON: equal selectors, equal keys.
    return json.dumps(selector.to_json(), sort_keys=True)
