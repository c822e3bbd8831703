"""Verification verdicts, stored per packet, and the issue lifecycle they move (verified, regressed)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from loopkit_core.store.schema import issues, verdicts

# A verdict moves an issue's lifecycle; improved and insufficient_data leave it where it was.
STATUS_AFTER = {"held": "verified", "regressed": "regressed"}


def save(engine: Engine, verification: dict[str, Any]) -> None:
    """Store one verification run's verdicts and move each issue's status."""
    with engine.begin() as conn:
        for item in verification["verdicts"]:
            conn.execute(
                verdicts.insert().values(
                    verification_id=verification["verification_id"],
                    packet_id=verification["packet_id"],
                    fingerprint=item["fingerprint"],
                    verdict=item["verdict"],
                    body=orjson.dumps(
                        {
                            **item,
                            "verification_id": verification["verification_id"],
                            "verified_at": verification["created_at"],
                            "window_after": verification["window_after"],
                        }
                    ).decode(),
                    created_ns=verification["created_ns"],
                )
            )
            status = STATUS_AFTER.get(item["verdict"])
            if status:
                values: dict[str, Any] = {"status": status}
                if status == "verified":
                    values["verified_until_ns"] = verification["after_end_ns"]
                conn.execute(issues.update().where(issues.c.fingerprint == item["fingerprint"]).values(**values))


def for_packet(engine: Engine, packet_id: str) -> list[dict[str, Any]]:
    """Every verdict given on a packet's issues, oldest first."""
    with engine.connect() as conn:
        bodies = conn.execute(
            select(verdicts.c.body).where(verdicts.c.packet_id == packet_id).order_by(verdicts.c.seq)
        ).scalars()
        return [orjson.loads(b) for b in bodies]


def statuses(engine: Engine, fingerprints: list[str]) -> dict[str, str]:
    """The current lifecycle status of each issue."""
    if not fingerprints:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(issues.c.fingerprint, issues.c.status).where(issues.c.fingerprint.in_(fingerprints)))
        return dict(rows.all())


def previous_status(engine: Engine, fingerprint: str) -> str:
    """The status verifiers get as `previous`: `verified` once any verdict on the issue was held.

    An issue that held stays under Sentry's rule (any later occurrence is a regression) even when a diagnosis
    or a decision has moved its status since (e.g. to `regressed` when the next diagnosis saw it again).
    """
    with engine.connect() as conn:
        row = conn.execute(
            select(issues.c.status, issues.c.verified_until_ns).where(issues.c.fingerprint == fingerprint)
        ).first()
    if row is None:
        return "new"
    return "verified" if row.verified_until_ns is not None else row.status


def last_held(engine: Engine, fingerprints: list[str]) -> dict[str, dict[str, Any]]:
    """The latest `held` verdict of each issue (with its packet ID), for the regression context of a packet."""
    if not fingerprints:
        return {}
    newest = (
        select(func.max(verdicts.c.seq))
        .where(verdicts.c.fingerprint.in_(fingerprints), verdicts.c.verdict == "held")
        .group_by(verdicts.c.fingerprint)
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(verdicts.c.fingerprint, verdicts.c.packet_id, verdicts.c.body).where(verdicts.c.seq.in_(newest))
        ).all()
    return {r.fingerprint: {**orjson.loads(r.body), "packet_id": r.packet_id} for r in rows}
