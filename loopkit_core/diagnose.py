"""Diagnosis: window -> every diagnoser (one at a time) -> issues -> packet, stored per project."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from loopkit_core import merges, regression
from loopkit_core.causes import link
from loopkit_core.collector import fewer_collections
from loopkit_core.feedback import NegativeRule, attribute
from loopkit_core.impact import impacts, severity
from loopkit_core.model import FAILURE_TYPES, Issue, rfc3339
from loopkit_core.overlap import Reads
from loopkit_core.plugins import Plugins
from loopkit_core.releases import ReleaseGroup, merge_releases
from loopkit_core.releases import summary as release_summary
from loopkit_core.selectors import SELECTOR_TYPES, selector_json
from loopkit_core.store.engines import Store
from loopkit_core.store.packets import get_packet, save_diagnosis
from loopkit_core.store.records import selector_condition
from loopkit_core.telling import annotate
from loopkit_core.window import Window

log = logging.getLogger("loopkit.diagnose")

MAX_ISSUES = 1000  # issues in one packet: 10,000 made a 21 MB packet and a 50 MB dashboard page
ISSUE_SIGNAL_TYPES = ("error", "tool_failure", "latency", "user_signal", "event")
SEVERITIES = ("critical", "high", "medium", "low")
MAX_EVIDENCE = 20
MAX_DISTINCT = 10_000  # sessions or users counted per issue (a count above it reads MAX_DISTINCT + 1)
MAX_NOTES = 50  # notes kept per diagnoser in one packet
NOTE_CHARS = 300  # characters of each note's text
APPROVAL_REASON = (
    "LoopKit prepares; people decide. A human must approve this packet before any issue is filed, "
    "any change is merged or anything is shipped."
)


@dataclass(frozen=True)
class DiagnoseRequest:
    """A validated POST /v1/runs/diagnose body."""

    since_minutes: float = 60.0
    until_ns: int | None = None
    diagnosers: tuple[str, ...] | None = None
    min_count: int = 3
    max_issues: int = 20


def run(
    store: Store,
    plugins: Plugins,
    project_id: str,
    request: DiagnoseRequest,
    now_ns: int,
    negative_signals: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the diagnosers over the window, store the packet, and return it.

    `negative_signals` is the rule for negative user signals (Settings.negative_signals(); defaults if None).
    """
    with fewer_collections():
        return _run(store, plugins, project_id, request, now_ns, negative_signals)


def _run(
    store: Store,
    plugins: Plugins,
    project_id: str,
    request: DiagnoseRequest,
    now_ns: int,
    negative_signals: dict[str, Any] | None,
) -> dict[str, Any]:
    """run(), with the collector's threshold already raised."""
    end_ns = request.until_ns or now_ns
    start_ns = max(end_ns - int(request.since_minutes * 60e9), 0)
    # Memoized: the diagnosers and the steps after them read each issue's traces, sessions, users and releases
    # from one grouped read of its records (docs/benchmarks.md#diagnosis-cost).
    window = Window(project_id, start_ns, end_ns, store.project(project_id)).memoized()
    options = {"min_count": request.min_count, "max_issues": request.max_issues, "since_minutes": request.since_minutes}
    options["negative_signals"] = dict(negative_signals or {})
    found, errors, ran, notes = _run_diagnosers(plugins, window, options, request.diagnosers)
    # Issues people merged are folded into the issue they were merged into before anything counts them.
    folded = {id(f.issue): f for f in merges.fold(window, found)}  # by identity: fingerprints may repeat
    found = [f.issue for f in folded.values()]
    kept = sorted(
        (i for i in found if i.count >= request.min_count), key=lambda i: (-i.impact, -i.count, i.fingerprint)
    )
    notes += _under_min_count(found, request.min_count)
    truncated = len(kept) > request.max_issues
    kept = kept[: request.max_issues]
    counts = window.counts_by_type()
    ids = [(issue_id(project_id, i.fingerprint), i) for i in kept]
    signals = attribute(window, NegativeRule.from_options(negative_signals), context=False)
    issues = [
        {**_issue_json(project_id, i, window, request.since_minutes), "merged_from": folded[id(i)].merged_from}
        for i in kept
    ]
    groups: list[ReleaseGroup] = []  # every issue's release groups, for the packet's summary
    with Reads(window) as reads:
        # Who each issue reached, its causes across traces, its telling attributes and its releases are independent
        # reads of the window: on PostgreSQL the first two run beside the others (docs/benchmarks.md). Each writes
        # its own keys of the issues.
        reached = reads.start(impacts, window, ids, signals)
        caused = reads.start(link, window, issues)  # root causes across traces: one group per cause
        annotate(window, issues)  # telling attribute values and few-valued identifiers, in stats and plans
        for issue in issues:
            issue["releases"] = _releases(window, issue["selector"], groups)
        issue_impacts, impact_summary = reached.result()
        cause_groups = caused.result()
    for issue, diagnosed, impact in zip(issues, kept, issue_impacts, strict=True):
        issue["impact"] = impact
        issue["severity"], issue["severity_reason"] = severity(diagnosed, impact)
    regression.annotate(window, issues)  # back after a fix held: the earlier packet, verdict, releases
    for issue in issues:
        # The issue's own distinct sessions and users (not its evidence sample's), counted in SQL.
        issue["stats"]["session_count"] = _distinct(window, issue["selector"], "session_id")
        issue["stats"]["user_count"] = _distinct(window, issue["selector"], "user_id")
    packet_id = "pkt_" + secrets.token_hex(12)
    packet: dict[str, Any] = {
        "packet_id": packet_id,
        "project_id": project_id,
        "tenant_id": project_id,
        "source": "loopkit",
        "status": "ready_for_issue_diagnosis" if kept else "observe_more",
        "since_minutes": request.since_minutes,
        "window": {"start": rfc3339(window.start_ns), "end": rfc3339(window.end_ns)},
        "window_ns": {"start": window.start_ns, "end": window.end_ns},  # exact, for verification
        "telemetry_read": sum(counts.values()),
        "failures": sum(counts.get(t, 0) for t in FAILURE_TYPES),
        "approval_required": True,
        "approval_reason": APPROVAL_REASON,
        "created_at": rfc3339(now_ns),
        "created_ns": now_ns,
        "min_count": request.min_count,
        "max_issues": request.max_issues,
        "truncated": truncated,
        "diagnosers": ran,
        "diagnoser_errors": errors,
        "impact": impact_summary,
        # Why the diagnosers raised nothing where they looked (too little data, under min_count, ...).
        "diagnoser_notes": notes,
        "issues": issues,
    }
    # The issues' records per release, from the per-issue counts: a grouping of the whole window cost a quarter
    # of a 100k-record diagnosis (docs/benchmarks.md).
    packet["releases"] = release_summary(merge_releases(groups))
    packet["groups"] = cause_groups
    if not kept:
        packet["observe_more"] = _observe_more(notes, ran, errors)
    tracked = [_tracked(project_id, i, folded[id(i)]) for i in kept]
    # The merged issues found keep their own tracking (own selector, own first and last seen) beside the union's.
    tracked += [
        _tracked(project_id, member, None)
        for i in kept
        for member in folded[id(i)].found
        if member.fingerprint != i.fingerprint
    ]
    save_diagnosis(window.engine, packet, tracked)
    # Answer exactly what GET /v1/packets/{id} will read back (approval state, verifications).
    stored = get_packet(window.engine, packet_id)
    assert stored is not None
    return stored


def _tracked(project_id: str, issue: Issue, folded: merges.Folded | None) -> dict[str, Any]:
    """An issue's row for the issue tracking; a merged issue keeps its root's own selector (the union is derived)."""
    selector = issue.selector
    if folded is not None and folded.merged_from:
        own = next((i for i in folded.found if i.fingerprint == issue.fingerprint), None)
        selector = own.selector if own is not None else None  # None: keep the tracked one
    return {
        "fingerprint": issue.fingerprint,
        "issue_id": issue_id(project_id, issue.fingerprint),
        "diagnoser": issue.diagnoser,
        "signal_type": issue.signal_type,
        "title": issue.title,
        "template": issue.template,
        "selector": selector,
        "first_seen_ns": issue.first_seen_ns,
        "last_seen_ns": issue.last_seen_ns,
    }


def _distinct(window: Window, selector: dict[str, Any], column: str) -> int:
    """How many distinct non-empty values of a column an issue's records carry (counted up to MAX_DISTINCT + 1)."""
    return window.count_values(selector, column, MAX_DISTINCT + 1)


def issue_id(project_id: str, fingerprint: str) -> str:
    """An issue's stable, project-scoped ID."""
    return "iss_" + hashlib.blake2b(f"{project_id}/{fingerprint}".encode(), digest_size=10).hexdigest()


def _run_diagnosers(
    plugins: Plugins, window: Window, options: dict[str, Any], only: tuple[str, ...] | None
) -> tuple[list[Issue], list[dict[str, str]], list[str], list[dict[str, Any]]]:
    # Each diagnoser gets its own copy of the options: one cannot change what the next one reads. The copy's
    # `notes` list is where it says why it raised nothing somewhere; the factory runs once per diagnoser called.
    made: list[list[Any]] = []

    def arguments() -> dict[str, Any]:
        made.append([])
        return {"window": window, "options": {**options, "notes": made[-1]}}

    calls = plugins.call_each("diagnose", arguments, only, _checked_issues)
    found: list[Issue] = []
    for name, issues in calls.answers:
        log.debug("diagnoser %s: %d issue(s)", name, len(issues))
        for issue in issues:
            issue.diagnoser = name
            found.append(issue)
    notes = [note for name, raw in zip(calls.called, made, strict=True) for note in _checked_notes(name, raw)]
    return found, [error.as_json("diagnoser") for error in calls.errors], calls.called, notes


def _checked_notes(diagnoser: str, raw: list[Any]) -> list[dict[str, Any]]:
    """A diagnoser's notes as the packet stores them: at most MAX_NOTES, plain strings, bounded."""
    out = []
    for note in raw:
        if not isinstance(note, dict) or not isinstance(note.get("reason"), str):
            continue  # a malformed note is dropped, never fatal: notes explain, they do not decide
        where = note.get("where")
        out.append(
            {
                "diagnoser": diagnoser,
                "where": where[:NOTE_CHARS] if isinstance(where, str) else None,
                "reason": note["reason"][:NOTE_CHARS],
                "needs": note["needs"][:NOTE_CHARS] if isinstance(note.get("needs"), str) else None,
            }
        )
    if len(out) > MAX_NOTES:
        more = len(out) - MAX_NOTES + 1
        out = out[: MAX_NOTES - 1] + [
            {"diagnoser": diagnoser, "where": None, "reason": f"and {more} more note(s) not shown", "needs": None}
        ]
    return out


def _under_min_count(found: list[Issue], min_count: int) -> list[dict[str, Any]]:
    """A note per diagnoser whose issues were all or partly under min_count (the largest named)."""
    out = []
    by_diagnoser: dict[str, list[Issue]] = {}
    for issue in found:
        if issue.count < min_count:
            by_diagnoser.setdefault(issue.diagnoser, []).append(issue)
    for name, dropped in sorted(by_diagnoser.items()):
        largest = max(dropped, key=lambda i: (i.count, i.fingerprint))
        out.append(
            {
                "diagnoser": name,
                "where": largest.title[:NOTE_CHARS],
                "reason": f"{len(dropped)} candidate issue(s) under min_count {min_count}; the largest has "
                f"{largest.count} record(s)",
                "needs": f"{min_count - largest.count} more record(s) of it, or a lower min_count",
            }
        )
    return out


def _observe_more(notes: list[dict[str, Any]], ran: list[str], errors: list[dict[str, str]]) -> dict[str, Any]:
    """What an observe_more packet lacks: each diagnoser's reasons, and what more data would let it decide."""
    needs = list(dict.fromkeys(n["needs"] for n in notes if n["needs"]))[:MAX_NOTES]
    reason = (
        f"{len(ran)} diagnoser(s) ran ({', '.join(ran) or 'none'})"
        + (f", {len(errors)} failed" if errors else "")
        + f"; none raised an issue. {len(notes)} note(s) say why."
    )
    return {"reason": reason, "needs": needs}


def _checked_issues(answer: Any) -> list[Issue]:
    issues = list(answer or [])
    for issue in issues:
        check_issue(issue)
    return issues


def check_issue(issue: Any) -> None:
    """Raise TypeError or ValueError unless a diagnoser's answer can be stored, sorted and served as it is."""
    if not isinstance(issue, Issue):
        raise TypeError(f"diagnose returned {type(issue).__name__}, not loopkit_core.model.Issue")
    if not isinstance(issue.fingerprint, str) or not 0 < len(issue.fingerprint) <= 40:
        raise ValueError("Issue.fingerprint must be a string of 1 to 40 characters")
    if not isinstance(issue.title, str):
        raise TypeError("Issue.title must be a string")
    if issue.signal_type not in ISSUE_SIGNAL_TYPES:
        raise ValueError(f"Issue.signal_type must be one of {', '.join(ISSUE_SIGNAL_TYPES)}")
    if issue.severity not in SEVERITIES:
        raise ValueError(f"Issue.severity must be one of {', '.join(SEVERITIES)}")
    for name in ("count", "first_seen_ns", "last_seen_ns"):
        value = getattr(issue, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"Issue.{name} must be a non-negative int")
    if isinstance(issue.impact, bool) or not isinstance(issue.impact, int | float):
        raise TypeError("Issue.impact must be a number")
    if not isinstance(issue.selector, (dict, *SELECTOR_TYPES)):
        raise TypeError("Issue.selector must be a dict or a typed selector (loopkit_core.selectors)")
    issue.selector = selector_json(issue.selector)  # a typed selector is stored in its tagged JSON form
    selector_condition(issue.selector)  # a selector GET /v1/telemetry?issue= could not run is refused here
    if not isinstance(issue.evidence, list) or not isinstance(issue.traces, list):
        raise TypeError("Issue.evidence and Issue.traces must be lists of strings")
    if not all(isinstance(i, str) for i in [*issue.evidence, *issue.traces]):
        raise TypeError("Issue.evidence and Issue.traces must be lists of strings")
    orjson.dumps(issue)  # everything in the packet must be JSON (orjson.JSONEncodeError is a TypeError)


def packet_issue(project_id: str, issue: Issue, window: Window, since_minutes: float) -> dict[str, Any]:
    """A checked issue as a packet stores it, impact included (for loopkit_core.lab, which hands it to verifiers)."""
    iid = issue_id(project_id, issue.fingerprint)
    signals = attribute(window, NegativeRule.from_options({}), context=False)
    [impact], _ = impacts(window, [(iid, issue)], signals)
    found = _issue_json(project_id, issue, window, since_minutes)
    found["releases"] = _releases(window, issue.selector, [])
    found["impact"] = impact
    found["severity"], found["severity_reason"] = severity(issue, impact)
    return found


def _releases(window: Window, selector: dict[str, Any], groups: list[ReleaseGroup]) -> dict[str, Any]:
    """An issue's `releases` summary ("introduced in": the first release seen); its groups are added to `groups`."""
    releases = window.releases(selector)
    groups.extend(releases)
    return release_summary(releases)


def _issue_json(project_id: str, issue: Issue, window: Window, since_minutes: float) -> dict[str, Any]:
    """An issue as the packet stores it, but for what is read after: its impact, the severity that follows from it
    and its releases (None here, in their places: clients may show the keys in the order they come)."""
    evidence = issue.evidence[:MAX_EVIDENCE]
    iid = issue_id(project_id, issue.fingerprint)
    return {
        "issue_id": iid,
        "fingerprint": issue.fingerprint,
        "title": issue.title,
        "severity": None,
        "severity_diagnoser": issue.severity,
        "severity_reason": None,
        "impact": None,
        "signal_type": issue.signal_type,
        "diagnoser": issue.diagnoser,
        "count": issue.count,
        "first_seen": rfc3339(issue.first_seen_ns),
        "last_seen": rfc3339(issue.last_seen_ns),
        "evidence": evidence,
        "evidence_ids": list(evidence),
        "evidence_sampled": len(evidence) < issue.count,
        "traces": issue.traces[:MAX_EVIDENCE],
        # The packet's exact window: until in unix ns (rfc3339 keeps only microseconds).
        "records_url": f"/v1/telemetry?issue={iid}&since_minutes={_minutes(since_minutes)}&until={window.end_ns}",
        "eval_candidate": issue.eval_candidate,
        "eval": issue.eval,
        "patch_plan": issue.patch_plan,
        "next_action": issue.next_action,
        "stats": issue.stats,
        "template": issue.template,
        "selector": issue.selector,
        "releases": None,
    }


def _minutes(since_minutes: float) -> str:
    # Short when exact ("60"), else the shortest text that parses back to the same float.
    text = f"{since_minutes:g}"
    return text if float(text) == since_minutes else repr(since_minutes)
