"""Verification: packet + a later window -> verifiers (one at a time) -> verdicts, stored per packet."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from loopkit_core import merges
from loopkit_core.model import VERDICTS, Verdict, parse_rfc3339, rfc3339
from loopkit_core.plugins import Plugins
from loopkit_core.releases import ReleaseGroup, counts_toward, newest
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
    release: str | None = None  # the release carrying the fix: only it (and later semantic versions) count after


def run(store: Store, plugins: Plugins, project_id: str, request: VerifyRequest, now_ns: int) -> dict[str, Any] | None:
    """Verdicts for every issue of a packet on the window after it; None when the packet does not exist."""
    engine = store.project(project_id)
    packet = get_packet(engine, request.packet_id)
    if packet is None:
        return None
    # Issues merged since (or while) the packet was made are verified as one: the union's rate, under the root.
    packet = {**packet, "issues": merges.verified_issues(engine, packet.get("issues") or [])}
    before = Window(project_id, _ns(packet, "start"), _ns(packet, "end"), engine)
    if request.since_minutes is not None:
        after_start = now_ns - int(request.since_minutes * 60e9)
    elif packet["approval"]["state"] == "approved":
        after_start = parse_rfc3339(packet["approval"]["decided_at"])  # the fix can only ship after approval
    else:
        after_start = packet["created_ns"]
    after = Window(project_id, max(after_start, before.end_ns), max(now_ns, before.end_ns), engine)
    release = request.release
    counted = after.of_releases(lambda r: counts_toward(r, release)) if release else after
    results, errors = _verdicts(plugins, packet, before, counted, after, release)
    releases_after = after.releases()
    seen_before = {g.release for g in before.releases()}
    new_releases = [g for g in releases_after if g.release is not None and g.release not in seen_before]
    release_aware = None
    if not release and new_releases:
        # Offered alongside, never stored: the window-based verdicts above stay the answer of record.
        candidate = newest(new_releases)
        assert candidate is not None
        narrowed = after.of_releases(lambda r: counts_toward(r, candidate))
        aware, aware_errors = _verdicts(plugins, packet, before, narrowed, after, candidate)
        errors.extend(aware_errors)
        release_aware = {"release": candidate, "verdicts": aware}
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
        "release": release,
        "releases_after": _traffic(releases_after, release),
        "new_releases": sorted(g.release for g in new_releases if g.release is not None),
        "release_aware": release_aware,
    }
    verdict_store.save(engine, verification)
    return verification


def _verdicts(
    plugins: Plugins, packet: dict[str, Any], before: Window, after: Window, whole: Window, release: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One verdict per issue on `after`; with `release`, the occurrences in `whole` from releases it left out."""
    results, errors = [], []
    for issue in packet["issues"]:
        verdict, verifier, failed = _verify(plugins, issue, before, after)
        errors.extend(failed)
        item = {
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
            "merged_from": issue.get("merged_from") or [],  # issues verified as part of this one
            # GenAI operations: session-level numbers of both windows; reported, never the verdict.
            "trajectory": trajectory(issue, before, after),
        }
        if release is not None:
            item["other_releases"] = _left_out(issue, whole, release)
            if item["other_releases"]["count"]:
                item["reason"] += (
                    f"; {item['other_releases']['count']} occurrence(s) from releases that do not carry the fix "
                    "were not counted"
                )
        results.append(item)
    return results, errors


def _left_out(issue: dict[str, Any], whole: Window, release: str) -> dict[str, Any]:
    # The issue's occurrences in the after-window from releases that do not carry the fix (old instances).
    others = [g for g in whole.releases(issue.get("selector") or {}) if not counts_toward(g.release, release)]
    return {
        "count": sum(g.count for g in others),
        "by_release": [{"release": g.release, "count": g.count} for g in others],
    }


def _traffic(groups: list[ReleaseGroup], release: str | None) -> list[dict[str, Any]]:
    # The after-window's records per release, and whether each counted toward the verdicts.
    return [
        {
            "release": g.release,
            "records": g.count,
            "counted": counts_toward(g.release, release) if release else True,
            "first_seen": rfc3339(g.first_ns),
            "last_seen": rfc3339(g.last_ns),
        }
        for g in groups
    ]


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
