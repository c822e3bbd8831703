"""Telling attributes: attribute values strongly over-represented in an issue's records, and few-valued identifiers.

For each issue of a packet, its records are compared with the same operation's other calls in the window (the
calls that did not fail, or were not slow) and with the operation's calls in the baseline before the window:

- candidates are the scalar values of span, resource and event attributes (`service.version` included) that at
  least MIN_SHARE of the issue's sampled records carry;
- a candidate is telling when its share among the issue's records is at least RATIO times its share among the
  other calls, and a one-sided Fisher exact test (`statistics.fisher_greater`) gives p <= ALPHA / m, a
  Bonferroni bound over the m candidates tested for the issue;
- an identifier (a key named `id`, `*.id` or `*_id`) whose issue records take at most MAX_IDS distinct values,
  fewer than half the records, is listed with its values ("28 records from 8 product.id values").

Both shares (and the baseline's) and the p-value are in `stats.telling_attributes`; the first telling value is
named in the patch plan's hypothesis. Cost: at most SAMPLE issue records, SAMPLE other calls and SAMPLE baseline
calls are read per issue (three bounded queries; one when no value is a candidate), for at most MAX_ISSUES issues.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any

from loopkit_core.evidence import quote
from loopkit_core.statistics import fisher_greater
from loopkit_core.window import AttributeRow, Window

SAMPLE = 200  # records read per side
MAX_ISSUES = 20  # issues of a packet examined (the first, most important ones)
MIN_SHARE = 0.5  # a value must be on at least this share of the issue's records to be a candidate
RATIO = 2.0  # ... and at least this many times as common as among the other calls
ALPHA = 0.001  # family-wise, per issue
MIN_RECORDS = 5  # fewer issue records than this: nothing is claimed
MAX_IDS = 10  # an identifier with at most this many values among the issue's records is listed
MAX_KEYS = 200  # attribute keys looked at per record
SHOWN = 5  # telling values kept per issue
_SCALARS = (str, int, float, bool)
# The exception event's attributes define the failure itself (type, message, stack, escaped): they are on every
# failed call and on no other, so they would always look telling and never tell anything. They are left out.
_PER_EVENT = "exception."


def annotate(window: Window, issues: list[dict[str, Any]], baseline_windows: float = 6.0) -> None:
    """Add `stats.telling_attributes` and `stats.identifiers` to the packet's issues, and name them in the plan."""
    length = window.end_ns - window.start_ns
    baseline = window.preceding(int(length * baseline_windows))
    for issue in issues[:MAX_ISSUES]:
        found, identifiers = examine(window, baseline, issue)
        issue["stats"]["telling_attributes"] = found
        issue["stats"]["identifiers"] = identifiers
        sentence = describe(found, identifiers, issue["count"])
        hypothesis = next((s for s in issue.get("patch_plan", []) if s.get("kind") == "hypothesis"), None)
        inputs = (issue.get("eval") or {}).get("input")
        if isinstance(inputs, dict) and (found or identifiers):
            # The eval's inputs: the values the failing calls share, so the test reproduces them.
            inputs["telling_attributes"] = {f["key"]: f["value"] for f in found}
            inputs["identifiers"] = {i["key"]: i["values"] for i in identifiers}
        where = next((s for s in issue.get("patch_plan", []) if s.get("kind") == "where_to_look"), None)
        if found and where is not None and isinstance(where.get("text"), str):
            top = found[0]
            where["text"] += (
                f" Compare the calls with {top['key']} = {quote(top['value'], 120)} ({top['issue_share']:.0%} of this "
                f"issue's records, {top['other_share']:.0%} of the other calls) with those without it."
            )
        if sentence and hypothesis is not None and isinstance(hypothesis.get("text"), str):
            hypothesis["text"] += " " + sentence
            details = hypothesis.setdefault("details", {})
            if isinstance(details, dict):
                details["telling_attributes"] = found
                details["identifiers"] = identifiers


def examine(
    window: Window, baseline: Window, issue: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(telling attribute values, few-valued identifiers) of one issue."""
    selector = issue["selector"]
    mine = window.attribute_sample(selector, SAMPLE)
    if len(mine) < MIN_RECORDS:
        return [], []
    names = Counter((r.name, r.service) for r in mine)
    (name, service), _ = names.most_common(1)[0]
    operation = {"name": name, "service": service}
    resources: dict[str, set[tuple[str, str]]] = {}
    own = [_pairs(r.attributes) for r in mine]  # the calls' own attributes, for the identifiers too
    mine_values = [pairs | _values(r, None, resources) for pairs, r in zip(own, mine, strict=True)]
    candidates = Counter(pair for values in mine_values for pair in values)
    wanted = [pair for pair, n in candidates.items() if n >= MIN_SHARE * len(mine)]
    found = []
    # No candidate: nothing can be telling, and the other calls and the baseline need not be read.
    others = window.attribute_sample(operation, SAMPLE, exclude=selector) if wanted else []
    if others:
        before = baseline.attribute_sample(operation, SAMPLE)
        keys = {key for key, _ in wanted}  # the other sides are only asked about the candidates' keys
        resources = {}
        other_values = [_pairs(r.attributes, keys) | _values(r, keys, resources) for r in others]
        before_values = [_pairs(r.attributes, keys) | _values(r, keys, resources) for r in before]
        tests = max(len(wanted), 1)
        for key, value in sorted(wanted):
            a = candidates[(key, value)]
            c = sum(1 for values in other_values if (key, value) in values)
            share, other_share = a / len(mine), c / len(others)
            if share < RATIO * other_share:
                continue
            p = fisher_greater(a, len(mine), c, len(others))
            if p > ALPHA / tests:
                continue
            b = sum(1 for values in before_values if (key, value) in values)
            found.append(
                {
                    "key": key,
                    "value": value,
                    "issue_records": a,
                    "issue_sampled": len(mine),
                    "issue_share": round(share, 4),
                    "other_calls": c,
                    "other_sampled": len(others),
                    "other_share": round(other_share, 4),
                    "baseline_share": round(b / len(before), 4) if before else None,
                    "baseline_sampled": len(before),
                    "p_value": float(f"{p:.3g}"),
                }
            )
        found.sort(key=lambda f: (f["p_value"], -f["issue_share"], f["key"]))
    # Identifiers come from the calls' own attributes: a resource's (say service.instance.id) names a process.
    return found[:SHOWN], _identifiers(own)


def describe(found: list[dict[str, Any]], identifiers: list[dict[str, Any]], count: int) -> str:
    """One sentence for the plan: the telling values with both shares, then the few-valued identifiers."""
    parts = [
        f"{f['key']} = {quote(f['value'], 120)} is on {f['issue_records']} of {f['issue_sampled']} of these records "
        f"({f['issue_share']:.0%}) but on {f['other_calls']} of {f['other_sampled']} other calls of the same operation "
        f"({f['other_share']:.0%})"
        + (f" and {f['baseline_share']:.0%} of the baseline's" if f["baseline_share"] is not None else "")
        + f" (Fisher p = {f['p_value']:.2g})"
        for f in found[:3]
    ]
    parts += [
        f"the {i['records']} sampled records come from only {len(i['values'])} {i['key']} value(s): "
        + ", ".join(quote(v, 60) for v in i["values"])
        for i in identifiers[:2]
    ]
    if not parts:
        return ""
    return "Telling: " + "; ".join(parts) + "."


def _values(
    row: AttributeRow, keys: set[str] | None, resources: dict[str, set[tuple[str, str]]]
) -> set[tuple[str, str]]:
    """The row's resource and event attribute values as (key, text) pairs (only `keys`' if given).

    A resource's pairs are worked out once per resource key (`resources` holds them, for one `keys`): the rows of
    one sample mostly share a few resources.
    """
    if row.resource_key is None:
        out = _pairs(row.resource, keys)
    else:
        cached = resources.get(row.resource_key)
        if cached is None:
            cached = resources[row.resource_key] = _pairs(row.resource, keys)
        out = set(cached)
    for event in row.events or []:
        if isinstance(event, dict):
            out |= _pairs(event.get("attributes"), keys)
    return out


def _pairs(attributes: Any, keys: set[str] | None = None) -> set[tuple[str, str]]:
    """One attribute object's scalar values as (key, text) pairs: its first MAX_KEYS keys, only `keys`' if given."""
    out: set[tuple[str, str]] = set()
    if not attributes or not isinstance(attributes, dict):
        return out
    if keys is not None and len(attributes) <= MAX_KEYS:
        # Every key is among the first MAX_KEYS: look up the few wanted ones instead of walking them all.
        items: Any = ((key, attributes[key]) for key in keys & attributes.keys())
    else:
        items = islice(attributes.items(), MAX_KEYS)  # a hot loop (200 records a side, 20 issues)
    for key, value in items:
        if (keys is not None and key not in keys) or key.startswith(_PER_EVENT):
            continue
        if value.__class__ is str:
            out.add((key, value))
        elif isinstance(value, _SCALARS):
            out.add((key, _text(value)))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _identifiers(values: list[set[tuple[str, str]]]) -> list[dict[str, Any]]:
    """Identifier keys whose values among the issue's records are few (and repeat)."""
    by_key: dict[str, Counter[str]] = {}
    for pairs in values:
        for key, value in pairs:
            if key == "id" or key.endswith((".id", "_id")):
                by_key.setdefault(key, Counter())[value] += 1
    out = []
    for key, counts in sorted(by_key.items()):
        carried = sum(counts.values())
        if len(counts) <= MAX_IDS and len(counts) < carried / 2 and carried >= MIN_RECORDS:
            out.append(
                {
                    "key": key,
                    "records": carried,
                    "values": [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))],
                    "counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                }
            )
    return out
