"""Eval runs an agent reported for a packet's issues (POST /v1/evals): append-only, per packet."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select

from loopkit_core.model import rfc3339
from loopkit_core.store.per_packet import rows_by_packet
from loopkit_core.store.schema import eval_runs, packets


@dataclass(frozen=True)
class EvalRun:
    """A validated eval run: which eval of which packet, its counts, and the code it ran on."""

    packet_id: str
    eval_candidate: str
    issue_id: str | None
    passed: int
    failed: int
    skipped: int
    commit: str | None
    version: str | None
    note: str | None


def record(engine: Engine, run: EvalRun, actor: str, now_ns: int) -> dict[str, Any] | str:
    """Append an eval run; "no_packet" or "no_eval" when the packet or its issue with that eval is missing."""
    with engine.begin() as conn:
        body = conn.execute(select(packets.c.body).where(packets.c.packet_id == run.packet_id)).scalar()
        if body is None:
            return "no_packet"
        matching = [
            i
            for i in orjson.loads(body).get("issues", [])
            if i.get("eval_candidate") == run.eval_candidate and run.issue_id in (None, i.get("issue_id"))
        ]
        if not matching:
            return "no_eval"
        values = {
            "eval_run_id": "evr_" + secrets.token_hex(12),
            "packet_id": run.packet_id,
            "issue_id": matching[0]["issue_id"],
            "eval_candidate": run.eval_candidate,
            "passed": run.passed,
            "failed": run.failed,
            "skipped": run.skipped,
            "commit_ref": run.commit,
            "version": run.version,
            "note": run.note,
            "actor": actor,
            "created_ns": now_ns,
        }
        conn.execute(eval_runs.insert().values(**values))
    return _shape(values)


def for_packets(engine: Engine, packet_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Every eval run of each packet, oldest first."""
    return rows_by_packet(engine, eval_runs, packet_ids, _shape)


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    passed, failed = row["passed"], row["failed"]
    return {
        "eval_run_id": row["eval_run_id"],
        "packet_id": row["packet_id"],
        "issue_id": row["issue_id"],
        "eval_candidate": row["eval_candidate"],
        # failed: any example failed; passed: at least one passed and none failed; skipped: nothing ran.
        "result": "failed" if failed else ("passed" if passed else "skipped"),
        "passed": passed,
        "failed": failed,
        "skipped": row["skipped"],
        "commit": row["commit_ref"],
        "version": row["version"],
        "note": row["note"],
        "actor": row["actor"],
        "created_at": rfc3339(row["created_ns"]),
    }
