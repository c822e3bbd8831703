"""User-signal diagnoser: operations whose negative user signals per call rose clearly above their own baseline.

Which signals are negative, and what each is attributed to (its own trace, else the latest root span
of its session within a bounded time before it, else nothing), is `loopkit_core.feedback` (documented
in docs/plugin_hooks.md#user_signals). The operation a signal rates is the root span it is attributed
to (name, service); unattributed signals are counted in every issue's stats but rate nothing.

Rules (an operation is flagged when every one holds; options["user_signals"] may override any):

- enough data: at least `min_signals` (5) negative signals on the operation in the window, and at
  least `min_baseline_calls` (30) calls of it in the baseline: the `baseline_windows` (6)
  window-lengths before the window (at most 7 days), else the window's own first half (the split
  is fixed in advance) tested against its second half, as the latency detector does; otherwise the
  operation is not judged (no baseline, no claim);
- a wide margin: the window's rate (negative signals per call) >= `min_ratio` (2) x the baseline's;
- significance: the exact conditional test of two rates (given x window and b baseline signals, x is
  Binomial(x + b, calls_w / (calls_w + calls_b)) if the rate did not change) with p <= alpha / m, a
  Bonferroni bound with family-wise alpha = 0.001 over the m operations judged. It is exact for a
  baseline with no signal at all, where a ratio alone would flag any first thumbs-down.

A call is a record of the operation that is not itself a user signal. Each issue names what the
signals' traces had in common: failures (errors, tool failures, by operation and exception type) and
slow calls (over their operation's baseline p95), e.g. "6 of 6 sessions with a negative signal had a
`execute_tool search_flights` TimeoutError", with evidence IDs of both signals and those records.
Severity follows the rate ratio (>= 10 critical, >= 5 high, else medium); impact is the number of
negative signals beyond what the baseline rate predicts.

Its issues are verified by `user_signals_verifier`.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from loopkit_core.evidence import quote, slug
from loopkit_core.feedback import Attributed, NegativeRule, Signals, attribute, load_context, split
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue, rfc3339
from loopkit_core.statistics import binomial_sf, percentile
from loopkit_core.window import Window

NAME = "user_signals"
DAY_NS = 86_400 * 10**9
EVIDENCE = 10
CO_OCCURRING = 5  # failures and slow calls named per issue


@dataclass(frozen=True)
class Rules:
    """The detector's thresholds (see the module docstring)."""

    baseline_windows: float = 6.0
    max_baseline_ns: int = 7 * DAY_NS
    min_signals: int = 5
    min_baseline_calls: int = 30
    min_ratio: float = 2.0
    family_alpha: float = 0.001
    slow_quantile: float = 0.95
    min_slow_baseline: int = 20


RULES = Rules()


@dataclass
class Rate:
    """Negative signals and calls of one operation in one window."""

    signals: int
    calls: int

    @property
    def value(self) -> float:
        """Negative signals per call."""
        return self.signals / self.calls if self.calls else 0.0


@hookimpl(trylast=True)
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue]:
    """User-signal issues: operations whose negative-signal rate per call rose clearly above their baseline."""
    own = dict(options.get(NAME) or {})
    rule = NegativeRule.from_options({**(options.get("negative_signals") or {}), **own.pop("rule", {})})
    rules = replace(RULES, **own)
    signals = attribute(window, rule, context=False)  # the trace context is read for flagged operations only
    by_operation: dict[tuple[str, str], list[Attributed]] = defaultdict(list)
    for a in signals.negative:
        if a.operation is not None:
            by_operation[a.operation].append(a)
    length = window.end_ns - window.start_ns
    preceding = window.preceding(min(int(length * rules.baseline_windows), rules.max_baseline_ns))
    judged = []
    read: dict[str, Signals] = {}  # the baseline's signals, attributed once for every operation

    def baseline_signals() -> Signals:
        if "preceding" not in read:
            read["preceding"] = attribute(preceding, rule, context=False)
        return read["preceding"]

    for op, found in sorted(by_operation.items()):
        if len(found) < rules.min_signals:
            continue
        comparison = _compare(window, preceding, op, signals, baseline_signals, rules)
        if comparison is not None:
            judged.append((op, found, *comparison))
    issues = []
    for op, found, now, before, source, baseline in judged:
        p_value = binomial_sf(now.signals, now.signals + before.signals, now.calls / (now.calls + before.calls))
        ratio = now.value / before.value if before.value else math.inf
        if ratio >= rules.min_ratio and p_value <= rules.family_alpha / len(judged):
            issues.append(
                _issue(window, baseline, op, found, now, before, source, p_value, len(judged), signals, rules, rule)
            )
    issues.sort(key=lambda i: (-i.impact, i.fingerprint))
    return issues[: options.get("max_issues", len(issues))]


def _compare(
    window: Window,
    preceding: Window,
    op: tuple[str, str],
    signals: Signals,
    baseline_signals: Callable[[], Signals],
    rules: Rules,
) -> tuple[Rate, Rate, str, Window] | None:
    """(window rate, baseline rate, baseline source, baseline window), or None without a defensible baseline."""
    before = rate(preceding, op, baseline_signals())
    if before.calls >= rules.min_baseline_calls:
        return rate(window, op, signals), before, "preceding", preceding
    middle = window.start_ns + (window.end_ns - window.start_ns) // 2
    first = Window(window.project_id, window.start_ns, middle, window.engine)
    second = Window(window.project_id, middle, window.end_ns, window.engine)
    early, late = split(signals, middle)
    before = rate(first, op, early)
    if before.calls < rules.min_baseline_calls:
        return None
    now = rate(second, op, late)
    return (now, before, "window_first_half", first) if now.signals >= rules.min_signals else None


def _calls(window: Window, op: tuple[str, str]) -> int:
    name, service = op
    everything = window.summary({"name": name, "service": service})[0]
    return everything - window.summary({"type": "user_signal", "name": name, "service": service})[0]


def rate(window: Window, op: tuple[str, str], signals: Signals) -> Rate:
    """An operation's negative signals (among `signals`, attributed) and calls in a window."""
    return Rate(sum(1 for a in signals.negative if a.operation == op), _calls(window, op))


def fingerprint(name: str, service: str) -> str:
    """A user-signal issue's identity: the same rated operation gives the same fingerprint in every run."""
    return hashlib.sha256(f"user_signals|{service}|{name}".encode()).hexdigest()[:16]


def _issue(
    window: Window,
    baseline: Window,
    op: tuple[str, str],
    found: list[Attributed],
    now: Rate,
    before: Rate,
    source: str,
    p_value: float,
    judged: int,
    signals: Signals,
    rules: Rules,
    rule: NegativeRule,
) -> Issue:
    name, service = op
    if source == "window_first_half":  # the issue's records are those of the tested half only
        middle = window.start_ns + (window.end_ns - window.start_ns) // 2
        found = [a for a in found if a.signal["timestamp_unix_nano"] >= middle]
    found.sort(key=lambda a: (-a.signal["timestamp_unix_nano"], a.signal["record_id"]))
    ids = sorted(a.signal["record_id"] for a in found)
    times = [a.signal["timestamp_unix_nano"] for a in found]
    ratio = now.value / before.value if before.value else math.inf
    expected = before.value * now.calls
    label = Counter(a.reason.partition("=")[2] for a in found).most_common(1)[0][0]
    load_context(window, rule, found)
    co = _co_occurring(baseline, found, rules)
    where = f" in {service}" if service and service != "unknown_service" else ""
    title = f"negative user signals on {name}{where}: {now.signals} in {now.calls} calls ({now.value:.1%})"
    title += f" vs {before.value:.1%} before"
    stats: dict[str, Any] = {
        "operation": name,
        "service": service,
        "label": label,
        "negative_signals": now.signals,
        "calls": now.calls,
        "rate": round(now.value, 6),
        "baseline_negative_signals": before.signals,
        "baseline_calls": before.calls,
        "baseline_rate": round(before.value, 6),
        "expected_negative_signals": round(expected, 2),
        "ratio": round(ratio, 2) if math.isfinite(ratio) else None,
        "p_value": float(f"{p_value:.3g}"),
        "alpha": float(f"{rules.family_alpha / judged:.3g}"),
        "operations_judged": judged,
        "baseline": {"source": source, "start": rfc3339(baseline.start_ns), "end": rfc3339(baseline.end_ns)},
        "attributed": dict(Counter(a.via for a in found)),
        "signals_read": signals.read,
        "signals_read_truncated": signals.truncated,
        "unattributed_negative_signals": signals.unattributed,
        "sessions_with_signal": len(_units(found)),
        "co_occurring": co,
        "rule": rule_json(rule),
    }
    evidence = [a.signal["record_id"] for a in found[:EVIDENCE]]
    evidence += [rid for c in co for rid in c["evidence"][:2]][:EVIDENCE]
    evidence = list(dict.fromkeys(evidence))  # a record can stand for two co-occurring failures: list it once
    traces = list(dict.fromkeys(a.root["trace_id"] for a in found if a.root and a.root.get("trace_id")))
    return Issue(
        fingerprint=fingerprint(name, service),
        title=title,
        signal_type="user_signal",
        count=len(ids),
        first_seen_ns=min(times),
        last_seen_ns=max(times),
        selector={"record_ids": ids},
        evidence=evidence,
        traces=traces,
        severity="critical" if ratio >= 10 else "high" if ratio >= 5 else "medium",
        impact=round(max(now.signals - expected, 0.0), 1),
        stats=stats,
        eval_candidate=eval_candidate(name, service),
        eval=_eval(name, service, evidence, traces, stats),
        patch_plan=_plan(name, service, co, stats),
        next_action=(
            f"Review the {min(len(ids), EVIDENCE)} negative signals and what their sessions met, approve or reject "
            "this packet; after the fix ships, run POST /v1/runs/verify: the negative signals per call must fall."
        ),
    )


def rule_json(rule: NegativeRule) -> dict[str, Any]:
    """The negative-signal rule as JSON, kept in the issue's stats so verification applies the same rule."""
    return {
        "score_keys": list(rule.score_keys),
        "max_score": rule.max_score,
        "label_keys": list(rule.label_keys),
        "labels": list(rule.labels),
        "lookback_seconds": rule.lookback_seconds,
    }


def eval_candidate(name: str, service: str) -> str:
    """A stable eval id for an operation's negative signals, e.g. `agent-post-chat-negative-signals-v1`."""
    parts = (name,) if service in ("", "unknown_service") else (service, name)
    return slug(*parts, limit=50) + "-negative-signals-v1"


def _eval(name: str, service: str, evidence: list[str], traces: list[str], stats: dict[str, Any]) -> dict[str, Any]:
    most = round(max(RULES.min_ratio * stats["baseline_rate"], 0.0), 6)
    return {
        "id": eval_candidate(name, service),
        "kind": "user_signals",
        "input": {"operation": name, "service": service, "record_ids": evidence, "trace_ids": traces[:EVIDENCE]},
        "expected": {
            "rate_below": most,
            "baseline_rate": stats["baseline_rate"],
            "now_rate": stats["rate"],
            "text": f"Users of {quote(name)} stop reacting badly: negative signals per call back under {most:.2%} "
            f"({RULES.min_ratio:g}x the baseline {stats['baseline_rate']:.2%}; now {stats['rate']:.2%}), and the "
            "sessions of the evidence no longer meet the failures named in the plan.",
        },
        "evidence_ids": evidence[:5],
    }


def _plan(name: str, service: str, co: list[dict[str, Any]], stats: dict[str, Any]) -> list[dict[str, Any]]:
    plan = [
        {
            "step": 1,
            "kind": "hypothesis",
            "text": f"Users of {quote(name)} in {quote(service)} sent {stats['negative_signals']} negative signals "
            f"({quote(stats['label'])}) in {stats['calls']} calls ({stats['rate']:.1%}) against "
            f"{stats['baseline_rate']:.1%} before (p={stats['p_value']:.2g}). "
            + (
                f"What their sessions met: {'; '.join(c['text'] for c in co[:3])}."
                if co
                else "Nothing in their traces failed or was slow: read the sessions to see what the users saw."
            ),
            "details": {"co_occurring": co[:3]},
        }
    ]
    if co:
        first = co[0]
        plan.append(
            {
                "step": 2,
                "kind": "where_to_look",
                "text": f"Start with {quote(first['operation'])}"
                + (f" ({quote(first['exception_type'])})" if first.get("exception_type") else "")
                + f": records {', '.join(first['evidence'][:3])}. Fix it where the user feels it (a retry, a "
                "fallback, an honest answer), not only in the logs.",
                "details": {"evidence": first["evidence"]},
            }
        )
    plan.append(
        {
            "step": len(plan) + 1,
            "kind": "check",
            "text": f"Add eval {quote(eval_candidate(name, service))} from the evidence sessions and make it pass; "
            "after the fix ships, run POST /v1/runs/verify with this packet_id.",
        }
    )
    return plan


def _units(found: list[Attributed]) -> set[str]:
    """What a user did once: the signal's session, else its trace."""
    return {a.session or (a.root or {}).get("trace_id") or a.signal["record_id"] for a in found}


def _why(co: list[dict[str, Any]], units: int) -> str:
    return co[0]["text"] if co else f"nothing failed or was slow in them; {units} session(s) to read"


def _co_occurring(baseline: Window, found: list[Attributed], rules: Rules) -> list[dict[str, Any]]:
    """Failures and slow calls in the signals' traces, by how many of the signals' sessions had them."""
    units = _units(found)
    hits: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    evidence: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    thresholds: dict[tuple[str, str], float | None] = {}
    for a in found:
        unit = a.session or (a.root or {}).get("trace_id") or a.signal["record_id"]
        for r in a.context:
            keys = []
            if r["type"] in ("error", "tool_failure"):
                keys.append((r["type"], r["name"], r["service"], r.get("exception_type") or ""))
            op = (r["name"], r["service"])
            if op not in thresholds:
                durations = baseline.durations(*op, limit=1000)
                enough = len(durations) >= rules.min_slow_baseline
                thresholds[op] = percentile(durations, rules.slow_quantile) if enough else None
            threshold = thresholds[op]
            if threshold is not None and threshold > 0 and r["duration_ms"] > threshold:
                keys.append(("slow", r["name"], r["service"], f"{threshold:.0f}"))
            for key in keys:
                hits[key].add(unit)
                if r["record_id"] not in evidence[key]:
                    evidence[key].append(r["record_id"])
    ranked = sorted(hits, key=lambda k: (-len(hits[k]), k[0] == "slow", k))[:CO_OCCURRING]
    out = []
    for kind, name, service, detail in ranked:
        what = (
            f"a {quote(name)} call slower than {detail} ms (its baseline p95)"
            if kind == "slow"
            else f"a {quote(name)} {detail or kind.replace('_', ' ')}"
        )
        out.append(
            {
                "kind": "slow_call" if kind == "slow" else kind,
                "operation": name,
                "service": service,
                "exception_type": detail if kind != "slow" else None,
                "threshold_ms": float(detail) if kind == "slow" else None,
                "sessions": len(hits[(kind, name, service, detail)]),
                "of": len(units),
                "text": f"{len(hits[(kind, name, service, detail)])} of {len(units)} sessions with a negative "
                f"signal had {what}",
                "evidence": evidence[(kind, name, service, detail)][:EVIDENCE],
            }
        )
    return out
