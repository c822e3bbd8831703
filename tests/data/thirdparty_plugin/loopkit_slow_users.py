"""loopkit-slow-users: operations that users give a thumbs-down, one LoopKit issue per operation.

Apps report what users think as plain records, e.g.
{"type": "user_signal", "name": "POST /checkout", "user_id": "u_42", "attributes": {"feedback": "thumbs_down"}}.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue
from loopkit_core.window import Window

NAME = "slow_users"
# The records this diagnoser is about. A selector is also what GET /v1/telemetry?issue= lists.
THUMBS_DOWN = {"type": "user_signal", "attributes": {"feedback": "thumbs_down"}}
EVIDENCE = 10


@hookimpl
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue]:
    """One issue per operation with at least `min_count` thumbs-down in the window."""
    issues = []
    for group in window.groups(THUMBS_DOWN, by="name"):  # counted in SQL, largest first
        if group.count < options["min_count"] or len(issues) == options["max_issues"]:
            break
        operation = group.value
        selector = {**THUMBS_DOWN, "name": operation}  # exactly this group's records
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
                selector=selector,
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
