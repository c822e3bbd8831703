"""The project's memory: issues verified, regressed, approved and in flight, and what a diagnosis saw first."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from loopkit_core.model import rfc3339
from loopkit_core.store.schema import issues, packets, verdicts

MAX_LISTED = 50  # issues (or packets) listed per kind; the totals count them all


def recall(engine: Engine, packet_id: str | None) -> dict[str, Any]:
    """Memory from issue tracking and verdicts; `new_issues` counts the issues `packet_id` saw first (None: newest)."""
    with engine.connect() as conn:
        if packet_id is None:
            packet_id = conn.execute(
                select(packets.c.packet_id).order_by(packets.c.created_ns.desc(), packets.c.packet_id.desc()).limit(1)
            ).scalar()
        new_issues = 0
        if packet_id is not None:
            new_issues = conn.execute(
                select(func.count()).select_from(issues).where(issues.c.first_packet_id == packet_id)
            ).scalar_one()
        verified = _issues(conn, "verified")
        regressed = _issues(conn, "regressed")
        in_flight, in_flight_truncated = _in_flight(conn)
    return {
        "packet_id": packet_id,
        "new_issues": new_issues,
        "verified": verified[0],
        "verified_total": verified[1],
        "regressed": regressed[0],
        "regressed_total": regressed[1],
        "in_flight": in_flight,
        "in_flight_truncated": in_flight_truncated,
    }


def _issues(conn: Any, status: str) -> tuple[list[dict[str, Any]], int]:
    total = conn.execute(select(func.count()).select_from(issues).where(issues.c.status == status)).scalar_one()
    rows = conn.execute(
        select(issues.c.fingerprint, issues.c.issue_id, issues.c.title, issues.c.last_seen_ns)
        .where(issues.c.status == status)
        .order_by(issues.c.last_seen_ns.desc(), issues.c.fingerprint)
        .limit(MAX_LISTED)
    ).all()
    latest = _latest_verdicts(conn, [r.fingerprint for r in rows])
    out = []
    for r in rows:
        item: dict[str, Any] = {
            "issue_id": r.issue_id,
            "fingerprint": r.fingerprint,
            "title": r.title,
            "last_seen": rfc3339(r.last_seen_ns),
        }
        verdict = latest.get(r.fingerprint)
        item["latest_verification"] = (
            {
                "verification_id": verdict.get("verification_id"),
                "packet_id": verdict.get("packet_id"),
                "verdict": verdict.get("verdict"),
                "verified_at": verdict.get("verified_at"),
                "evidence_ids": verdict.get("evidence_ids") or [],
            }
            if verdict
            else None
        )
        out.append(item)
    return out, total


def _latest_verdicts(conn: Any, fingerprints: list[str]) -> dict[str, dict[str, Any]]:
    if not fingerprints:
        return {}
    newest = (
        select(func.max(verdicts.c.seq))
        .where(verdicts.c.fingerprint.in_(fingerprints))
        .group_by(verdicts.c.fingerprint)
    )
    rows = conn.execute(
        select(verdicts.c.fingerprint, verdicts.c.packet_id, verdicts.c.body).where(verdicts.c.seq.in_(newest))
    ).all()
    return {r.fingerprint: {**orjson.loads(r.body), "packet_id": r.packet_id} for r in rows}


def _in_flight(conn: Any) -> tuple[list[dict[str, Any]], bool]:
    # Approved packets whose issues have no held verdict yet; bounded by scanning the newest approved packets only.
    rows = conn.execute(
        select(packets.c.packet_id, packets.c.body)
        .where(packets.c.status == "approved")
        .order_by(packets.c.created_ns.desc(), packets.c.packet_id.desc())
        .limit(MAX_LISTED)
    ).all()
    bodies = {r.packet_id: orjson.loads(r.body) for r in rows}
    fingerprints = {i["fingerprint"] for body in bodies.values() for i in body.get("issues", [])}
    held: set[str] = set()
    if fingerprints:
        held = set(
            conn.execute(
                select(verdicts.c.fingerprint)
                .where(verdicts.c.verdict == "held", verdicts.c.fingerprint.in_(fingerprints))
                .distinct()
            ).scalars()
        )
    status = dict(
        conn.execute(select(issues.c.fingerprint, issues.c.status).where(issues.c.fingerprint.in_(fingerprints))).all()
    )
    out = []
    for r in rows:
        body = bodies[r.packet_id]
        open_issues = [
            {
                "issue_id": i["issue_id"],
                "fingerprint": i["fingerprint"],
                "title": i["title"],
                "status": status.get(i["fingerprint"], i.get("status")),
            }
            for i in body.get("issues", [])
            if i["fingerprint"] not in held
        ]
        if open_issues:
            out.append({"packet_id": r.packet_id, "created_at": body.get("created_at"), "issues": open_issues})
    # Only the newest MAX_LISTED approved packets were looked at; say so when there are more.
    total = conn.execute(select(func.count()).select_from(packets).where(packets.c.status == "approved")).scalar_one()
    return out, total > MAX_LISTED
