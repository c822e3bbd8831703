"""Root causes across traces: issues whose records share traces are linked caller -> callee, one group per cause.

A fault shows up in every caller up the trace: a payment tool that times out also fails its `POST /checkout`,
and a slow `SELECT orders` makes its `GET /orders` slow. Each of those is a true issue with its own exact
count, selector and verification, but they are one task. After the diagnosers have run, this module:

1. reads the trace IDs of each issue's records (one grouped query per issue, at most MAX_TRACES each);
2. links every two issues that share traces (`related` on both), and, for the pairs sharing most, reads the
   span trees of up to MAX_TREES shared traces to tell the direction: the issue whose spans are ancestors of
   the other's is the caller, the other the callee (`role`, as seen from the issue that lists the link);
3. makes an issue the symptom of its callee when they share at least MIN_SHARE of the caller's traces, and
   follows callees down to the deepest one: that issue is the `probable_cause` and lists its `symptoms`;
4. answers the packet's `groups`: one per cause (an unrelated issue is a group of one), in packet order.

Cost: one trace-ID query per issue, one query per issue for its records in the shared traces of its pairs, and one
read of the span trees of the shared traces of at most MAX_PAIRS pairs, MAX_TREES traces each (one read per pair
when those trees hold more than TREE_ROWS spans).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from loopkit_core.window import SpanRef, Window

MAX_TRACES = 1000  # trace IDs read per issue
MAX_PAIRS = 100  # issue pairs whose direction is looked up (those sharing most traces first)
MAX_TREES = 20  # shared traces whose span trees are read per pair
MIN_SHARE = 0.5  # share of the caller's traces the callee must be in for the caller to be its symptom
MEMBERS_LIMIT = 1000  # an issue's records read per pair (window.trace_members' default)
MEMBER_ROWS = 20_000  # an issue's records in all its pairs' shared traces read at once; more: per pair
TREE_ROWS = 20_000  # span tree rows of every pair's shared traces read at once; more: each pair reads its own
TREE_LIMIT = 5000  # span tree rows per pair (window.span_tree's default)


def link(window: Window, issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `related`, `probable_cause`, `cause_issue_id` and `symptoms` to the packet's issues; return `groups`."""
    traces = {i["issue_id"]: _trace_ids(window, i["selector"]) for i in issues}
    by_trace: dict[str, list[str]] = defaultdict(list)
    for iid, ids in traces.items():
        for trace_id in ids:
            by_trace[trace_id].append(iid)
    shared: Counter[tuple[str, str]] = Counter()
    for members in by_trace.values():
        for n, a in enumerate(members):
            for b in members[n + 1 :]:
                shared[(a, b)] += 1
    selectors = {i["issue_id"]: i["selector"] for i in issues}
    roles: dict[tuple[str, str], tuple[str, str | None]] = {}  # (a, b) -> (b's role as seen from a, example trace)
    commons = {
        (a, b): sorted(traces[a] & traces[b])[:MAX_TREES]
        for (a, b), _ in sorted(shared.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_PAIRS]
    }
    members = _members(window, selectors, commons)
    trees = _trees(window, commons)
    for (a, b), common in commons.items():
        tree = _tree_of(window, trees, common)
        roles[(a, b)] = _direction(window, members, tree, (a, selectors[a]), (b, selectors[b]), common)
    for issue in issues:
        issue["related"] = []
    index = {i["issue_id"]: i for i in issues}
    callee_of: dict[str, list[tuple[int, str]]] = defaultdict(list)  # caller -> [(shared, callee)]
    for (a, b), count in sorted(shared.items()):
        role, example = roles.get((a, b), ("unknown", None))
        back = {"callee": "caller", "caller": "callee"}.get(role, role)
        index[a]["related"].append(_link(index[b], count, role, example))
        index[b]["related"].append(_link(index[a], count, back, example))
        if role == "callee":
            callee_of[a].append((count, b))
        elif role == "caller":
            callee_of[b].append((count, a))
    for issue in issues:
        issue["related"].sort(key=lambda r: (-r["shared_traces"], r["issue_id"]))
    cause = {iid: _cause(iid, traces, callee_of) for iid in index}
    groups: dict[str, list[str]] = {}
    for issue in issues:  # packet order: the group of the most important issue comes first
        groups.setdefault(cause[issue["issue_id"]], [])
    for issue in issues:
        iid = issue["issue_id"]
        if cause[iid] != iid:
            groups[cause[iid]].append(iid)
    for issue in issues:
        iid = issue["issue_id"]
        issue["probable_cause"] = cause[iid] == iid and bool(groups.get(iid))
        issue["cause_issue_id"] = None if cause[iid] == iid else cause[iid]
        issue["symptoms"] = groups.get(iid, []) if cause[iid] == iid else []
    return [
        {
            "cause_issue_id": root,
            "issue_ids": [root, *symptoms],
            "symptom_issue_ids": symptoms,
            "shared_traces": len(set.intersection(*(traces[i] for i in [root, *symptoms]))) if symptoms else 0,
        }
        for root, symptoms in groups.items()
    ]


def _trace_ids(window: Window, selector: dict[str, Any]) -> set[str]:
    return {g.value for g in window.groups(selector, by="trace_id", limit=MAX_TRACES) if g.value}


def _link(other: dict[str, Any], shared: int, role: str, example: str | None) -> dict[str, Any]:
    return {
        "issue_id": other["issue_id"],
        "title": other["title"],
        "shared_traces": shared,
        "role": role,
        "example_trace_id": example,
    }


def _members(
    window: Window, selectors: dict[str, dict[str, Any]], commons: dict[tuple[str, str], list[str]]
) -> dict[str, list[SpanRef] | None]:
    """Each issue's records in all the shared traces of its pairs: one read per issue, not two per pair.

    None for an issue with more than MEMBER_ROWS such records: its pairs then read their own (bounded) members.
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for (a, b), common in commons.items():
        wanted[a].update(common)
        wanted[b].update(common)
    out: dict[str, list[SpanRef] | None] = {}
    for iid, trace_ids in wanted.items():
        spans = window.trace_members(selectors[iid], sorted(trace_ids), limit=MEMBER_ROWS + 1)
        out[iid] = spans if len(spans) <= MEMBER_ROWS else None
    return out


def _trees(window: Window, commons: dict[tuple[str, str], list[str]]) -> dict[str, list[SpanRef]] | None:
    """The span trees of every pair's shared traces, by trace, from one read; None past TREE_ROWS rows."""
    wanted = sorted({trace_id for common in commons.values() for trace_id in common})
    if not wanted:
        return {}
    spans = window.span_tree(wanted, limit=TREE_ROWS + 1)
    return _by_trace(spans) if len(spans) <= TREE_ROWS else None


def _tree_of(window: Window, trees: dict[str, list[SpanRef]] | None, trace_ids: list[str]) -> list[SpanRef]:
    """What window.span_tree(trace_ids) answers, cut from the one read of all pairs' trees when it is whole."""
    if trees is None:
        return window.span_tree(trace_ids, limit=TREE_LIMIT)
    # Same order (trace_id, record_id) as the query's, and the same cut.
    return [span for trace_id in sorted(set(trace_ids)) for span in trees.get(trace_id, ())][:TREE_LIMIT]


def _members_in(
    window: Window, members: dict[str, list[SpanRef] | None], issue: tuple[str, dict[str, Any]], trace_ids: list[str]
) -> list[SpanRef]:
    """What window.trace_members(selector, trace_ids) answers, cut from the issue's one read when it is whole."""
    spans = members.get(issue[0])
    if spans is None:
        return window.trace_members(issue[1], trace_ids)
    wanted = set(trace_ids)
    # Same order (trace_id, record_id) as the query's, and the same cut at its default limit.
    return [s for s in spans if s.trace_id in wanted][:MEMBERS_LIMIT]


def _direction(
    window: Window,
    members: dict[str, list[SpanRef] | None],
    tree: list[SpanRef],
    a: tuple[str, dict[str, Any]],
    b: tuple[str, dict[str, Any]],
    trace_ids: list[str],
) -> tuple[str, str | None]:
    """b's role relative to a in their shared traces: callee, caller, same_span or unordered; and an example trace."""
    parent = {(s.trace_id, s.span_id): s.parent_span_id for s in tree}
    ours = _by_trace(_members_in(window, members, a, trace_ids))
    theirs = _by_trace(_members_in(window, members, b, trace_ids))
    votes: Counter[str] = Counter()
    example: dict[str, str] = {}
    for trace_id in trace_ids:
        mine, other = ours.get(trace_id, []), theirs.get(trace_id, [])
        if not mine or not other:
            continue
        role = "unordered"
        if {s.span_id for s in mine} & {s.span_id for s in other}:
            role = "same_span"  # one span is a record of both issues (e.g. slow and failed)
        elif any(_descends(s, {m.span_id for m in mine}, parent) for s in other):
            role = "callee"
        elif any(_descends(s, {o.span_id for o in other}, parent) for s in mine):
            role = "caller"
        votes[role] += 1
        example.setdefault(role, trace_id)
    if not votes:
        return "unknown", trace_ids[0] if trace_ids else None
    role = max(votes, key=lambda r: (votes[r], r))
    return role, example[role]


def _by_trace(spans: list[SpanRef]) -> dict[str, list[SpanRef]]:
    out: dict[str, list[SpanRef]] = defaultdict(list)
    for span in spans:
        if span.trace_id:
            out[span.trace_id].append(span)
    return out


def _descends(span: SpanRef, ancestors: set[str | None], parent: dict[tuple[Any, Any], str | None]) -> bool:
    """Whether one of `ancestors` is above `span` in its trace (the walk is bounded by the tree's size)."""
    current, seen = span.parent_span_id, 0
    while current and seen <= len(parent):
        if current in ancestors:
            return True
        current = parent.get((span.trace_id, current))
        seen += 1
    return False


def _cause(iid: str, traces: dict[str, set[str]], callee_of: dict[str, list[tuple[int, str]]]) -> str:
    """Follow an issue to the callee it mostly propagates, and on down, to the deepest one."""
    seen = {iid}
    current = iid
    while True:
        options = [(n, c) for n, c in callee_of.get(current, []) if n >= MIN_SHARE * len(traces[current])]
        if not options:
            return current
        _, nxt = max(options, key=lambda nc: (nc[0], -len(traces[nc[1]]), nc[1]))
        if nxt in seen:
            return current
        seen.add(nxt)
        current = nxt
