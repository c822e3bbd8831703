"""A packet's timeline: diagnosis, decisions, stages, eval runs and verifications, in time order (the packet page)."""

from __future__ import annotations

from typing import Any

from loopkit_core.model import parse_rfc3339


def timeline(packet: dict[str, Any], recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A packet's history in time order: diagnosed, each decision, each stage, each verification with verdicts."""
    events: list[tuple[str, int, dict[str, Any]]] = [("diagnosed", 0, {"at": packet.get("created_at")})]
    for d in packet.get("approval", {}).get("trail", []):
        events.append((d["decision"], 1, {"at": d["decided_at"], "actor": d["actor"], "note": d["note"]}))
    for s in recorded:
        details = {"at": s["created_at"], "stage_id": s["stage_id"], "issue_id": s["issue_id"], "url": s["url"]}
        events.append((s["stage"], 2, {**details, "note": s["note"], "actor": s["actor"]}))
    for r in packet.get("eval_runs", []):
        details = {k: r[k] for k in ("eval_run_id", "issue_id", "eval_candidate", "result", "passed", "failed")}
        details.update({k: r[k] for k in ("skipped", "commit", "version", "note", "actor")})
        events.append(("eval_run", 2, {"at": r["created_at"], **details}))
    for v in _verifications(packet):
        events.append(("verified", 3, v))
    # Stable: same-instant events keep decision < stage < verification, and their own order within a kind.
    ordered = sorted(enumerate(events), key=lambda e: (parse_rfc3339(e[1][2]["at"]), e[1][1], e[0]))
    return [{"event": kind, **details} for _, (kind, _, details) in ordered]


def _verifications(packet: dict[str, Any]) -> list[dict[str, Any]]:
    # Stored verdicts are one row per issue; group them back into verification runs, oldest first.
    runs: dict[str, dict[str, Any]] = {}
    for v in packet.get("verifications", []):
        run = runs.setdefault(
            v["verification_id"], {"at": v["verified_at"], "verification_id": v["verification_id"], "verdicts": []}
        )
        verdict = {"issue_id": v.get("issue_id"), "fingerprint": v["fingerprint"], "verdict": v["verdict"]}
        run["verdicts"].append(verdict)
    return list(runs.values())
