"""User-signal verifier: did the negative user signals per call fall after the fix? (user_signals issues)

It compares the after-window's negative signals per call of the rated operation (by the rule the
diagnosis used, kept in the issue's `stats.rule`) with the packet window's, given enough calls (the
window's rate predicts >= 5 signals, else insufficient_data): held when no negative signal came, or
the rate fell significantly (the exact conditional test the other way, p < 0.01) and back under
`min_ratio` x the baseline rate; improved when it fell significantly but not that far;
insufficient_data when it fell by fewer than 5 signals' worth of evidence; otherwise regressed (also
a new rise after an earlier held verdict).
"""

from __future__ import annotations

from typing import Any

from loopkit_core.feedback import NegativeRule, attribute
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Verdict
from loopkit_core.statistics import binomial_sf
from loopkit_core.window import Window
from loopkit_plugins.user_signals import EVIDENCE, NAME, RULES, rate

MIN_EXPECTED = 5.0
VERIFY_ALPHA = 0.01


@hookimpl(trylast=True)
def verify_issue(issue: dict[str, Any], before: Window, after: Window, previous: str) -> Verdict | None:
    """The negative-signal rate of a user-signal issue's operation, packet window vs after; None for others."""
    if issue.get("diagnoser") != NAME:
        return None
    stats = issue.get("stats") or {}
    op = (stats.get("operation"), stats.get("service"))
    rule = NegativeRule.from_options(stats.get("rule"))  # the rule the diagnosis used
    after_signals = attribute(after, rule, context=False)
    was, now = rate(before, op, attribute(before, rule, context=False)), rate(after, op, after_signals)
    baseline_rate = float(stats.get("baseline_rate") or 0.0)
    expected = was.value * now.calls
    numbers_b = {"negative_signals": was.signals, "calls": was.calls, "rate": round(was.value, 6)}
    numbers_a = {
        "negative_signals": now.signals,
        "calls": now.calls,
        "rate": round(now.value, 6),
        "expected_at_old_rate": round(expected, 2),
        "baseline_rate": baseline_rate,
    }
    total = was.signals + now.signals
    # Is the after-window's rate lower? The same exact conditional test, the other way round.
    p_lower = binomial_sf(was.signals, total, was.calls / (was.calls + now.calls)) if now.calls and was.calls else 1.0
    back = now.value < max(RULES.min_ratio * baseline_rate, 0.0) or now.signals == 0

    def verdict(name: str, reason: str) -> Verdict:
        ids = [a.signal["record_id"] for a in after_signals.negative if a.operation == op][:EVIDENCE]
        return Verdict(name, reason, numbers_b, numbers_a, ids if now.signals else [])

    rise = now.value >= RULES.min_ratio * baseline_rate and now.signals >= RULES.min_signals
    if previous == "verified" and rise:
        return verdict("regressed", f"the fix had held, and {now.signals} negative signal(s) per {now.calls} came back")
    if expected < MIN_EXPECTED:
        return verdict(
            "insufficient_data",
            f"{now.calls} calls since the fix: the old rate predicts only {expected:.1f} negative signal(s), "
            f"fewer than {MIN_EXPECTED:g}",
        )
    if now.signals == 0:
        return verdict("held", f"no negative signal in {now.calls} calls; the old rate predicts {expected:.1f}")
    if p_lower < VERIFY_ALPHA and back:
        return verdict(
            "held",
            f"{now.signals} negative signal(s) in {now.calls} calls against {expected:.1f} at the old rate "
            f"(p={p_lower:.2g}); back under {RULES.min_ratio:g}x the baseline rate",
        )
    if p_lower < VERIFY_ALPHA:
        return verdict("improved", f"{now.signals} negative signal(s) in {now.calls} calls against {expected:.1f}")
    if now.value < was.value and now.signals < MIN_EXPECTED:
        return verdict(
            "insufficient_data",
            f"{now.signals} negative signal(s) in {now.calls} calls: too few to tell a fall from chance",
        )
    return verdict(
        "regressed",
        f"{now.signals} negative signal(s) in {now.calls} calls: the rate ({now.value:.4f} per call) did not fall "
        f"significantly from {was.value:.4f}",
    )
