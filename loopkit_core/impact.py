"""Who an issue hurt: distinct sessions and users, the negative user signals linked to it, and severity with them.

For each issue of a packet, `impact` is read from the window (never from the diagnoser's own claims):

- `sessions` and `users`: distinct `session_id` / `user_id` of the issue's records and of every record
  in their traces (a failing child span rarely carries `session.id`; its root does), plus those of the
  negative signals linked to it; at most `MAX_DISTINCT` of each are counted (`capped` says so);
- `negative_signals`: the negative user signals (`loopkit_core.feedback`) attributed to one of the
  issue's traces (a user-signal issue: its own signals), with up to 20 of their record IDs;
- `linked_issues`: other issues of the packet sharing those signals, e.g. the tool timeout the
  thumbs-down followed, and the user-signal issue the timeout caused (both directions).

Severity takes impact into account (docs/api.md#impact): an issue other than a user-signal issue
moves one level up (low -> medium -> high -> critical) when at least `SIGNAL_BUMP` (3) negative user
signals are linked to it, and one more when it reached at least `REACH_BUMP` (100) distinct users
(sessions when its records name no user). `severity_diagnoser` keeps the diagnoser's own level and
`severity_reason` says what moved it.
"""

from __future__ import annotations

from typing import Any

from loopkit_core.feedback import Signals
from loopkit_core.model import Issue
from loopkit_core.window import Window

MAX_DISTINCT = 10_000
MAX_IDS = 20
SIGNAL_BUMP = 3
REACH_BUMP = 100
LEVELS = ("low", "medium", "high", "critical")


def impacts(window: Window, issues: list[tuple[str, Issue]], signals: Signals) -> tuple[list[dict], dict[str, Any]]:
    """(impact of each (issue_id, issue), in order; the packet's impact summary)."""
    found = []
    all_sessions: set[str] = set()
    all_users: set[str] = set()
    linked_any: set[str] = set()
    # One read of the records of every issue's traces: issues share traces (a tool failure and the slow call above it).
    reached = window.reaches([issue.selector for _, issue in issues], MAX_DISTINCT)
    for (_, issue), (traces, sessions, users) in zip(issues, reached, strict=True):
        own = set(issue.selector.get("record_ids") or []) if issue.signal_type == "user_signal" else set()
        linked = [
            a
            for a in signals.negative
            if a.signal["record_id"] in own or (a.via is not None and a.root and a.root.get("trace_id") in traces)
        ]
        for a in linked:
            sessions.update(s for s in (a.session,) if s)
            users.update(u for u in (a.signal.get("user_id"), (a.root or {}).get("user_id")) if u)
        ids = sorted(a.signal["record_id"] for a in linked)
        linked_any.update(ids)
        all_sessions |= sessions
        all_users |= users
        found.append(
            {
                "sessions": min(len(sessions), MAX_DISTINCT),
                "users": min(len(users), MAX_DISTINCT),
                "negative_signals": len(ids),
                "negative_signal_ids": ids[:MAX_IDS],
                "capped": len(sessions) >= MAX_DISTINCT or len(users) >= MAX_DISTINCT,
                "linked_issues": [],
                "_ids": set(ids),
            }
        )
    _link(issues, found)
    summary = {
        "sessions": min(len(all_sessions), MAX_DISTINCT),
        "users": min(len(all_users), MAX_DISTINCT),
        "negative_signals": len(signals.negative),
        "negative_signals_linked": len(linked_any),
        "negative_signals_unattributed": signals.unattributed,
        "user_signals_read": signals.read,
        "user_signals_truncated": signals.truncated,
    }
    return found, summary


def _link(issues: list[tuple[str, Issue]], found: list[dict[str, Any]]) -> None:
    """Issues sharing negative signals name each other: a user-signal issue and what its users met."""
    for i, (iid, issue) in enumerate(issues):
        if issue.signal_type != "user_signal":
            continue
        for j, (other_id, other) in enumerate(issues):
            shared = found[i]["_ids"] & found[j]["_ids"]
            if i == j or not shared or other.signal_type == "user_signal":
                continue
            found[i]["linked_issues"].append(
                {"issue_id": other_id, "title": other.title, "negative_signals": len(shared)}
            )
            found[j]["linked_issues"].append({"issue_id": iid, "title": issue.title, "negative_signals": len(shared)})
    for impact in found:
        del impact["_ids"]
        impact["linked_issues"].sort(key=lambda link: (-link["negative_signals"], link["issue_id"]))


def severity(issue: Issue, impact: dict[str, Any]) -> tuple[str, str]:
    """The issue's severity with its impact taken into account, and why it moved ("" when it did not)."""
    level = LEVELS.index(issue.severity)
    reasons = []
    if issue.signal_type != "user_signal" and impact["negative_signals"] >= SIGNAL_BUMP:
        level += 1
        reasons.append(f"{impact['negative_signals']} negative user signals linked")
    reach = impact["users"] or impact["sessions"]
    if reach >= REACH_BUMP:
        level += 1
        reasons.append(f"{reach} {'users' if impact['users'] else 'sessions'} affected")
    moved = min(level, len(LEVELS) - 1)
    return LEVELS[moved], ("; ".join(reasons) if moved != LEVELS.index(issue.severity) else "")
