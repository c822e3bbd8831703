"""Signature clusterer: one fault, one issue; two faults, two issues.

At ingest every error and tool failure gets a signature: its type, service, operation (tool, route or
span name), exception type and message with the variable parts masked (`loopkit_plugins.masking`),
prefixed by its outcome attributes (`[http 404]`, `[grpc 14]`; docs/grouping.md).
At diagnosis the window is grouped by signature in SQL, and the few distinct templates of each
(type, service, operation, exception type) are clustered (`loopkit_plugins.templates`) so that
messages differing only in variable tokens the masker missed join one issue; templates of different
outcomes never join. An issue keeps its fingerprint across runs: a signature once assigned to an issue
stays with it. The project's fingerprint rules come first (`loopkit_plugins.rule_grouping`,
docs/grouping.md): the failures they match are their issues, and are left out of the signature groups.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from typing import Any

from loopkit_core.evidence import (
    excerpt,
    failure_eval_input,
    quote,
    service_version,
    severity_for_count,
    slug,
    stack_frames,
)
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Issue, Record, Signature
from loopkit_core.window import KnownIssue, SignatureGroup, Window
from loopkit_plugins.masking import mask

NAME = "signature_clusterer"
EVIDENCE = 10
MAX_MESSAGES = 50  # distinct messages read to find constant slots (more than that: some slot varies)
# An issue with more records than this counts its distinct messages up to 51 before grouping them: reading no more
# than 51 values of a large issue whose messages all differ. Smaller ones are grouped at once (one read, not two).
GROUPED_AT_ONCE = 20_000
MAX_SLOTS = 6  # placeholders a template may have for its slots to be matched
MAX_MESSAGE = 1000  # characters of a message matched against the template (masking reads no more)
FEW_CHARS = 40  # ... each at most this long
FEW_VALUES = 3  # a slot with at most this many values in all of the issue's records is written out
_SLOT = re.compile(r"(<(?:\*|[A-Z]+)>)")


def operation_of(record: Record) -> str:
    """What a failure is scoped to: the tool for tool failures, else the route, else the span name."""
    attributes = record.attributes
    if record.type == "tool_failure" and isinstance(attributes.get("gen_ai.tool.name"), str):
        return attributes["gen_ai.tool.name"]
    route = attributes.get("http.route")
    return route if isinstance(route, str) and route else record.name


# OpenTelemetry attributes that name an outcome (semantic conventions), and the word each is shown with.
# A 404 and a 503 of one operation are two faults, whatever the message says.
STATUS_ATTRIBUTES = (
    ("http.response.status_code", "http"),
    ("http.status_code", "http"),  # the name before semantic conventions 1.21
    ("rpc.grpc.status_code", "grpc"),
    ("db.response.status_code", "db"),
    ("error.type", "error"),
    ("exception.type", "exception"),
)
MAX_STATUS_CHARS = 64
_STATUS_PREFIX = re.compile(r"\[((?:http|grpc|db|error|exception) [^\]\n]*)\] ")
_STATUS_UNSAFE = re.compile(r"[\]\[\n\r\t]")


def status_of(record: Record) -> str:
    """The record's outcome attributes as shown in its template (``http 404``), or "" when it has none.

    `error.type` and `exception.type` are shown only when they add to the record's exception type
    (which is part of the signature already).
    """
    attributes = record.attributes
    parts: list[str] = []
    seen: set[str] = set()
    for name, word in STATUS_ATTRIBUTES:
        value = attributes.get(name)
        if value is None or value == "" or isinstance(value, (dict, list)) or word in seen:
            continue
        text = _STATUS_UNSAFE.sub(" ", str(value)).strip()[:MAX_STATUS_CHARS]
        if not text or (word in ("error", "exception") and text == record.exception_type):
            continue
        seen.add(word)
        parts.append(f"{word} {text}")
    return ", ".join(parts)


def split_status(template: str) -> tuple[str, str]:
    """A signature template's status prefix (``http 404``, or "") and the masked message after it."""
    m = _STATUS_PREFIX.match(template)
    return (m.group(1), template[m.end() :]) if m else ("", template)


# Recent signatures by their hashed parts: most records repeat a template seen moments ago, and the hash
# and the frozen `Signature` cost a tenth of the record's time. An immutable `Signature` can be shared.
_signatures: dict[tuple[str, str, str, str, str], Signature] = {}
_SIGNATURES_MAX = 16384  # far more templates than a process sees at once; bounds the memory


@hookimpl(trylast=True)
def record_signature(record: Record) -> Signature:
    """The masked-template signature of an error or tool failure, prefixed by its outcome attributes."""
    operation = operation_of(record)
    exception_type = record.exception_type or ""
    template = mask(record.message or exception_type)
    # Without outcome attributes the key is what it always was, so stored signatures keep their issues.
    status = status_of(record) if record.attributes else ""
    if status:
        template = f"[{status}] {template}"
    parts = (record.type, record.service, operation, exception_type, template)
    signature = _signatures.get(parts)
    if signature is None:
        if len(_signatures) >= _SIGNATURES_MAX:
            _signatures.clear()
        signature = _signatures[parts] = Signature(key=_hash(*parts), template=template, operation=operation)
    return signature


@hookimpl(trylast=True)
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue]:
    """Issues from the window's signatures, clustered per (type, service, operation, exception type)."""
    from loopkit_plugins.rule_grouping import MAX_GROUPS, add_evidence, leave_to_rules, rule_issues
    from loopkit_plugins.templates import generalize

    # The project's fingerprint rules group the failures they match; the rest are grouped by signature.
    rules, notes = window.grouping_rules(), options.get("notes")
    if rules:  # one scan of the window's failures evaluates every rule once per record (docs/grouping.md, Cost)
        failures = window.failure_groups(rules, MAX_GROUPS)
        groups, ruled = failures.signature_groups, rule_issues(window, rules, notes, failures.rule_groups)
    else:
        groups, ruled = window.signature_groups(), []
    if not groups and not ruled and isinstance(notes, list):
        notes.append({"where": None, "reason": "no error or tool failure record in the window"})
    assigned = window.known_signatures()
    known = {k.fingerprint: k for k in window.known_issues(NAME)}
    by_partition: dict[tuple[str, ...], list[SignatureGroup]] = defaultdict(list)
    for group in groups:
        by_partition[_partition(group)].append(group)
    known_by_partition: dict[tuple[str, ...], list[KnownIssue]] = defaultdict(list)
    for issue in known.values():
        partition = issue.selector.get("partition")
        if partition:
            known_by_partition[tuple(partition)].append(issue)

    found: list[Issue] = []
    for partition, members in by_partition.items():
        resolved = _resolve(partition, members, known_by_partition.get(partition, []), known, assigned)
        for fingerprint, here in resolved.items():
            found.append(_issue(fingerprint, partition, here, known.get(fingerprint), generalize))

    if rules:  # the records the rules group are not these issues' (docs/grouping.md#fingerprint-rules)
        leave_to_rules(window, rules, failures, found, ruled)
    found += ruled
    # Evidence costs a query per issue: only sample the issues the packet can keep (the pipeline drops
    # the rest, and knows from them that the packet was truncated).
    found = [i for i in found if i.count >= options.get("min_count", 1)]
    found.sort(key=lambda i: (-i.impact, i.fingerprint))
    for issue in found[: options.get("max_issues", len(found))]:
        if issue.stats.get("grouped_by") == "fingerprint_rule":
            add_evidence(window, issue)
        else:
            _add_evidence(window, issue)
    return found


def _resolve(
    partition: tuple[str, ...],
    members: list[SignatureGroup],
    olds: list[KnownIssue],
    known: dict[str, KnownIssue],
    assigned: dict[str, str],
) -> dict[str, list[SignatureGroup]]:
    """The issues of one partition: its signatures clustered per outcome status, each group's fingerprint.

    Signatures with different statuses (`[http 404]`, `[http 503]`) never share an issue. A known issue
    with no status (every issue found before statuses were part of signatures) may continue into any
    status: the records with no status keep it, and of the statuses that cluster with it, one keeps it
    (the one its signatures were assigned to before, else the one with most records), so an upgrade
    renames no issue; the other statuses become issues of their own.
    """
    from loopkit_plugins.templates import cluster, generalize

    by_status: dict[str, list[SignatureGroup]] = defaultdict(list)
    for group in members:
        by_status[split_status(group.template)[0]].append(group)
    # fingerprint -> the claims on it: (status, groups, the known issues its signatures were assigned to)
    claims: dict[str, list[tuple[str, list[SignatureGroup], list[KnownIssue]]]] = defaultdict(list)
    for status, groups in sorted(by_status.items()):
        olds_here = [k for k in olds if split_status(k.template or "")[0] in (status, "")]
        labels = cluster(
            [split_status(k.template or "")[1] for k in olds_here] + [split_status(g.template)[1] for g in groups],
            counts=[0] * len(olds_here) + [g.count for g in groups],
        )
        old_labels, member_labels = labels[: len(olds_here)], labels[len(olds_here) :]
        for label in sorted(set(member_labels)):
            here = [g for g, lab in zip(groups, member_labels, strict=True) if lab == label]
            # Identity wins over re-clustering: a signature already assigned keeps its issue.
            by_identity = [known[assigned[g.signature]] for g in here if assigned.get(g.signature) in known]
            previous = by_identity + [k for k, lab in zip(olds_here, old_labels, strict=True) if lab == label]
            if previous:
                chosen = min(previous, key=lambda k: (k.first_seen_ns, k.fingerprint))
                claims[chosen.fingerprint].append((status, here, by_identity))
            else:
                fingerprint = _hash("issue", *partition, generalize([g.template for g in here]))
                claims[fingerprint].append((status, here, []))
    resolved: dict[str, list[SignatureGroup]] = defaultdict(list)
    for fingerprint, claimed in claims.items():
        statuses = [c for c in claimed if c[0]]

        def rank(
            claim: tuple[str, list[SignatureGroup], list[KnownIssue]], fingerprint: str = fingerprint
        ) -> tuple[bool, int, str]:
            held = any(k.fingerprint == fingerprint for k in claim[2])
            return (not held, -sum(g.count for g in claim[1]), claim[0])

        keeper = min(statuses, key=rank)[0] if statuses else ""
        for status, here, by_identity in claimed:
            if not status or status == keeper:
                resolved[fingerprint].extend(here)
                continue
            # Another status keeps this issue: this one goes back to its own issue, or starts one.
            own = [k for k in by_identity if k.fingerprint != fingerprint]
            if own:
                resolved[min(own, key=lambda k: (k.first_seen_ns, k.fingerprint)).fingerprint].extend(here)
            else:
                resolved[_hash("issue", *partition, generalize([g.template for g in here]))].extend(here)
    return resolved


def _partition(group: SignatureGroup) -> tuple[str, ...]:
    return (group.type, group.service, group.operation, group.exception_type)


def _hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


def _issue(
    fingerprint: str, partition: tuple[str, ...], here: list[SignatureGroup], old: KnownIssue | None, generalize: Any
) -> Issue:
    signal_type, service, operation, exception_type = partition
    signatures = sorted({g.signature for g in here} | set(old.selector.get("signatures", []) if old else []))
    template = generalize([g.template for g in here] + ([old.template] if old and old.template else []))
    count = sum(g.count for g in here)
    what = exception_type or ("tool call failed" if signal_type == "tool_failure" else "error")
    return Issue(
        fingerprint=fingerprint,
        title=excerpt(f"{what} on {operation}: {template}", 140),
        signal_type=signal_type,
        count=count,
        first_seen_ns=min(g.first_ns for g in here),
        last_seen_ns=max(g.last_ns for g in here),
        selector={"signatures": signatures, "partition": list(partition)},
        severity=severity_for_count(count),
        impact=float(count),
        template=template,
        stats={
            "signatures": len(here),
            "service": service,
            "operation": operation,
            "exception_type": exception_type or None,
            "per_signature": sorted(
                ({"template": g.template, "count": g.count} for g in here), key=lambda s: -s["count"]
            )[:20],
        },
        eval_candidate=slug(operation, exception_type or " ".join(_words(template)[:3])) + "-v1",
    )


def _words(template: str) -> list[str]:
    return [w for w in template.split() if not w.startswith("<")]


def slot_values(template: str, messages: list[tuple[str, int]]) -> list[Counter[str]] | None:
    """Per placeholder of the template, how many records carried each value; None if a message does not fit it."""
    from loopkit_plugins.masking import PLACEHOLDERS

    parts = _SLOT.split(template)
    slots = parts[1::2]
    if not slots or len(slots) > MAX_SLOTS or any(s not in PLACEHOLDERS for s in slots):
        return None
    pattern = re.compile("".join(re.escape(p) if i % 2 == 0 else "(.+?)" for i, p in enumerate(parts)), re.DOTALL)
    counts: list[Counter[str]] = [Counter() for _ in slots]
    for message, n in messages:
        match = pattern.fullmatch(message[:MAX_MESSAGE])
        if match is None:
            return None
        for i, value in enumerate(match.groups()):
            counts[i][value] += n
    return counts


def keep_constants(template: str, counts: list[Counter[str]]) -> tuple[str, list[dict[str, Any]]]:
    """The template with each slot that takes one value (or at most FEW_VALUES) in every record written out."""
    parts = _SLOT.split(template)
    out, kept = [parts[0]], []
    for i, values in enumerate(counts):
        slot = parts[2 * i + 1]
        # One value is written out whole (up to the title's length); a few only when each is short, else the
        # title would list URLs or queries.
        if len(values) == 1 or (0 < len(values) <= FEW_VALUES and all(len(v) <= FEW_CHARS for v in values)):
            ordered = [v for v, _ in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))]
            shown = ordered[0] if len(ordered) == 1 else "{" + "|".join(ordered) + "}"
            out.append(shown)
            kept.append({"slot": slot, "position": i, "values": {v: values[v] for v in ordered}})
        else:
            out.append(slot)
        out.append(parts[2 * i + 2])
    return "".join(out), kept


def _constants(window: Window, issue: Issue) -> list[dict[str, Any]]:
    """Slots of the issue's template that are constant (or nearly) over all of its records in the window."""
    if not issue.template:
        return []
    if issue.count > GROUPED_AT_ONCE and window.distinct(issue.selector, "message", MAX_MESSAGES + 1) > MAX_MESSAGES:
        return []
    messages = window.groups(issue.selector, by="message", limit=MAX_MESSAGES + 1)
    if not messages or len(messages) > MAX_MESSAGES:
        return []
    # The status prefix comes from attributes, not from the message: match the message part alone.
    status, body = split_status(issue.template)
    counts = slot_values(body, [(g.value or "", g.count) for g in messages])
    if counts is None:
        return []
    titled, kept = keep_constants(body, counts)
    if kept:
        issue.stats["constant_template"] = f"[{status}] {titled}" if status else titled
    return kept


def _add_evidence(window: Window, issue: Issue) -> None:
    constants = _constants(window, issue)
    records = window.sample(issue.selector, EVIDENCE)
    issue.evidence = [r["record_id"] for r in records]
    issue.traces = sorted({r["trace_id"] for r in records if r["trace_id"]})
    stats = issue.stats
    example = records[0] if records else {}
    # Verification measures the fault per call of the same operation: the span name its records carry.
    names = Counter(r["name"] for r in records)
    stats["span_name"] = names.most_common(1)[0][0] if names else stats["operation"]
    stats["constant_slots"] = constants
    # The title keeps the span name when it says more than the operation (`GET /products/{id}`, not the route
    # alone) and every slot whose value is the same (or one of very few) in all of the issue's records.
    span, operation = stats["span_name"], stats["operation"]
    place = span if span != operation and span.endswith(operation) else operation
    what = stats["exception_type"] or ("tool call failed" if issue.signal_type == "tool_failure" else "error")
    issue.title = excerpt(f"{what} on {place}: {stats.get('constant_template') or issue.template}", 140)
    frames = stack_frames(example) if example else []
    version = service_version(example) if example else None
    # The issue's distinct sessions, not its sample's: one grouped query (bounded).
    sessions = [g for g in window.groups(issue.selector, by="session_id", limit=10_001) if g.value]
    # Telemetry (operation, service, exception type, template, frames) is quoted in every sentence: it is data.
    operation = quote(stats["operation"])
    what = quote(stats["exception_type"]) if stats["exception_type"] else None
    what = what or ("the tool failure" if issue.signal_type == "tool_failure" else "the error")
    issue.eval = {
        "id": issue.eval_candidate,
        "input": failure_eval_input(stats, example, template=stats.get("constant_template") or issue.template),
        "expected": f"{operation} completes without {what}; no record matches this issue's signature",
        "evidence_ids": issue.evidence[:5],
    }
    where: dict[str, Any] = {"operation": stats["operation"], "service": stats["service"]}
    if frames:
        where["stack_frames"] = frames
    if version:
        where["service_version"] = version
    issue.patch_plan = [
        {
            "step": 1,
            "kind": "hypothesis",
            "text": f"{issue.count} {issue.signal_type} record(s) on {operation} share one fault: "
            f"{what} with message {quote(stats.get('constant_template') or issue.template, 300)}."
            + "".join(
                f" Every one of them has {quote(next(iter(c['values'])), 200)} where the template has "
                f"{quote(c['slot'])}."
                if len(c["values"]) == 1
                else f" {quote(c['slot'])} takes only {len(c['values'])} values: "
                + ", ".join(f"{quote(v, 100)} ({n})" for v, n in c["values"].items())
                + "."
                for c in constants
            ),
        },
        {
            "step": 2,
            "kind": "where_to_look",
            "text": "Start at "
            + (quote(frames[0], 300) if frames else f"the handler of {operation}")
            + f" in {quote(stats['service'])}"
            + (f" version {quote(version)}" if version else "")
            + ".",
            "details": where,
        },
        {
            "step": 3,
            "kind": "change",
            "text": f"Prevent or handle {what} in {operation} for inputs like record "
            f"{example.get('record_id')}; keep the behaviour for other inputs unchanged.",
        },
        {
            "step": 4,
            "kind": "check",
            "text": f"Add eval {quote(issue.eval_candidate)} from the evidence and make it pass; after the fix ships, "
            "run POST /v1/runs/verify with this packet_id.",
        },
    ]
    issue.next_action = (
        f"Review the evidence ({len(issue.evidence)} of {issue.count} records"
        + (f"; the issue's records come from {len(sessions)} session(s)" if sessions else "")
        + ") and approve or reject this packet; nothing is filed or changed before approval."
    )
