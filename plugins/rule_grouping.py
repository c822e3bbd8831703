"""Issues from a project's fingerprint rules (docs/grouping.md#fingerprint-rules), for the signature clusterer.

Each rule's failures in the window (those no earlier rule matched) are grouped in SQL by the rule's fingerprint
variables; a group's fingerprint is a hash of the template and the values, so equal templates and values from
several rules are one issue, whose selector lists each rule's part. The records a rule matches are left out of the
signature groups, so no record is counted by two issues.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from loopkit_core.evidence import excerpt, failure_eval_input, quote, severity_for_count, slug
from loopkit_core.fingerprint_rules import FingerprintRule, fingerprint, render, typed_values
from loopkit_core.model import Issue
from loopkit_core.selectors import RuleGroup, RulePart, Signatures
from loopkit_core.window import FailureGroups, RuleMatches, Window

MAX_GROUPS = 1000  # groups read per rule (largest first); a rule with more is reported in a note
EVIDENCE = 10


def rule_issues(
    window: Window, rules: list[FingerprintRule], notes: list[Any] | None, groups: list[RuleMatches] | None = None
) -> list[Issue]:
    """One issue per distinct fingerprint the rules give the window's failures (counts exact, from SQL); `groups`:
    the window's rule groups when already read (Window.failure_groups)."""
    if groups is None:
        groups = window.rule_groups(rules, MAX_GROUPS)
    per_rule = Counter(g.rule for g in groups)
    for index, n in sorted(per_rule.items()):
        if n > MAX_GROUPS and isinstance(notes, list):
            notes.append(
                {
                    "where": f"fingerprint rule {index}",
                    "reason": f"the rule gives more than {MAX_GROUPS} groups; only the {MAX_GROUPS} largest are issues",
                    "needs": "a fingerprint template with fewer distinct values (e.g. without {message})",
                }
            )
    seen: Counter[int] = Counter()
    by_fingerprint: dict[str, list[RuleMatches]] = defaultdict(list)
    for group in groups:  # each rule's groups come largest first: its extra (smallest) group is left out
        seen[group.rule] += 1
        if seen[group.rule] > MAX_GROUPS:
            continue
        by_fingerprint[fingerprint(rules[group.rule], group.values)].append(group)
    return [_issue(key, members, rules) for key, members in by_fingerprint.items()]


def leave_to_rules(
    window: Window,
    rules: list[FingerprintRule],
    failures: FailureGroups,
    by_signature: list[Issue],
    by_rule: list[Issue],
) -> None:
    """Leave the rules' records out of the signature issues' selectors (`unless`), and tell the window what the one
    pass counted, so the reads after it (evidence, operations, sessions, releases) are cheap and give the same
    answers: hints exact only in this window, never stored."""
    for issue in by_signature:
        issue.selector["unless"] = [rule.match.to_json() for rule in rules]
        keys = tuple(issue.selector["signatures"])
        if not failures.cut and not failures.ruled_signatures.intersection(keys):
            # No rule took any of these signatures' records here: in this window they are the keys' records.
            window.narrow(issue.selector, Signatures(keys))
    for issue in by_rule:
        signatures = issue.stats.pop("_signatures", ())
        if not failures.cut.intersection(issue.stats["rules"]):
            # Every record of the issue carries one of these signatures: reads go through the signature index.
            window.narrow(issue.selector, signatures)


def _issue(key: str, members: list[RuleMatches], rules: list[FingerprintRule]) -> Issue:
    # One part per (rule, values): the groups of one part differ only by record type.
    parts: dict[tuple[int, tuple[tuple[str, str | None], ...]], int] = {}
    types: Counter[str] = Counter()
    for group in members:
        part = (group.rule, tuple(group.values.items()))
        parts[part] = parts.get(part, 0) + group.count
        types[group.type] += group.count
    largest = max(parts, key=lambda p: (parts[p], -p[0]))
    rule, values = rules[largest[0]], dict(largest[1])
    selector = RuleGroup(
        tuple(
            RulePart(rules[index].match, tuple(r.match for r in rules[:index]), dict(pairs))
            for index, pairs in sorted(parts)
        )
    )
    count = sum(types.values())
    # Errors outrank tool failures when a group holds both equally.
    signal_type = max(types, key=lambda t: (types[t], t == "error"))
    rendered = render(rule.fingerprint, values)
    return Issue(
        fingerprint=key,
        title=excerpt(render(rule.title, values) if rule.title else rendered, 140),
        signal_type=signal_type,
        count=count,
        first_seen_ns=min(g.first_ns for g in members),
        last_seen_ns=max(g.last_ns for g in members),
        selector=selector.to_json(),
        severity=severity_for_count(count),
        impact=float(count),
        # No message template: evals read `template` as the message a fix must make disappear.
        template=None,
        stats={
            "grouped_by": "fingerprint_rule",
            "rule": largest[0],
            "rules": sorted({index for index, _ in parts}),
            "fingerprint_template": rule.fingerprint,
            "fingerprint_rendered": rendered,
            "values": typed_values(values),
            "per_type": dict(types),
            # Taken out before the issue leaves the diagnoser: the signatures of its records in the window.
            "_signatures": tuple(sorted({k for g in members for k in g.signatures})),
        },
        eval_candidate=slug("rule", rendered) + "-v1",
    )


def add_evidence(window: Window, issue: Issue) -> None:
    """Evidence, the operation verification measures against, and the plan of a rule issue."""
    records = window.sample(issue.selector, EVIDENCE)
    issue.evidence = [r["record_id"] for r in records]
    issue.traces = sorted({r["trace_id"] for r in records if r["trace_id"]})
    stats = issue.stats
    # The rate verifier measures the fault per call of the issue's most frequent span name in its service.
    names = window.groups(issue.selector, by="name", limit=1)
    services = window.groups(issue.selector, by="service", limit=1)
    exceptions = window.groups(issue.selector, by="exception_type", limit=1)
    stats["span_name"] = stats["operation"] = names[0].value if names else None
    stats["service"] = services[0].value if services else None
    stats["exception_type"] = exceptions[0].value if exceptions else None
    example = records[0] if records else {}
    what = quote(stats["exception_type"]) if stats["exception_type"] else f"the {issue.signal_type}"
    operation = quote(stats["operation"] or "")
    issue.eval = {
        "id": issue.eval_candidate,
        "input": failure_eval_input(stats, example),
        "expected": f"{operation} completes without {what}; no record matches this issue's fingerprint rule",
        "evidence_ids": issue.evidence[:5],
    }
    issue.patch_plan = [
        {
            "step": 1,
            "kind": "hypothesis",
            "text": f"{issue.count} {issue.signal_type} record(s) share the fingerprint "
            f"{quote(stats['fingerprint_rendered'], 300)} of the project's fingerprint rule {stats['rule']} "
            f"(template {quote(stats['fingerprint_template'], 300)}).",
        },
        {
            "step": 2,
            "kind": "where_to_look",
            "text": f"Start at the handler of {operation} in {quote(stats['service'] or '')}.",
            "details": {"operation": stats["operation"], "service": stats["service"]},
        },
        {
            "step": 3,
            "kind": "check",
            "text": f"Add eval {quote(issue.eval_candidate)} from the evidence and make it pass; after the fix ships, "
            "run POST /v1/runs/verify with this packet_id.",
        },
    ]
    issue.next_action = (
        f"Review the evidence ({len(issue.evidence)} of {issue.count} records) and approve or reject this packet; "
        "nothing is filed or changed before approval."
    )
