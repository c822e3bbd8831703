"""Latency verifier: is an operation back to its baseline after the fix? (latency-outlier issues)

A latency issue's records are the operation's calls at or over the threshold the detector derived
from the baseline. After the fix, the share of such slow calls is compared with two references: the
baseline's own share (what "fixed" looks like) and the packet window's share (what "broken" looked
like), with one-sided Poisson tests; the after-window's p95 is reported beside them.

- held: enough calls, and slow calls not significantly above the baseline share;
- improved: significantly fewer slow calls than in the packet's window, but still above baseline;
- regressed: not significantly better than the packet's window, or, after a held verdict, slow calls
  significantly above the baseline share again;
- insufficient_data: the old (broken) share would have produced fewer than MIN_EXPECTED slow calls.
"""

from __future__ import annotations

from typing import Any

from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Verdict
from loopkit_core.statistics import percentile, poisson_cdf, poisson_sf
from loopkit_core.window import Window

# One definition of "enough traffic" and "significant" for every verdict LoopKit gives.
from loopkit_plugins.rate_verifier import ALPHA, EVIDENCE, MIN_EXPECTED


@hookimpl(trylast=True)
def verify_issue(issue: dict[str, Any], before: Window, after: Window, previous: str) -> Verdict | None:
    """The latency verdict for an issue with a latency selector; None for other kinds."""
    selector = issue.get("selector") or {}
    if issue.get("signal_type") != "latency" or "min_duration_ms" not in selector:
        return None
    stats = issue.get("stats") or {}
    calls = {"name": selector["name"], "service": selector.get("service")}
    slow_b, calls_b = before.summary(selector)[0], before.summary(calls)[0]
    slow_a, calls_a = after.summary(selector)[0], after.summary(calls)[0]
    share_b = slow_b / calls_b if calls_b else 0.0
    window_calls = stats.get("window_calls") or calls_b
    baseline_share = (stats.get("expected_slow_count") or 0.0) / window_calls if window_calls else 0.0
    durations = after.durations(selector["name"], selector.get("service") or "")
    numbers_b = {
        "slow_calls": slow_b,
        "calls": calls_b,
        "slow_share": round(share_b, 6),
        "p95_ms": stats.get("window_p95_ms"),
        "baseline_p95_ms": stats.get("baseline_p95_ms"),
        "baseline_slow_share": round(baseline_share, 6),
        "threshold_ms": selector["min_duration_ms"],
    }
    numbers_a = {
        "slow_calls": slow_a,
        "calls": calls_a,
        "slow_share": round(slow_a / calls_a, 6) if calls_a else 0.0,
        # The detector's percentile, so "p95_ms" before and after are one statistic on two windows.
        "p95_ms": round(percentile(durations, 0.95), 3) if durations else None,
        "p50_ms": round(percentile(durations, 0.5), 3) if durations else None,
    }

    def verdict(name: str, reason: str) -> Verdict:
        evidence = [r["record_id"] for r in after.sample(selector, EVIDENCE, slowest=True)] if slow_a else []
        return Verdict(name, reason, numbers_b, numbers_a, evidence)

    expected_broken = share_b * calls_a
    expected_fixed = baseline_share * calls_a
    above_baseline = poisson_sf(slow_a, expected_fixed) < ALPHA
    if previous == "verified" and above_baseline:
        return verdict(
            "regressed",
            f"the fix had held; now {slow_a} of {calls_a} calls are slow again "
            f"(baseline predicts {expected_fixed:.1f})",
        )
    if expected_broken < MIN_EXPECTED:
        return verdict(
            "insufficient_data",
            f"{calls_a} calls since the fix: at the packet's slow share that is "
            f"{expected_broken:.1f} slow calls, fewer than {MIN_EXPECTED:g}",
        )
    if not above_baseline:
        return verdict(
            "held",
            f"{slow_a} of {calls_a} calls at or over {selector['min_duration_ms']} ms, in line "
            f"with the baseline ({expected_fixed:.1f} expected); the packet's share predicts "
            f"{expected_broken:.1f}",
        )
    if poisson_cdf(slow_a, expected_broken) < ALPHA:
        return verdict(
            "improved",
            f"{slow_a} slow calls of {calls_a}: fewer than the {expected_broken:.1f} the "
            f"packet's share predicts, but above the baseline's {expected_fixed:.1f}",
        )
    return verdict(
        "regressed",
        f"{slow_a} slow calls of {calls_a}: not fewer than the packet's share predicts ({expected_broken:.1f})",
    )
