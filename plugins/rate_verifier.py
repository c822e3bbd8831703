"""Rate verifier: did a failure stop, fall, or come back after the fix? (signature-clusterer issues, by
signature or by fingerprint rule, and merged issues made of them: any-of selectors of those two kinds)

The fault's rate is its occurrences per call of the same operation (records with the issue's span
name in its service). The after-window has "enough traffic" when the old rate would have produced at
least MIN_EXPECTED occurrences in it; otherwise the verdict is insufficient_data, never held.

- held: enough traffic and no occurrence;
- improved: occurrences, but significantly fewer than the old rate predicts (one-sided Poisson test,
  p < ALPHA) — the rate fell clearly but did not stop;
- regressed: the rate did not fall significantly (the fault is back), or any occurrence after an
  earlier held verdict (Sentry's rule);
- insufficient_data: too little traffic to tell.
"""

from __future__ import annotations

from typing import Any

from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Verdict
from loopkit_core.selectors import AnyOf, RuleGroup, Signatures, parse_selector
from loopkit_core.statistics import poisson_cdf
from loopkit_core.window import Window

MIN_EXPECTED = 5.0
ALPHA = 0.01
EVIDENCE = 10


@hookimpl(trylast=True)
def verify_issue(issue: dict[str, Any], before: Window, after: Window, previous: str) -> Verdict | None:
    """The rate verdict for an issue grouped by signatures or by a fingerprint rule (or a merge of such issues);
    None for other kinds."""
    selector = issue.get("selector") or {}
    if not counts_failures(selector):
        return None
    stats = issue.get("stats") or {}
    traffic = {"name": stats.get("span_name") or stats.get("operation"), "service": stats.get("service")}
    count_b, traffic_b = before.summary(selector)[0], before.summary(traffic)[0]
    count_a, traffic_a = after.summary(selector)[0], after.summary(traffic)[0]
    rate_b = count_b / traffic_b if traffic_b else 0.0
    rate_a = count_a / traffic_a if traffic_a else 0.0
    expected = rate_b * traffic_a
    numbers_b = {"count": count_b, "calls": traffic_b, "rate": round(rate_b, 6)}
    numbers_a = {
        "count": count_a,
        "calls": traffic_a,
        "rate": round(rate_a, 6),
        "expected_at_old_rate": round(expected, 2),
    }

    def verdict(name: str, reason: str) -> Verdict:
        evidence = [r["record_id"] for r in after.sample(selector, EVIDENCE)] if count_a else []
        return Verdict(name, reason, numbers_b, numbers_a, evidence)

    if previous == "verified" and count_a:
        return verdict("regressed", f"the fix had held, and {count_a} occurrence(s) came back after it")
    if count_a == 0:
        if expected >= MIN_EXPECTED:
            return verdict("held", f"no occurrence in {traffic_a} calls; the old rate predicts {expected:.1f}")
        return verdict(
            "insufficient_data",
            f"{traffic_a} calls since the fix: the old rate predicts only "
            f"{expected:.1f} occurrence(s), fewer than {MIN_EXPECTED:g}, so silence proves nothing",
        )
    p_value = poisson_cdf(count_a, expected) if expected > 0 else 1.0
    if expected >= MIN_EXPECTED and p_value < ALPHA:
        return verdict(
            "improved",
            f"{count_a} occurrence(s) in {traffic_a} calls against {expected:.1f} expected "
            f"at the old rate (one-sided Poisson p={p_value:.2g}): fewer, but not gone",
        )
    if expected < MIN_EXPECTED and count_a < MIN_EXPECTED:
        return verdict(
            "insufficient_data",
            f"{count_a} occurrence(s) in {traffic_a} calls: too little traffic to tell a fall from chance",
        )
    return verdict(
        "regressed",
        f"{count_a} occurrence(s) in {traffic_a} calls: the rate "
        f"({rate_a:.4f} per call) did not fall significantly from {rate_b:.4f}",
    )


def counts_failures(selector: dict[str, Any]) -> bool:
    """Whether a selector names failures this verifier can count in both windows: signatures, a fingerprint rule's
    group, or the union of those (a rule issue merged with a signature issue); never latency or signal issues."""
    try:
        parsed = parse_selector(selector)
    except ValueError:
        return False
    parts = parsed.selectors if isinstance(parsed, AnyOf) else (parsed,)
    return all(isinstance(part, Signatures | RuleGroup) for part in parts)
