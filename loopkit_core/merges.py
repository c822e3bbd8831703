"""Issues people merged: a diagnosis's issues folded into their targets, a packet's issues verified as one, and the
union of records a merged issue names (docs/grouping.md#merging-and-splitting-issues).

The diagnosers know nothing of merges: they report each fingerprint as before, and the folding happens after them.
Each tracked issue keeps its own selector in `issues`; a merged issue's selector is the union, made when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlalchemy import Engine, select

from loopkit_core.fingerprint_rules import rebase
from loopkit_core.model import Issue, rfc3339
from loopkit_core.selectors import union
from loopkit_core.store import issue_merges
from loopkit_core.store.grouping_rules import rules_in_force
from loopkit_core.store.schema import issues
from loopkit_core.window import Window

SEVERITY_ORDER = ("critical", "high", "medium", "low")


@dataclass(frozen=True)
class Folded:
    """One issue of a packet after merges: the issue, the fingerprints folded into it, and the issues found."""

    issue: Issue
    merged_from: list[str]  # fingerprints merged into this one (found in the window or not), sorted
    found: list[Issue]  # the diagnosers' issues behind it, each with its own fingerprint and selector


def fold(window: Window, found: list[Issue]) -> list[Folded]:
    """The diagnosers' issues with every merged issue folded into the issue it is merged into (its root)."""
    merged = issue_merges.targets(window.engine)
    groups: dict[str, list[Issue]] = {}
    for issue in found:
        groups.setdefault(issue_merges.root_of(issue.fingerprint, merged), []).append(issue)
    out = []
    for root, group in groups.items():
        names = issue_merges.members(root, merged)
        if not names and all(i.fingerprint == root for i in group):
            # No merge involved: each issue as its diagnoser made it (two diagnosers may share a fingerprint).
            out.extend(Folded(i, [], [i]) for i in group)
        else:
            out.append(_folded(window, root, names, group))
    return out


def _folded(window: Window, root: str, names: list[str], group: list[Issue]) -> Folded:
    tracked = _tracked(window.engine, [root, *names])
    by_fingerprint = {i.fingerprint: i for i in group}
    # What the issue is about (title, stats, plan) comes from the root's own issue when found, else the largest.
    base = by_fingerprint.get(root) or max(group, key=lambda i: (i.count, i.fingerprint))
    others = [i for i in group if i is not base]
    selectors = []  # the root's first, then the members' in fingerprint order
    count = sum(i.count for i in group)
    first = min(i.first_seen_ns for i in group)
    last = max(i.last_seen_ns for i in group)
    for fingerprint in [root, *names]:
        row = tracked.get(fingerprint)
        if fingerprint in by_fingerprint:
            selectors.append(by_fingerprint[fingerprint].selector)
        elif row is not None and row["records"] is not None:
            # A member no diagnoser reported this time: its records in the window still belong to the union (those
            # the rules in force leave it; a rule issue whose template no rule has any more names none).
            selectors.append(row["records"])
            n, low, high = window.summary(row["records"])
            if n:
                count, first, last = count + n, min(first, low), max(last, high)
    identity = tracked.get(root, {})
    issue = replace(
        base,
        fingerprint=root,
        title=base.title if base.fingerprint == root else identity.get("title", base.title),
        signal_type=base.signal_type if base.fingerprint == root else identity.get("signal_type", base.signal_type),
        diagnoser=base.diagnoser if base.fingerprint == root else identity.get("diagnoser", base.diagnoser),
        template=base.template if base.fingerprint == root else identity.get("template", base.template),
        selector=union(selectors),
        count=count,
        first_seen_ns=first,
        last_seen_ns=last,
        evidence=list(dict.fromkeys(_interleaved([i.evidence for i in [base, *others]]))),
        traces=list(dict.fromkeys(_interleaved([i.traces for i in [base, *others]]))),
        severity=min((i.severity for i in group), key=SEVERITY_ORDER.index),
        impact=sum(float(i.impact) for i in group),
    )
    merged_from = sorted({*names, *(i.fingerprint for i in group)} - {root})
    return Folded(issue, merged_from, group)


def _interleaved(lists: list[list[str]]) -> list[str]:
    # Evidence from every member, taken in turn, so a cut at MAX_EVIDENCE still shows each of them.
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def verified_issues(engine: Engine, packet_issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A packet's issues as a verification sees them now: those merged together verified as one.

    Each issue is widened to its merge group's records (the union of what the packet named and each member's own
    selector), never narrowed: a packet made while two issues were merged keeps their union after an unmerge.
    """
    merged = issue_merges.targets(engine)
    if not merged:
        return [{**i, "merged_from": list(i.get("merged_from") or [])} for i in packet_issues]
    groups: dict[str, list[dict[str, Any]]] = {}
    for issue in packet_issues:
        groups.setdefault(issue_merges.root_of(issue["fingerprint"], merged), []).append(issue)
    out = []
    for root, group in groups.items():
        names = issue_merges.members(root, merged)
        if not names and all(i["fingerprint"] == root for i in group):
            out.extend({**i, "merged_from": list(i.get("merged_from") or [])} for i in group)
            continue
        tracked = _tracked(engine, [root, *names])
        base = next((i for i in group if i["fingerprint"] == root), group[0])
        selectors = [i.get("selector") or {} for i in group]
        selectors += [tracked[f]["records"] for f in [root, *names] if tracked.get(f, {}).get("records") is not None]
        item = {**base, "fingerprint": root, "selector": union(selectors)}
        identity = tracked.get(root)
        if base["fingerprint"] != root and identity is not None:
            item.update(issue_id=identity["issue_id"], title=identity["title"], signal_type=identity["signal_type"])
        earlier = {f for i in group for f in i.get("merged_from") or []}
        item["merged_from"] = sorted({*names, *earlier, *(i["fingerprint"] for i in group)} - {root})
        out.append(item)
    return out


def issue_selector(engine: Engine, key: str) -> dict[str, Any] | None:
    """The records an issue names now (an issue_id or fingerprint): its own, and those of every issue merged into it."""
    row = _find(engine, key)
    if row is None:
        return None
    names = issue_merges.members(row["fingerprint"], issue_merges.targets(engine))
    if not names:
        return row["selector"]
    tracked = _tracked(engine, [row["fingerprint"], *names])
    found = [tracked[f]["records"] for f in [row["fingerprint"], *names] if tracked.get(f, {}).get("records")]
    # Every member's records may have gone to rule issues: then the merged issue names no record.
    return union(found) if found else {"kind": "record_ids", "record_ids": []}


def describe(engine: Engine, key: str) -> dict[str, Any] | None:
    """One tracked issue with its merge state and audit trail (an issue_id or fingerprint), or None."""
    row = _find(engine, key)
    if row is None:
        return None
    merged = issue_merges.targets(engine)
    fingerprint = row["fingerprint"]
    names = issue_merges.members(fingerprint, merged)
    root = issue_merges.root_of(fingerprint, merged)
    return {
        "issue_id": row["issue_id"],
        "fingerprint": fingerprint,
        "title": row["title"],
        "status": row["status"],
        "diagnoser": row["diagnoser"],
        "signal_type": row["signal_type"],
        "first_seen": rfc3339(row["first_seen_ns"]),
        "last_seen": rfc3339(row["last_seen_ns"]),
        "last_packet_id": row["last_packet_id"],
        "selector": row["selector"],
        "records_selector": issue_selector(engine, fingerprint),
        "merged_into": merged.get(fingerprint),
        "root": root,
        "merged_from": names,
        "merges": issue_merges.trail(engine, fingerprint),
    }


def _find(engine: Engine, key: str) -> dict[str, Any] | None:
    column = issues.c.issue_id if key.startswith("iss_") else issues.c.fingerprint
    with engine.connect() as conn:
        row = conn.execute(select(issues).where(column == key)).first()
    return None if row is None else {**row._asdict(), "selector": orjson.loads(row.selector)}


def _tracked(engine: Engine, fingerprints: list[str]) -> dict[str, dict[str, Any]]:
    # Each tracked issue's identity, own selector as stored, and `records`: what that selector names under the
    # fingerprint rules in force (rules changed after a merge move records to rule issues, never count them twice).
    with engine.connect() as conn:
        rows = conn.execute(select(issues).where(issues.c.fingerprint.in_(sorted(set(fingerprints))))).all()
        rules = rules_in_force(conn) if rows else []
    out = {}
    for r in rows:
        selector = orjson.loads(r.selector)
        out[r.fingerprint] = {**r._asdict(), "selector": selector, "records": rebase(r.fingerprint, selector, rules)}
    return out
