"""The append-only audit trail of approvals and rejections, and the lifecycle it moves."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, select

from loopkit_core.model import rfc3339
from loopkit_core.store.schema import approvals, issues, packets


def decide(engine: Engine, packet_id: str, decision: str, note: str, actor: str, now_ns: int) -> dict[str, Any] | None:
    """Record a decision and move the packet and its issues to it; None when the packet does not exist."""
    with engine.begin() as conn:
        body = conn.execute(select(packets.c.body).where(packets.c.packet_id == packet_id)).scalar()
        if body is None:
            return None
        conn.execute(
            approvals.insert().values(packet_id=packet_id, decision=decision, note=note, actor=actor, decided_ns=now_ns)
        )
        packet = orjson.loads(body)
        fingerprints = [issue["fingerprint"] for issue in packet.get("issues", [])]
        if fingerprints:
            # A decision moves issues that are still under review; a verdict (verified, regressed) is not undone.
            conn.execute(
                issues.update()
                .where(issues.c.fingerprint.in_(fingerprints), issues.c.status.in_(("new", "approved", "rejected")))
                .values(status=decision)
            )
        conn.execute(packets.update().where(packets.c.packet_id == packet_id).values(status=decision))
    return {"decision": decision, "note": note, "actor": actor, "decided_at": rfc3339(now_ns)}


def trail(engine: Engine, packet_id: str) -> list[dict[str, Any]]:
    """Every decision on a packet, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(approvals).where(approvals.c.packet_id == packet_id).order_by(approvals.c.seq)).all()
    return [
        {
            "decision": r.decision,
            "note": r.note,
            "actor": r.actor,
            "decided_at": rfc3339(r.decided_ns),
            "decided_ns": r.decided_ns,
        }
        for r in rows
    ]
