"""Latency outlier detector: operations whose latency in the window is far above their own baseline.

An operation is a record name within a service (`name`, `service`); every record type counts, since
every span has a duration and the issue's selector (`{"name", "service", "min_duration_ms"}`) has
no type either, so the statistics and the issue's records describe the same set.

Data. Per operation, the window's durations are compared with its baseline: the same operation's
records in the `baseline_windows` (6) window-lengths just before the window, at most 7 days.
Both sides come from `Window.durations`: exact up to `sample` (1,000) records, otherwise a
deterministic time-stratified sample of 1,000 read from the per-operation index, so the cost per
operation is bounded however large the window is (1,000 leaves 50 values above a p95: enough for
the threshold and the tests, and it halves the time of 2,000 on a 1M-record window). If the
baseline holds fewer than `min_baseline` (100) records, a baseline is still defensible when the
window itself has enough history: its first half (the split is fixed in advance, never searched
for) becomes the baseline and its second half is tested, with the same rules. Otherwise the
operation is not judged: no baseline, no claim.

Threshold and records. The threshold is the baseline's 95th percentile (linear interpolation,
rounded down to the microsecond): by construction about 5% of baseline calls reach it. The issue's
records are the operation's window records with `duration_ms >= threshold`; `count` is their exact
number, counted in SQL with the same selector `GET /v1/telemetry?issue=` uses.

Rules (an operation is flagged when either test passes, every part of it):

- enough data: at least `min_window` (30) window records and `min_baseline` (100) baseline
  records, so the baseline p95 has at least 5 records above it and the rank test's normal
  approximation is usable;
- shift (the whole distribution moved): window median >= `min_ratio` (1.5) x baseline median and
  at least `min_delta_ms` (1 ms) slower; a one-sided Mann-Whitney U test (normal approximation,
  tie and continuity corrected) with z >= z_crit; and the effect size A = P(window call slower
  than baseline call) >= `min_effect` (0.64, Vargha-Delaney's "medium"), which keeps a median
  that jumps between the modes of a bimodal operation from passing on a small real change;
- tail (a share of calls became very slow, the median need not move): window p95 >=
  `min_ratio` x baseline p95 and at least `min_delta_ms` slower; the share of window calls at or
  over the threshold >= `tail_factor` (3) x the baseline's share (about 15% against 5%); and an
  exact exceedance test (how many window values pass the baseline's k-th largest value; a
  negative hypergeometric law under "no change", see `loopkit_core.statistics`) with z >= z_crit. A normal
  two-proportion test is not used: with 30 calls and 5% expected it raised false alarms.

z_crit = Phi^-1(1 - alpha / m), a Bonferroni bound with family-wise alpha = 0.001 over the m = 2
tests of every operation judged in the run (4.56 for 200 operations), so steady operations raise a
false alarm in fewer than 1 run in 1,000 if calls were independent. They are not quite (traffic is
bursty, the sample is stratified), which is why significance is never enough alone: the ratio and
share floors above are what make "slower" mean "slower by a wide margin", and a long but unchanged
tail passes neither (its median and p95 stay put and about 5% of calls reach the baseline p95, as
before). Simulated at the smallest sizes allowed (100 vs 30 calls, lognormal sigma up to 1, 1-10%
of calls 5-30x slower), 160,000 steady operations gave no false alarm; 2x regressions are always caught
at sigma 0.6 with 100 window calls against 300, and with fewer calls or more noise only larger ones are.

Severity follows the larger of the p50 and p95 ratios (>= 5 critical, >= 2.5 high, >= 1.5 medium);
impact is the number of slow calls beyond what the baseline rate predicts. The patch plan quotes
only the evidence: the slowest records' attributes, their longest child spans (compared with the
same child in baseline traces) and any `service.version` or model that differs from the baseline's.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Any

from loopkit_core.evidence import excerpt, quote, service_version, slug
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue, rfc3339
from loopkit_core.statistics import (
    bonferroni_z,
    exceedance_test,
    mad,
    mann_whitney,
    median,
    percentile,
    share_at_least,
    z_of,
)
from loopkit_core.window import Operation, Window

NAME = "latency_outliers"
EVIDENCE = 10
# Calls a latency eval measures its p95 over: with 100 the p95 of a healthy build stays under 1.5 x the baseline
# p95 in all but about 1 in 1,000 draws (lognormal sigma 0.5; tests/test_latency_outliers.py).
EVAL_MIN_CALLS = 100
DAY_NS = 86_400 * 10**9
# Attributes that say where a slow call spent its time (OpenTelemetry semantic conventions).
WHERE_KEYS = (
    "http.route",
    "http.request.method",
    "url.path",
    "rpc.service",
    "rpc.method",
    "db.system",
    "db.operation.name",
    "db.query.text",
    "db.statement",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.tool.name",
    "server.address",
    "peer.service",
    "messaging.destination.name",
    "code.function",
)
# Attributes whose value in slow calls, if never seen in baseline calls, is a change worth naming.
# (Not per-request values such as a query text with literals, nor per-replica ones such as a host.)
CHANGE_KEYS = ("gen_ai.request.model", "db.system", "server.address", "peer.service")


@dataclass(frozen=True)
class Rules:
    """The detector's thresholds (see the module docstring); options["latency_outliers"] may override any."""

    baseline_windows: float = 6.0
    max_baseline_ns: int = 7 * DAY_NS
    sample: int = 1000
    min_window: int = 30
    min_baseline: int = 100
    threshold_quantile: float = 0.95
    min_ratio: float = 1.5
    min_delta_ms: float = 1.0
    min_effect: float = 0.64
    tail_factor: float = 3.0
    family_alpha: float = 0.001


@dataclass
class Comparison:
    """One operation's window durations against its baseline durations (both ascending)."""

    operation: Operation
    baseline: Window  # where the baseline came from: the preceding range, or the window's first half
    source: str  # "preceding" | "window_first_half"
    window_ms: list[float]
    baseline_ms: list[float]
    threshold_ms: float  # what separates slow calls: the baseline's p95, to the microsecond


RULES = Rules()


@hookimpl
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue]:
    """Latency issues: operations slower in the window than in their baseline by a wide, significant margin."""
    rules = replace(RULES, **(options.get(NAME) or {}))
    length = window.end_ns - window.start_ns
    baseline = window.preceding(min(int(length * rules.baseline_windows), rules.max_baseline_ns))
    notes = options.get("notes")
    notes = notes if isinstance(notes, list) else []
    comparisons = []
    unjudged: list[tuple[int, str, str, str]] = []  # (calls, operation, reason, needs)
    for op in window.operations():
        if op.count < rules.min_window:
            reason = f"{op.count} call(s) in the window, {rules.min_window} needed"
            needs = f"{rules.min_window - op.count} more call(s) of {quote(op.name)} in the window"
            unjudged.append((op.count, op.name, reason, needs))
            continue
        c = _compare(window, baseline, op, rules)
        if isinstance(c, Comparison):
            comparisons.append(c)
        else:
            unjudged.append((op.count, op.name, c[0], c[1]))
    # The busiest operations first: their silence is the one a reader wonders about.
    for _, name, reason, needs in sorted(unjudged, key=lambda u: (-u[0], u[1])):
        notes.append({"where": name, "reason": f"not judged: {reason}", "needs": needs})
    z_crit = bonferroni_z(rules.family_alpha, 2 * max(len(comparisons), 1))  # two tests per operation
    found: list[tuple[Issue, Comparison]] = []
    for comparison in comparisons:
        verdict = judge(comparison, rules, z_crit)
        if verdict is not None:
            issue = _issue(window, comparison, verdict, z_crit, len(comparisons), rules)
            if issue.count >= options.get("min_count", 1):
                found.append((issue, comparison))
    # Evidence costs a few queries per issue: only build it for the issues the packet can keep.
    if comparisons and len(found) < len(comparisons):
        notes.append(
            {
                "where": None,
                "reason": f"{len(comparisons) - len(found)} of {len(comparisons)} operation(s) judged against their "
                f"baseline were not slower by the rules (median or p95 {rules.min_ratio:g}x and significant at "
                f"z >= {z_crit:.2f})",
            }
        )
    found.sort(key=lambda ic: (-ic[0].impact, ic[0].fingerprint))
    found = found[: options.get("max_issues", len(found))]
    for issue, comparison in found:
        _add_evidence(window, comparison.baseline, issue)
    return [issue for issue, _ in found]


def compare(window: Window, baseline: Window, op: Operation, rules: Rules) -> Comparison | None:
    """The operation's window and baseline durations, or None when no defensible baseline exists.

    `op` is one of window.operations(): its count is the window's, and is not counted again.
    """
    found = _compare(window, baseline, op, rules)
    return found if isinstance(found, Comparison) else None


def _compare(window: Window, baseline: Window, op: Operation, rules: Rules) -> Comparison | tuple[str, str]:
    """The comparison, or (why there is none, what more data would give one)."""
    base = baseline.durations(op.name, op.service, rules.sample)
    if len(base) >= rules.min_baseline:
        # op.count is this window's count of the operation (operations() read it): no second count.
        later = window.durations(op.name, op.service, rules.sample, count=op.count)
        return Comparison(op, baseline, "preceding", later, base, _threshold(base, rules))
    # Too little history before the window: its own first half is the baseline, if that is enough.
    middle = window.start_ns + (window.end_ns - window.start_ns) // 2
    first, second = window.part(window.start_ns, middle), window.part(middle, window.end_ns)
    before = len(base)
    base = first.durations(op.name, op.service, rules.sample)
    needs = (
        f"{rules.min_baseline - before} more call(s) of {quote(op.name)} in the {_minutes(baseline)} before the "
        f"window, or {rules.min_baseline} in the window's first half"
    )
    if len(base) < rules.min_baseline:
        return (
            f"{before} baseline call(s) in the {_minutes(baseline)} before the window and {len(base)} in the "
            f"window's first half, {rules.min_baseline} needed",
            needs,
        )
    later = second.durations(op.name, op.service, rules.sample)
    if len(later) < rules.min_window:
        return (
            f"{before} baseline call(s) before the window; {len(base)} in the window's first half (the stand-in "
            f"baseline) but {len(later)} in its second half, {rules.min_window} needed",
            f"{rules.min_window - len(later)} more call(s) of {quote(op.name)} in the window's second half",
        )
    return Comparison(op, first, "window_first_half", later, base, _threshold(base, rules))


def _minutes(window: Window) -> str:
    minutes = (window.end_ns - window.start_ns) / 60e9
    return f"{minutes:.0f} min" if minutes < 600 else f"{minutes / 60:.0f} h"


def _threshold(baseline_ms: list[float], rules: Rules) -> float:
    # Rounded down to the microsecond, so at least one baseline value always reaches it.
    return math.floor(percentile(baseline_ms, rules.threshold_quantile) * 1000) / 1000


@dataclass(frozen=True)
class Verdict:
    """Why an operation was flagged, with the numbers behind it."""

    rules: tuple[str, ...]  # "shift", "tail"
    stats: dict[str, Any]


def judge(c: Comparison, rules: Rules, z_crit: float) -> Verdict | None:
    """Apply the shift and tail rules of the module docstring; None when neither passes."""
    w, b = c.window_ms, c.baseline_ms
    threshold = c.threshold_ms
    if threshold <= 0:  # instant records (events without a duration): there is no latency to judge
        return None
    w50, w95, b50, b95 = median(w), percentile(w, 0.95), median(b), percentile(b, 0.95)
    share_w, share_b = share_at_least(w, threshold), share_at_least(b, threshold)
    fired = []
    stats: dict[str, Any] = {}
    if _ratio(w50, b50) >= rules.min_ratio and w50 - b50 >= rules.min_delta_ms:
        z, effect = mann_whitney(w, b)
        stats.update(mann_whitney_z=round(z, 2), effect_size_a=round(effect, 3))
        if z >= z_crit and effect >= rules.min_effect:
            fired.append("shift")
    if (
        _ratio(w95, b95) >= rules.min_ratio
        and w95 - b95 >= rules.min_delta_ms
        and share_w >= rules.tail_factor * share_b
    ):
        z = z_of(exceedance_test(w, b, threshold))
        stats["tail_z"] = round(z, 2)
        if z >= z_crit:
            fired.append("tail")
    return Verdict(tuple(fired), stats) if fired else None


def _issue(window: Window, c: Comparison, verdict: Verdict, z_crit: float, judged: int, rules: Rules) -> Issue:
    op, w, b = c.operation, c.window_ms, c.baseline_ms
    threshold = c.threshold_ms
    selector = {"name": op.name, "service": op.service, "min_duration_ms": threshold}
    count, first_ns, last_ns = window.summary(selector)
    baseline_calls = c.baseline.summary({"name": op.name, "service": op.service})[0]
    share_b = share_at_least(b, threshold)
    expected = share_b * op.count
    w50, w95, w99 = median(w), percentile(w, 0.95), percentile(w, 0.99)
    b50, b95, b99 = median(b), percentile(b, 0.95), percentile(b, 0.99)
    factor = max(_ratio(w50, b50), _ratio(w95, b95))
    stats: dict[str, Any] = {
        "operation": op.name,
        "service": op.service,
        "rule": "+".join(verdict.rules),
        "threshold_ms": threshold,
        "threshold_rule": "baseline p95",
        "min_ratio": rules.min_ratio,
        "window_calls": op.count,
        "baseline_calls": baseline_calls,
        "slow_count": count,
        "expected_slow_count": round(expected, 1),
        "window_p50_ms": _ms(w50),
        "window_p95_ms": _ms(w95),
        "window_p99_ms": _ms(w99),
        "baseline_p50_ms": _ms(b50),
        "baseline_p95_ms": _ms(b95),
        "baseline_p99_ms": _ms(b99),
        "baseline_mad_ms": _ms(mad(b)),
        "ratio": _finite(_ratio(w50, b50)),  # how many times slower the typical (median) call is
        "ratio_p95": _finite(_ratio(w95, b95)),
        "slow_share_window": round(share_at_least(w, threshold), 4),
        "slow_share_baseline": round(share_b, 4),
        **verdict.stats,
        "z_critical": round(z_crit, 2),
        "operations_judged": judged,
        "window_sampled": len(w),
        "baseline_sampled": len(b),
        "baseline": {"source": c.source, "start": rfc3339(c.baseline.start_ns), "end": rfc3339(c.baseline.end_ns)},
    }
    where = f" in {op.service}" if op.service and op.service != "unknown_service" else ""
    return Issue(
        fingerprint=fingerprint(op.name, op.service),
        title=f"latency regression on {op.name}{where} (p95 {_fmt(w95)} ms vs {_fmt(b95)} ms)",
        signal_type="latency",
        count=count,
        first_seen_ns=first_ns,
        last_seen_ns=last_ns,
        selector=selector,
        severity="critical" if factor >= 5 else "high" if factor >= 2.5 else "medium" if factor >= 1.5 else "low",
        impact=round(max(count - expected, 0.0), 1),
        stats=stats,
        eval_candidate=eval_candidate(op.name, op.service),
    )


def fingerprint(name: str, service: str) -> str:
    """A latency issue's identity: the same operation gives the same fingerprint in every run."""
    return hashlib.sha256(f"latency|{service}|{name}".encode()).hexdigest()[:16]


def eval_candidate(name: str, service: str) -> str:
    """A stable eval id for an operation's latency, e.g. `shop-get-checkout-latency-v1`."""
    parts = (name,) if service in ("", "unknown_service") else (service, name)
    return slug(*parts, limit=60) + "-latency-v1"


# --- formatting ----------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.inf if a > 0 else 1.0


def _finite(x: float) -> float | None:
    return round(x, 2) if math.isfinite(x) else None


def _ms(x: float) -> float:
    return round(x, 3)


def _fmt(ms: float) -> str:
    """Milliseconds for a title: whole above 100, else three significant digits."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


# --- evidence, eval and patch plan (quoted from records, never invented) ---------------------------


def _add_evidence(window: Window, baseline: Window, issue: Issue) -> None:
    stats = issue.stats
    name, service = stats["operation"], stats["service"]
    slow = window.sample(issue.selector, EVIDENCE, slowest=True)
    issue.evidence = [r["record_id"] for r in slow]
    issue.traces = list(dict.fromkeys(r["trace_id"] for r in slow if r["trace_id"]))
    stats["evidence"] = f"the {len(slow)} slowest of {issue.count} records at or over {stats['threshold_ms']} ms"
    usual = baseline.sample({"name": name, "service": service}, EVIDENCE)
    where = _where(slow)
    changes = _changes(slow, usual)
    child = _slowest_child(window, baseline, slow, usual)

    min_ratio = stats["min_ratio"]
    bound = _ms(stats["baseline_p95_ms"] * min_ratio)
    issue.eval = {
        "id": issue.eval_candidate,
        "kind": "latency",
        "input": {
            "operation": name,
            "service": service,
            "record_ids": issue.evidence,
            "trace_ids": issue.traces,
            "attributes": where,
        },
        "expected": {
            # The baseline's own p95 is a coin flip for a healthy build (a sample's p95 lands above it half the
            # time); the bound is the detector's own floor: a p95 the detector would not call slower.
            "p95_ms_at_most": bound,
            "tolerance": {"factor": min_ratio, "rule": "the detector's min_ratio over the baseline p95"},
            "min_calls": EVAL_MIN_CALLS,
            "baseline_p95_ms": stats["baseline_p95_ms"],
            "baseline_p50_ms": stats["baseline_p50_ms"],
            "now_p95_ms": stats["window_p95_ms"],
            "text": f"{quote(name)} answers like its baseline again: p95 over at least {EVAL_MIN_CALLS} calls at most "
            f"{bound} ms (the baseline p95 {stats['baseline_p95_ms']} ms x {min_ratio:g}, the detector's own margin; "
            f"now {stats['window_p95_ms']} ms), median back near {stats['baseline_p50_ms']} ms.",
        },
        "evidence_ids": issue.evidence[:5],
    }
    plan = [
        {
            "step": 1,
            "kind": "hypothesis",
            "text": f"{quote(name)} in {quote(service)} "
            + (
                "got slower as a whole"
                if "shift" in stats["rule"]
                else f"got a slow tail ({stats['slow_share_window']:.0%} of calls over the baseline p95, "
                f"{stats['slow_share_baseline']:.0%} before)"
            )
            + f" in this window: median {stats['window_p50_ms']} ms vs {stats['baseline_p50_ms']} ms, "
            f"p95 {stats['window_p95_ms']} ms vs {stats['baseline_p95_ms']} ms; {issue.count} of "
            f"{stats['window_calls']} calls took {stats['threshold_ms']} ms or more (the baseline rate predicts "
            f"{stats['expected_slow_count']:g})." + "".join(f" {c['text']}" for c in changes),
            "details": {"changes": changes} if changes else {},
        }
    ]
    if child:
        plan.append(
            {
                "step": 2,
                "kind": "where_to_look",
                "text": child["text"],
                "details": {k: v for k, v in child.items() if k != "text"},
            }
        )
    else:
        plan.append(
            {
                "step": 2,
                "kind": "where_to_look",
                "text": f"The handler of {quote(name)} in {quote(service)}"
                + (f" ({', '.join(f'{k}={quote(v, 80)}' for k, v in where.items())})" if where else "")
                + f"; start with the slowest record {issue.evidence[0] if issue.evidence else '-'}.",
                "details": {"attributes": where},
            }
        )
    target = child["child"] if child else name
    plan.append(
        {
            "step": 3,
            "kind": "change",
            "text": f"Find what made {quote(target)} slower"
            + (" between the versions named above" if any(c["key"] == "service.version" for c in changes) else "")
            + f" and restore its baseline latency (p95 {stats['baseline_p95_ms']} ms) for inputs like the evidence "
            "records; keep its results unchanged.",
        }
    )
    plan.append(
        {
            "step": 4,
            "kind": "check",
            "text": f"Add eval {quote(issue.eval_candidate)} from the evidence and make it pass (p95 over at least "
            f"{EVAL_MIN_CALLS} calls at most {bound} ms); after the fix ships, run POST /v1/runs/verify with this "
            "packet_id.",
        }
    )
    issue.patch_plan = plan
    traces = ", ".join(issue.traces[:3])
    issue.next_action = (
        f"Review the slowest {len(issue.evidence)} of {issue.count} slow records"
        + (f" (traces {traces})" if traces else "")
        + " against the baseline, then approve or reject this packet; nothing is filed or changed before approval."
    )


def _where(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The most common value of each WHERE_KEYS attribute among the records (excerpted)."""
    out: dict[str, Any] = {}
    for key in WHERE_KEYS:
        values = Counter(str(v) for r in records if (v := (r.get("attributes") or {}).get(key)) is not None)
        if values:
            out[key] = excerpt(values.most_common(1)[0][0], 200)
    return out


def _changes(slow: list[dict[str, Any]], usual: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions and settings that slow calls have and the baseline's calls never had."""
    out = []

    def values(records: list[dict[str, Any]], key: str) -> Counter[str]:
        if key == "service.version":
            return Counter(v for r in records if (v := service_version(r)) is not None)
        return Counter(str(v) for r in records if (v := (r.get("attributes") or {}).get(key)) is not None)

    for key in ("service.version", *CHANGE_KEYS):
        now, before = values(slow, key), values(usual, key)
        if not now or not before:
            continue
        top = now.most_common(1)[0][0]
        if top not in before:
            was = ", ".join(quote(v) for v in sorted(before))
            out.append(
                {
                    "key": key,
                    "slow": top,
                    "baseline": sorted(before),
                    "text": f"The slowest calls have {key} {quote(top)}; "
                    f"the {len(usual)} latest baseline calls had {was}.",
                }
            )
    return out


def _slowest_child(
    window: Window, baseline: Window, slow: list[dict[str, Any]], usual: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The child span that takes most of the slow calls' time, and how long it took in baseline calls."""
    slow_children = _longest_children(window, slow)
    if not slow_children:
        return None
    by_name: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for parent, child in slow_children:
        by_name[(child["name"], child["service"])].append((parent, child))
    (name, service), pairs = max(by_name.items(), key=lambda kv: (len(kv[1]), sum(c["duration_ms"] for _, c in kv[1])))
    durations = sorted(c["duration_ms"] for _, c in pairs)
    shares = sorted(c["duration_ms"] / p["duration_ms"] for p, c in pairs if p["duration_ms"] > 0)
    before = sorted(
        c["duration_ms"] for _, c in _all_children(baseline, usual) if (c["name"], c["service"]) == (name, service)
    )
    example = max(pairs, key=lambda pc: pc[1]["duration_ms"])[1]
    attributes = _where([c for _, c in pairs])
    text = (
        f"In {len(pairs)} of the {len(slow)} slowest calls the longest child span is {quote(name)}"
        + (f" ({quote(service)})" if service != slow[0]["service"] else "")
        + f", {median(durations):.0f} ms median"
        + (f", {median(shares):.0%} of the call" if shares else "")
        + (f"; in baseline calls it took {median(before):.0f} ms median" if before else "")
        + (f". {', '.join(f'{k}: {quote(v, 200)}' for k, v in attributes.items())}" if attributes else "")
        + f". Example: record {example['record_id']}."
    )
    return {
        "text": text,
        "child": name,
        "child_service": service,
        "child_p50_ms": _ms(median(durations)),
        "child_share_of_call": round(median(shares), 3) if shares else None,
        "child_baseline_p50_ms": _ms(median(before)) if before else None,
        "child_record_id": example["record_id"],
        "attributes": attributes,
    }


def _all_children(window: Window, parents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(parent, child) for every direct child span of the given records found in the window."""
    spans = {(p["trace_id"], p["span_id"]): p for p in parents if p.get("trace_id") and p.get("span_id")}
    if not spans:
        return []
    records = window.traces(sorted({t for t, _ in spans}), limit=EVIDENCE * 200)
    return [
        (spans[key], r)
        for r in records
        if (key := (r["trace_id"], r["parent_span_id"])) in spans and r["record_id"] != spans[key]["record_id"]
    ]


def _longest_children(window: Window, parents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """For each parent with children in the window: (parent, its longest direct child)."""
    longest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for parent, child in _all_children(window, parents):
        held = longest.get(parent["record_id"])
        if held is None or (child["duration_ms"], child["record_id"]) > (held[1]["duration_ms"], held[1]["record_id"]):
            longest[parent["record_id"]] = (parent, child)
    return list(longest.values())
