"""The append-only audit of issues people merged and unmerged, and the merge state it defines.

A row is a merge (source folded into target) or an unmerge (source apart again). The latest row of a source is its
state; nothing is updated or deleted. Merges and unmerges of a project run one at a time (a lock taken first in
their transaction), so the checks below (no self-merge, no cycle, no double merge) hold when the row is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select

from loopkit_core.model import rfc3339
from loopkit_core.store import dialect
from loopkit_core.store.schema import counters, issue_merges, issues

ACTIONS = ("merge", "unmerge")
MAX_TRAIL = 200  # audit rows answered per issue, newest kept
LOCK = "issue_merges"  # the counters row every merge and unmerge locks (and counts)


@dataclass(frozen=True)
class Refusal:
    """Why a merge or unmerge was not recorded: no_source, no_target, self, already_merged, cycle, not_merged."""

    reason: str
    fingerprint: str | None = None  # the issue the reason is about (the current target, the merged descendant)


def merge(
    engine: Engine, source_key: str, into_key: str, note: str | None, actor: str, now_ns: int
) -> dict[str, Any] | Refusal:
    """Fold one issue into another (into the root when `into` is itself merged); a Refusal when it cannot be."""
    with engine.begin() as conn:
        _lock(conn)
        source = _fingerprint(conn, source_key)
        if source is None:
            return Refusal("no_source")
        into = _fingerprint(conn, into_key)
        if into is None:
            return Refusal("no_target")
        if source == into:
            return Refusal("self")
        targets = _targets(conn)
        if source in targets:
            return Refusal("already_merged", targets[source])
        root = root_of(into, targets)  # Sentry's rule: merging into a merged issue merges into its parent
        if root == source:
            return Refusal("cycle", into)  # `into` is merged (through its chain) into the source
        return _append(conn, "merge", source, root, into, note, actor, now_ns)


def unmerge(engine: Engine, source_key: str, note: str | None, actor: str, now_ns: int) -> dict[str, Any] | Refusal:
    """Set a merged issue apart again (issues merged into it stay with it); a Refusal when it is not merged."""
    with engine.begin() as conn:
        _lock(conn)
        source = _fingerprint(conn, source_key)
        if source is None:
            return Refusal("no_source")
        target = _targets(conn).get(source)
        if target is None:
            return Refusal("not_merged")
        return _append(conn, "unmerge", source, target, None, note, actor, now_ns)


def targets(engine: Engine) -> dict[str, str]:
    """Source fingerprint -> the fingerprint it is merged into, for every issue merged now."""
    with engine.connect() as conn:
        return _targets(conn)


def root_of(fingerprint: str, merged: dict[str, str]) -> str:
    """The issue a fingerprint ends up in, following merges (the fingerprint itself when not merged)."""
    seen = {fingerprint}
    while fingerprint in merged:
        fingerprint = merged[fingerprint]
        if fingerprint in seen:  # cycles are refused when written; never loop on a hand-edited store
            break
        seen.add(fingerprint)
    return fingerprint


def members(root: str, merged: dict[str, str]) -> list[str]:
    """The fingerprints merged (directly or through a chain) into `root`, sorted; the root not included."""
    return sorted(f for f in merged if root_of(f, merged) == root and f != root)


def trail(engine: Engine, fingerprint: str) -> list[dict[str, Any]]:
    """The audit rows naming an issue as source or target, oldest first (the newest MAX_TRAIL)."""
    c = issue_merges.c
    stmt = (
        select(issue_merges)
        .where(or_(c.source == fingerprint, c.target == fingerprint, c.requested == fingerprint))
        .order_by(c.seq.desc())
        .limit(MAX_TRAIL)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [_public(r) for r in reversed(rows)]


def _lock(conn: Connection) -> None:
    # SQLite: the write lock before the first read (pysqlite would only begin at the INSERT). PostgreSQL: one counters
    # row every merge locks; READ COMMITTED then shows each statement what the previous holder committed.
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    conn.execute(dialect.insert(conn, counters).values(name=LOCK, value=0).on_conflict_do_nothing())
    conn.execute(select(counters.c.value).where(counters.c.name == LOCK).with_for_update()).scalar()
    conn.execute(counters.update().where(counters.c.name == LOCK).values(value=counters.c.value + 1))


def _fingerprint(conn: Connection, key: str) -> str | None:
    # An issue_id or a fingerprint, as find_issue reads them; only tracked issues of this project are found.
    column = issues.c.issue_id if key.startswith("iss_") else issues.c.fingerprint
    return conn.execute(select(issues.c.fingerprint).where(column == key)).scalar()


def _targets(conn: Connection) -> dict[str, str]:
    # The latest row per source decides (one grouped query): a merge is the state, an unmerge ends it.
    c = issue_merges.c
    latest = select(func.max(c.seq)).group_by(c.source)
    rows = conn.execute(select(c.source, c.target).where(c.seq.in_(latest), c.action == "merge")).all()
    return {source: target for source, target in rows}


def _append(
    conn: Connection,
    action: str,
    source: str,
    target: str,
    requested: str | None,
    note: str | None,
    actor: str,
    now_ns: int,
) -> dict[str, Any]:
    values = {
        "action": action,
        "source": source,
        "target": target,
        "requested": requested,
        "note": note,
        "actor": actor,
        "created_ns": now_ns,
    }
    conn.execute(issue_merges.insert().values(**values))
    return _public_values(values)


def _public(row: Any) -> dict[str, Any]:
    return _public_values(row._asdict())


def _public_values(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": values["action"],
        "source": values["source"],
        "target": values["target"],
        "requested": values["requested"],
        "note": values["note"],
        "actor": values["actor"],
        "created_at": rfc3339(values["created_ns"]),
    }
