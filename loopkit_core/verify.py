"""Verification: packet + a later window -> verifiers (one at a time) -> verdicts, stored per packet."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from loopkit_core.model import VERDICTS, Verdict, parse_rfc3339, rfc3339
from loopkit_core.plugins import Plugins
from loopkit_core.store import verdicts as verdict_store
from loopkit_core.store.engines import Store
from loopkit_core.store.packets import get_packet
from loopkit_core.trajectory import trajectory
from loopkit_core.window import Window


@dataclass(frozen=True)
class VerifyRequest:
    """A validated POST /v1/runs/verify body."""

    packet_id: str
    since_minutes: float | None = None


def run(store: Store, plugins: Plugins, project_id: str, request: VerifyRequest, now_ns: int) -> dict[str, Any] | None:
    """Verdicts for every issue of a packet on the window after it; None when the packet does not exist."""
    engine = store.project(project_id)
    packet = get_packet(engine, request.packet_id)
    if packet is None:
        return None
    before = Window(project_id, _ns(packet, "start"), _ns(packet, "end"), engine)
    if request.since_minutes is not None:
        after_start = now_ns - int(request.since_minutes * 60e9)
    elif packet["approval"]["state"] == "approved":
        after_start = parse_rfc3339(packet["approval"]["decided_at"])  # the fix can only ship after approval
    else:
        after_start = packet["created_ns"]
    after = Window(project_id, max(after_start, before.end_ns), max(now_ns, before.end_ns), engine)
    results, errors = [], []
    for issue in packet["issues"]:
        verdict, verifier, failed = _verify(plugins, issue, before, after)
        errors.extend(failed)
        results.append(
            {
                "issue_id": issue["issue_id"],
                "fingerprint": issue["fingerprint"],
                "title": issue["title"],
                "signal_type": issue["signal_type"],
                "verdict": verdict.verdict,
                "reason": verdict.reason,
                "before": verdict.before,
                "after": verdict.after,
                "evidence": verdict.evidence,
                "evidence_ids": list(verdict.evidence),
                "verifier": verifier,
                # GenAI operations: session-level numbers of both windows; reported, never the verdict.
                "trajectory": trajectory(issue, before, after),
            }
        )
    verification = {
        "verification_id": "ver_" + secrets.token_hex(12),
        "packet_id": request.packet_id,
        "project_id": project_id,
        "created_at": rfc3339(now_ns),
        "created_ns": now_ns,
        "window_before": packet["window"],
        "window_after": {"start": rfc3339(after.start_ns), "end": rfc3339(after.end_ns)},
        "after_end_ns": after.end_ns,
        "verdicts": results,
        "verifier_errors": errors,
    }
    verdict_store.save(engine, verification)
    return verification


def _ns(packet: dict[str, Any], edge: str) -> int:
    exact = packet.get("window_ns")
    return int(exact[edge]) if exact else parse_rfc3339(packet["window"][edge])


def _verify(plugins: Plugins, issue: dict[str, Any], before: Window, after: Window) -> tuple[Verdict, str, list]:
    # previous: "verified" once a verdict was held, so any recurrence is a regression.
    previous = verdict_store.previous_status(before.engine, issue["fingerprint"])
    kwargs = {"issue": issue, "before": before, "after": after, "previous": previous}
    calls = plugins.call_each("verify_issue", kwargs, check=_checked_verdict, first_answer=True)
    errors = [error.as_json("verifier", issue_id=issue["issue_id"]) for error in calls.errors]
    if calls.answers:
        name, verdict = calls.answers[0]
        return verdict, name, errors
    reason = "no verifier answered for this kind of issue" + (" (a verifier failed)" if errors else "")
    return Verdict("insufficient_data", reason), "", errors


def _checked_verdict(answer: Any) -> Verdict | None:
    if answer is not None and (not isinstance(answer, Verdict) or answer.verdict not in VERDICTS):
        raise TypeError(f"verify_issue must return a Verdict with one of {', '.join(VERDICTS)}")
    return answer
