"""The project's issues across packets: one row per fingerprint with its lifecycle and its count in each packet.

Bounded: the `limit` issues seen most recently, and their counts from the newest `packets` packets (a packet's
issues live in its stored JSON, so each of those bodies is read once).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, select

from loopkit_core.model import rfc3339
from loopkit_core.store import issue_merges
from loopkit_core.store.schema import issues, packets

COUNTS_PER_ISSUE = 20  # packets listed per issue, newest first


def issue_index(engine: Engine, limit: int, packet_limit: int) -> dict[str, Any]:
    """The `limit` most recently seen issues, newest first, with counts from the newest `packet_limit` packets."""
    with engine.connect() as conn:
        tracked = conn.execute(
            select(issues).order_by(issues.c.last_seen_ns.desc(), issues.c.fingerprint).limit(limit)
        ).all()
        bodies = conn.execute(
            select(packets.c.packet_id, packets.c.body)
            .order_by(packets.c.created_ns.desc(), packets.c.packet_id.desc())
            .limit(packet_limit)
        ).all()
    seen: dict[str, list[dict[str, Any]]] = {}
    latest: dict[str, dict[str, Any]] = {}
    for packet_id, body in bodies:
        packet = orjson.loads(body)
        for issue in packet.get("issues") or []:
            fingerprint = issue.get("fingerprint")
            if not isinstance(fingerprint, str):
                continue
            latest.setdefault(fingerprint, issue)  # packets come newest first
            counts = seen.setdefault(fingerprint, [])
            if len(counts) < COUNTS_PER_ISSUE:
                counts.append(
                    {"packet_id": packet_id, "created_at": packet.get("created_at"), "count": issue.get("count")}
                )
    merged = issue_merges.targets(engine)
    rows = []
    for row in tracked:
        last = latest.get(row.fingerprint, {})
        rows.append(
            {
                "issue_id": row.issue_id,
                "fingerprint": row.fingerprint,
                "title": row.title,
                "status": row.status,
                "diagnoser": row.diagnoser,
                "signal_type": row.signal_type,
                "severity": last.get("severity"),
                "first_seen": rfc3339(row.first_seen_ns),
                "last_seen": rfc3339(row.last_seen_ns),
                "last_packet_id": row.last_packet_id,
                "regressed": row.status == "regressed" or bool(last.get("regression")),
                "packets": seen.get(row.fingerprint, []),
                "impact": last.get("impact"),
                "merged_into": merged.get(row.fingerprint),  # a person merged it into that issue
                "merged_from": issue_merges.members(row.fingerprint, merged),
            }
        )
    return {"issues": rows, "packets_read": len(bodies)}
