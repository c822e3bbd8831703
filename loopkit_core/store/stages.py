"""Loop stages done outside LoopKit (issue opened, PR opened, merged, deployed): append-only, per packet."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, func, select, union

from loopkit_core.model import rfc3339
from loopkit_core.store import eval_runs
from loopkit_core.store.per_packet import rows_by_packet
from loopkit_core.store.schema import approvals, issues, packets, stages, verdicts

STAGES = ("issue_opened", "pr_opened", "merged", "deployed")


@dataclass(frozen=True)
class Refusal:
    """Why a stage was not recorded: `missing` (packet or issue), or the packet's decision state."""

    reason: str  # "no_packet" | "no_issue" | "pending" | "rejected"


def record(
    engine: Engine,
    packet_id: str,
    stage: str,
    url: str | None,
    note: str | None,
    issue_id: str | None,
    actor: str,
    now_ns: int,
) -> dict[str, Any] | Refusal:
    """Append a stage to an approved packet; a Refusal when the packet or issue is missing or not approved."""
    with engine.begin() as conn:
        # The decision read below must still hold when the row is inserted: on SQLite take the write lock first
        # (pysqlite would only begin at the INSERT); on PostgreSQL lock the packet's row, which a decision updates.
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        row = conn.execute(
            select(packets.c.body, packets.c.status).where(packets.c.packet_id == packet_id).with_for_update()
        ).first()
        if row is None:
            return Refusal("no_packet")
        if issue_id is not None:
            issue_ids = {i.get("issue_id") for i in orjson.loads(row.body).get("issues", [])}
            if issue_id not in issue_ids:
                return Refusal("no_issue")
        latest = conn.execute(
            select(approvals.c.decision)
            .where(approvals.c.packet_id == packet_id)
            .order_by(approvals.c.seq.desc())
            .limit(1)
        ).scalar()
        if latest is None:
            return Refusal("pending")
        if latest != "approved":
            return Refusal("rejected")
        values = {
            "stage_id": "stg_" + secrets.token_hex(12),
            "packet_id": packet_id,
            "issue_id": issue_id,
            "stage": stage,
            "url": url,
            "note": note,
            "actor": actor,
            "created_ns": now_ns,
        }
        conn.execute(stages.insert().values(**values))
    return _shape(values)


def for_packets(engine: Engine, packet_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Every stage of each packet, oldest first."""
    return rows_by_packet(engine, stages, packet_ids, _shape)


def loop_packet_ids(engine: Engine, limit: int) -> list[str]:
    """The newest packets that have a decision or a stage (the recorded loops), newest first."""
    touched = union(select(approvals.c.packet_id), select(stages.c.packet_id)).subquery()
    stmt = (
        select(packets.c.packet_id)
        .where(packets.c.packet_id.in_(select(touched.c.packet_id)))
        .order_by(packets.c.created_ns.desc(), packets.c.packet_id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def loops(engine: Engine, limit: int) -> list[dict[str, Any]]:
    """The newest recorded loops, whole: a fixed number of queries however many loops are listed."""
    ids = loop_packet_ids(engine, limit)
    if not ids:
        return []
    recorded = for_packets(engine, ids)
    evals = eval_runs.for_packets(engine, ids)
    with engine.connect() as conn:
        rows = {
            r.packet_id: r
            for r in conn.execute(
                select(packets.c.packet_id, packets.c.body, packets.c.status).where(packets.c.packet_id.in_(ids))
            )
        }
        decisions: dict[str, list[Any]] = {p: [] for p in ids}
        for d in conn.execute(select(approvals).where(approvals.c.packet_id.in_(ids)).order_by(approvals.c.seq)):
            decisions[d.packet_id].append(d)
        # The verdict columns are enough here: the verdict JSON (numbers, evidence) stays unread.
        runs: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in ids}
        columns = (verdicts.c.packet_id, verdicts.c.verification_id, verdicts.c.fingerprint, verdicts.c.verdict)
        for v in conn.execute(
            select(*columns, verdicts.c.created_ns).where(verdicts.c.packet_id.in_(ids)).order_by(verdicts.c.seq)
        ):
            run = runs[v.packet_id].setdefault(
                v.verification_id, {"at": rfc3339(v.created_ns), "verification_id": v.verification_id, "verdicts": []}
            )
            run["verdicts"].append({"fingerprint": v.fingerprint, "verdict": v.verdict})
        bodies = {p: orjson.loads(rows[p].body) for p in ids if p in rows}
        fingerprints = {i["fingerprint"] for b in bodies.values() for i in b.get("issues", [])}
        status = dict(
            conn.execute(
                select(issues.c.fingerprint, issues.c.status).where(issues.c.fingerprint.in_(fingerprints))
            ).all()
        )
    out = []
    for packet_id in ids:
        if packet_id not in bodies:  # (the project's store was emptied in between)
            continue
        body = bodies[packet_id]
        issue_ids = {i["fingerprint"]: i["issue_id"] for i in body.get("issues", [])}
        trail = [
            {"decision": d.decision, "note": d.note, "actor": d.actor, "decided_at": rfc3339(d.decided_ns)}
            for d in decisions[packet_id]
        ]
        latest = trail[-1] if trail else None
        verifications = list(runs[packet_id].values())
        for run in verifications:
            run["verdicts"] = [{"issue_id": issue_ids.get(v["fingerprint"]), **v} for v in run["verdicts"]]
        held = [r["at"] for r in verifications if any(v["verdict"] == "held" for v in r["verdicts"])]
        merged = [s["created_at"] for s in recorded[packet_id] if s["stage"] == "merged"]
        approved = [d["decided_at"] for d in trail if d["decision"] == "approved"]
        out.append(
            {
                "packet_id": packet_id,
                "status": rows[packet_id].status,
                "issues": [
                    {
                        "issue_id": i["issue_id"],
                        "fingerprint": i["fingerprint"],
                        "title": i.get("title"),
                        "status": status.get(i["fingerprint"], i.get("status")),
                    }
                    for i in body.get("issues", [])
                ],
                "diagnosed_at": body.get("created_at"),
                "approval": {
                    "state": latest["decision"] if latest else "pending",
                    "decided_by": latest["actor"] if latest else None,
                    "decided_at": latest["decided_at"] if latest else None,
                    "note": latest["note"] if latest else None,
                },
                "decisions": trail,
                # The first approval, while the packet stands approved (the funnel counts the same).
                "approved_at": approved[0] if latest and latest["decision"] == "approved" else None,
                "stages": [{k: v for k, v in s.items() if k != "created_ns"} for s in recorded[packet_id]],
                "merged_at": merged[0] if merged else None,
                "eval_runs": evals[packet_id],
                "verifications": verifications,
                "first_held_at": held[0] if held else None,
            }
        )
    return out


@dataclass(frozen=True)
class Milestones:
    """When each recorded loop reached each point (unix ns), one grouped query per point, for the funnel."""

    diagnosed: dict[str, int]  # packet_id -> created_ns, for every loop
    approved: dict[str, int]  # first approval, of packets whose current decision is approved
    merged: dict[str, int]  # first `merged` stage
    held: dict[str, int]  # first `held` verdict


def milestones(engine: Engine) -> Milestones:
    """Every recorded loop's milestones (a few integers per loop: loops need a person's decision, so they are few)."""
    touched = union(select(approvals.c.packet_id), select(stages.c.packet_id)).subquery()
    loops = packets.c.packet_id.in_(select(touched.c.packet_id))
    with engine.connect() as conn:
        diagnosed = dict(conn.execute(select(packets.c.packet_id, packets.c.created_ns).where(loops)).all())
        approved = dict(
            conn.execute(
                select(approvals.c.packet_id, func.min(approvals.c.decided_ns))
                .join(packets, packets.c.packet_id == approvals.c.packet_id)
                .where(approvals.c.decision == "approved", packets.c.status == "approved")
                .group_by(approvals.c.packet_id)
            ).all()
        )
        merged = dict(
            conn.execute(
                select(stages.c.packet_id, func.min(stages.c.created_ns))
                .where(stages.c.stage == "merged")
                .group_by(stages.c.packet_id)
            ).all()
        )
        held = dict(
            conn.execute(
                select(verdicts.c.packet_id, func.min(verdicts.c.created_ns))
                .where(verdicts.c.verdict == "held", verdicts.c.packet_id.in_(select(touched.c.packet_id)))
                .group_by(verdicts.c.packet_id)
            ).all()
        )
    return Milestones(diagnosed, approved, merged, held)


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage_id": row["stage_id"],
        "packet_id": row["packet_id"],
        "issue_id": row["issue_id"],
        "stage": row["stage"],
        "url": row["url"],
        "note": row["note"],
        "actor": row["actor"],
        "created_at": rfc3339(row["created_ns"]),
        "created_ns": row["created_ns"],
    }
