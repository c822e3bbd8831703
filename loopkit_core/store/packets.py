"""Packets and the issues they track across runs: saving a diagnosis, listing and reading packets."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from loopkit_core.model import rfc3339
from loopkit_core.store import approvals, dialect, eval_runs, verdicts
from loopkit_core.store.schema import issue_signatures, issues, packets

MAX_LIST = 100


def save_diagnosis(engine: Engine, packet: dict[str, Any], tracked: list[dict[str, Any]]) -> None:
    """Store a packet and update its issues' tracking (first/last seen, selector) in one transaction.

    `tracked` rows carry each issue's fingerprint, issue_id, diagnoser, signal_type, title, template,
    selector, first_seen_ns and last_seen_ns; the packet's issues get their status and project-wide
    first/last seen. A row whose selector is None keeps the tracked issue's (a merged issue's root that no
    diagnoser reported this time); a packet issue with `merged_from` is first seen when the first of them was.
    """
    statuses: dict[str, tuple[str, int, int]] = {}  # fingerprint -> (status, first_seen_ns, last_seen_ns)
    with engine.begin() as conn:
        for row in tracked:
            existing = conn.execute(select(issues).where(issues.c.fingerprint == row["fingerprint"])).first()
            if row["selector"] is None:
                if existing is not None:
                    row = {**row, "selector": orjson.loads(existing.selector), "title": existing.title}
                    row["template"] = existing.template
                else:  # never tracked (merges name tracked issues): the packet's union is all there is
                    union = next(i["selector"] for i in packet["issues"] if i["fingerprint"] == row["fingerprint"])
                    row = {**row, "selector": union}
            selector = orjson.dumps(row["selector"]).decode()
            if existing is None:
                conn.execute(
                    issues.insert().values(
                        **{**row, "selector": selector},
                        status="new",
                        last_packet_id=packet["packet_id"],
                        first_packet_id=packet["packet_id"],
                    )
                )
                statuses[row["fingerprint"]] = ("new", row["first_seen_ns"], row["last_seen_ns"])
            else:
                first = min(existing.first_seen_ns, row["first_seen_ns"])
                last = max(existing.last_seen_ns, row["last_seen_ns"])
                status = existing.status
                # Sentry's rule: a fix that held and then sees the failure again has regressed.
                if status == "verified" and row["last_seen_ns"] >= (existing.verified_until_ns or 0):
                    status = "regressed"
                conn.execute(
                    issues.update()
                    .where(issues.c.fingerprint == row["fingerprint"])
                    .values(
                        title=row["title"],
                        template=row["template"],
                        selector=selector,
                        first_seen_ns=first,
                        last_seen_ns=last,
                        last_packet_id=packet["packet_id"],
                        status=status,
                    )
                )
                statuses[row["fingerprint"]] = (status, first, last)
            signatures = row["selector"].get("signatures") or []
            if signatures:
                stmt = dialect.insert(conn, issue_signatures)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["signature"], set_={"fingerprint": stmt.excluded.fingerprint}
                    ),
                    [{"signature": s, "fingerprint": row["fingerprint"]} for s in signatures],
                )
        for issue in packet["issues"]:
            # first_seen / last_seen are the project's, across every run, not only this window's.
            status, first, last = statuses[issue["fingerprint"]]
            if issue.get("merged_from"):
                group = [issue["fingerprint"], *issue["merged_from"]]
                earliest = conn.execute(select(func.min(issues.c.first_seen_ns)).where(issues.c.fingerprint.in_(group)))
                first = min(first, earliest.scalar() or first)
            issue.update(
                status=status, first_seen=rfc3339(first), last_seen=rfc3339(last), regression=status == "regressed"
            )
        conn.execute(
            packets.insert().values(
                packet_id=packet["packet_id"],
                created_ns=packet["created_ns"],
                status=packet["status"],
                body=orjson.dumps(packet).decode(),
            )
        )


def get_packet(engine: Engine, packet_id: str) -> dict[str, Any] | None:
    """One stored packet as it stands now (approval, issue lifecycle, verifications), or None."""
    with engine.connect() as conn:
        row = conn.execute(select(packets.c.body, packets.c.status).where(packets.c.packet_id == packet_id)).first()
    if row is None:
        return None
    packet = orjson.loads(row.body)
    packet["status"] = row.status
    trail = approvals.trail(engine, packet_id)
    latest = trail[-1] if trail else None
    packet["approval"] = {
        "state": latest["decision"] if latest else "pending",
        "decided_by": latest["actor"] if latest else None,
        "decided_at": latest["decided_at"] if latest else None,
        "note": latest["note"] if latest else None,
        "trail": [{k: v for k, v in d.items() if k != "decided_ns"} for d in trail],
    }
    current = verdicts.statuses(engine, [i["fingerprint"] for i in packet.get("issues", [])])
    for issue in packet.get("issues", []):
        issue["status"] = current.get(issue["fingerprint"], issue.get("status"))
    packet["verifications"] = verdicts.for_packet(engine, packet_id)
    packet["eval_runs"] = eval_runs.for_packets(engine, [packet_id])[packet_id]
    return packet


def list_packets(engine: Engine, limit: int = 20, before_ns: int | None = None) -> list[dict[str, Any]]:
    """The newest packets (summaries), optionally older than `before_ns`."""
    stmt = (
        select(packets.c.body, packets.c.status)
        .order_by(packets.c.created_ns.desc(), packets.c.packet_id.desc())
        .limit(limit)
    )
    if before_ns is not None:
        stmt = stmt.where(packets.c.created_ns < before_ns)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    found = [{**orjson.loads(r.body), "status": r.status} for r in rows]
    current = verdicts.statuses(engine, [i["fingerprint"] for p in found for i in p.get("issues", [])])
    for packet in found:
        for issue in packet.get("issues", []):
            issue["status"] = current.get(issue["fingerprint"], issue.get("status"))
    return [summary(p) for p in found]


def summary(packet: dict[str, Any]) -> dict[str, Any]:
    """A packet without its issues' evidence details, for listings."""
    keep = (
        "packet_id",
        "project_id",
        "status",
        "created_at",
        "since_minutes",
        "window",
        "telemetry_read",
        "failures",
        "approval_required",
    )
    out = {k: packet.get(k) for k in keep}
    out["issue_count"] = len(packet.get("issues", []))
    out["issues"] = [
        {k: i.get(k) for k in ("issue_id", "fingerprint", "title", "severity", "signal_type", "count", "status")}
        for i in packet.get("issues", [])
    ]
    return out


def find_issue(engine: Engine, key: str) -> dict[str, Any] | None:
    """A tracked issue by issue_id or fingerprint, with its selector decoded."""
    column = issues.c.issue_id if key.startswith("iss_") else issues.c.fingerprint
    with engine.connect() as conn:
        row = conn.execute(select(issues).where(column == key)).first()
    if row is None:
        return None
    return {**row._asdict(), "selector": orjson.loads(row.selector)}
