"""loopkit-slow-users: operations that users give a thumbs-down, one LoopKit issue per operation, and their verdicts.

Apps report what users think as plain records, e.g.
{"type": "user_signal", "name": "POST /checkout", "user_id": "u_42", "attributes": {"feedback": "thumbs_down"}}.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue, Verdict
from loopkit_core.selectors import Records
from loopkit_core.window import Window

NAME = "slow_users"
# The records this diagnoser is about. A selector is also what GET /v1/telemetry?issue= lists.
THUMBS_DOWN = Records("user_signal", attributes={"feedback": "thumbs_down"})
EVIDENCE = 10
MIN_FEEDBACK = 5  # after the fix, fewer pieces of feedback on the operation than this prove nothing


@hookimpl
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue]:
    """One issue per operation with at least `min_count` thumbs-down in the window."""
    issues = []
    for group in window.groups(THUMBS_DOWN, by="name"):  # counted in SQL, largest first
        if group.count < options["min_count"] or len(issues) == options["max_issues"]:
            break
        operation = group.value
        selector = Records("user_signal", name=operation, attributes={"feedback": "thumbs_down"})
        sample = window.sample(selector, limit=EVIDENCE)  # the newest, as evidence
        users = sorted({r["user_id"] for r in sample if r["user_id"]})
        slug = "-".join(re.findall(r"[a-z0-9]+", operation.lower()))  # "POST /checkout" -> "post-checkout"
        issues.append(
            Issue(
                # Stable across runs, and namespaced so it never collides with another plugin's.
                fingerprint=hashlib.blake2b(f"{NAME}/{operation}".encode(), digest_size=8).hexdigest(),
                title=f"Users give {operation} a thumbs-down ({group.count} in the window)",
                signal_type="user_signal",
                count=group.count,
                first_seen_ns=group.first_ns,
                last_seen_ns=group.last_ns,
                selector=selector,  # stored as {"kind": "records", "type": "user_signal", "name": ..., ...}
                evidence=[r["record_id"] for r in sample],
                traces=sorted({r["trace_id"] for r in sample if r["trace_id"]}),
                severity="high" if group.count >= 50 else "medium",
                impact=float(group.count),
                stats={"operation": operation, "thumbs_down": group.count, "users_in_evidence": len(users)},
                eval_candidate=f"{slug}-thumbs-down-v1",
                eval={
                    "input": {"operation": operation, "record_id": sample[0]["record_id"] if sample else None},
                    "expected": f"users of {operation} stop giving it a thumbs-down",
                    "evidence_ids": [r["record_id"] for r in sample[:5]],
                },
                patch_plan=[
                    {"step": 1, "kind": "hypothesis", "text": f"Something about {operation} disappoints users."},
                    {"step": 2, "kind": "where_to_look", "text": f"The traces of the evidence records of {operation}."},
                    {"step": 3, "kind": "change", "text": f"Fix what the traces show is slow or wrong in {operation}."},
                    {"step": 4, "kind": "check", "text": "After the fix ships, diagnose again: the issue is gone."},
                ],
                next_action="Read the evidence records, then approve or reject this packet.",
            )
        )
    return issues


@hookimpl
def verify_issue(issue: dict[str, Any], before: Window, after: Window, previous: str) -> Verdict | None:
    """This diagnoser's issues only: the share of thumbs-down among the operation's feedback, before vs after."""
    if issue.get("diagnoser") != NAME:
        return None  # another plugin's issue: let its verifier answer
    operation = issue["stats"]["operation"]
    feedback = Records("user_signal", name=operation)  # every piece of feedback on the operation
    down_b, all_b = before.summary(issue["selector"])[0], before.summary(feedback)[0]
    down_a, all_a = after.summary(issue["selector"])[0], after.summary(feedback)[0]
    numbers_b = {"thumbs_down": down_b, "feedback": all_b, "share": round(down_b / all_b, 4) if all_b else 0.0}
    numbers_a = {"thumbs_down": down_a, "feedback": all_a, "share": round(down_a / all_a, 4) if all_a else 0.0}
    evidence = [r["record_id"] for r in after.sample(issue["selector"], EVIDENCE)] if down_a else []
    if previous == "verified" and down_a:
        reason = f"the fix had held, and {down_a} thumbs-down came back"
        return Verdict("regressed", reason, numbers_b, numbers_a, evidence)
    if all_a < MIN_FEEDBACK:
        reason = f"{all_a} piece(s) of feedback since the fix, fewer than {MIN_FEEDBACK}: too few to tell"
        return Verdict("insufficient_data", reason, numbers_b, numbers_a, evidence)
    if down_a == 0:
        return Verdict("held", f"no thumbs-down in {all_a} pieces of feedback", numbers_b, numbers_a)
    if numbers_a["share"] <= numbers_b["share"] / 2:
        reason = f"the thumbs-down share fell from {numbers_b['share']:.0%} to {numbers_a['share']:.0%}"
        return Verdict("improved", reason, numbers_b, numbers_a, evidence)
    reason = f"the thumbs-down share is {numbers_a['share']:.0%}, against {numbers_b['share']:.0%} before"
    return Verdict("regressed", reason, numbers_b, numbers_a, evidence)
