"""Regression context: for an issue seen again after a fix held, the earlier packet, its approval, the held verdict,
the release it held in and the release it came back in, so that every handoff can say "this is a regression"."""

from __future__ import annotations

from collections import Counter
from typing import Any

from loopkit_core.evidence import quote, service_version
from loopkit_core.model import parse_rfc3339
from loopkit_core.store import approvals, verdicts
from loopkit_core.window import Window

EVIDENCE = 5  # new records named (the issue's evidence holds more)
RELEASE_SAMPLE = 50  # records read to name the release an operation ran in a window


def annotate(window: Window, issues: list[dict[str, Any]]) -> None:
    """Add `regression_context` to each issue whose fix held before and that occurs again after the held window."""
    held = verdicts.last_held(window.engine, [i["fingerprint"] for i in issues])
    for issue in issues:
        verdict = held.get(issue["fingerprint"])
        issue["regression_context"] = None
        if verdict is None:
            continue
        after = verdict.get("window_after") or {}
        try:
            held_start, held_end = parse_rfc3339(after["start"]), parse_rfc3339(after["end"])
        except (KeyError, TypeError, ValueError):
            continue
        fresh = Window(window.project_id, max(window.start_ns, held_end), window.end_ns, window.engine)
        new = fresh.sample(issue["selector"], EVIDENCE)
        if not new:
            continue  # every occurrence in this window predates the held verification: not a regression
        operation = {"name": new[0]["name"], "service": new[0]["service"]}
        trail = approvals.trail(window.engine, verdict["packet_id"])
        decision = trail[-1] if trail else None
        issue["regression_context"] = {
            "regressed": True,
            "earlier_packet_id": verdict["packet_id"],
            "earlier_approval": {
                "state": decision["decision"] if decision else "pending",
                "decided_by": decision["actor"] if decision else None,
                "decided_at": decision["decided_at"] if decision else None,
            },
            "held_verdict": {
                "verification_id": verdict.get("verification_id"),
                "verified_at": verdict.get("verified_at"),
                "window_after": after,
                "reason": verdict.get("reason"),
            },
            "held_release": _release(Window(window.project_id, held_start, held_end, window.engine), operation),
            "release_now": _most_common(service_version(r) for r in new),
            "new_evidence_ids": [r["record_id"] for r in new],
        }
        issue["regression_context"]["text"] = sentence(issue["regression_context"])


def _release(window: Window, operation: dict[str, Any]) -> str | None:
    return _most_common(service_version(r) for r in window.sample(operation, RELEASE_SAMPLE))


def _most_common(values: Any) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


def sentence(context: dict[str, Any]) -> str:
    """The regression in one line: the earlier packet, its approval, the held verdict and both releases."""
    approval = context["earlier_approval"]
    held = context["held_verdict"]
    return (
        f"REGRESSION: this issue came back after a fix that held. Earlier packet {context['earlier_packet_id']} "
        f"({approval['state']}"
        + (f" by {approval['decided_by']} at {approval['decided_at']}" if approval.get("decided_at") else "")
        + f"); verdict held in verification {held['verification_id']} at {held['verified_at']}"
        + (f" on release {quote(context['held_release'])}" if context.get("held_release") else "")
        + (f"; it recurs on release {quote(context['release_now'])}" if context.get("release_now") else "")
        + f"; new evidence: {', '.join(context['new_evidence_ids'])}."
    )
