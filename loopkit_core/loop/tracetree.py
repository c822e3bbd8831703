"""A trace as a tree: spans in depth-first order with their depth, the critical path, each span's share of the root.

The tree is a flat list (parents before their children, siblings by start time) with `depth`, not nested objects:
a 10,000-deep chain stays one array that every JSON parser reads (orjson, for one, refuses nesting past 255).
A span whose parent is not among the spans read (lost, not sent, or past the bound) is a root, marked
`parent_missing`. The critical path is the chain of spans that bounds the root's end, as Jaeger computes it:
from the root's end, backwards, the child that ended last before the point reached, then its own path, then
the children that ended before that child started; children are clipped to their parent.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from loopkit_core.model import rfc3339

_END = itemgetter("end_ns")


def build(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The tree of `spans` (rows of store.traces.trace_spans, earliest first), the root and the critical path."""
    by_id = {s["span_id"]: s for s in spans if s["span_id"]}
    children: dict[str, list[dict[str, Any]]] = {}
    roots: list[dict[str, Any]] = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent and parent in by_id and parent != span["span_id"]:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    # The root is the longest of the top-level spans (normally the only one), the earliest on a tie.
    root = min(roots, key=lambda s: (-(s["end_ns"] - s["ts_ns"]), s["ts_ns"])) if roots else None
    ordered = _depth_first(roots, children, len(spans))
    critical = _critical_path(root, children) if root else set()
    root_ns = max(root["end_ns"] - root["ts_ns"], 0) if root else 0
    trace_start = min((s["ts_ns"] for s in spans), default=0)
    # Each span's start is `offset_ms` after the trace's `start` (one RFC 3339 time for the whole trace: formatting
    # one per span cost a third of a 10,000-span answer).
    out = []
    for span, depth in ordered:
        span_id = span["span_id"]
        record_id = span["record_id"]
        duration_ns = span["end_ns"] - span["ts_ns"]
        share = (duration_ns / root_ns if duration_ns < root_ns else 1.0) if duration_ns > 0 else 0.0
        out.append(
            {
                "record_id": record_id,
                "span_id": span_id,
                "parent_span_id": span["parent_span_id"],
                "depth": depth,
                "name": span["name"],
                "service": span["service"],
                "type": span["type"],
                "status": span["status"],
                "offset_ms": (span["ts_ns"] - trace_start) // 1000 / 1000,
                "duration_ms": round(span["duration_ms"], 3),
                "share_of_root": round(share, 4) if root_ns else None,
                "critical": record_id in critical,
                "parent_missing": depth == 0 and bool(span["parent_span_id"]),
                "children": len(children.get(span_id, ())) if span_id else 0,
                "session_id": span["session_id"],
            }
        )
    return {
        "start": rfc3339(trace_start) if spans else None,
        "root": root["record_id"] if root else None,
        "roots": len(roots),
        "duration_ms": round(root_ns / 1e6, 3),
        "spans": out,
        "critical_path": [s["record_id"] for s in spans if s["record_id"] in critical],
    }


def _depth_first(
    roots: list[dict[str, Any]], children: dict[str, list[dict[str, Any]]], count: int
) -> list[tuple[dict[str, Any], int]]:
    # Iterative (a deep chain would pass Python's recursion limit); `seen` guards against a parent cycle.
    out: list[tuple[dict[str, Any], int]] = []
    seen: set[str] = set()
    stack = [(span, 0) for span in reversed(roots)]
    while stack and len(out) < count:
        span, depth = stack.pop()
        if span["record_id"] in seen:
            continue
        seen.add(span["record_id"])
        out.append((span, depth))
        kids = children.get(span["span_id"])
        if kids:
            stack += [(child, depth + 1) for child in reversed(kids)]
    return out


def _critical_path(root: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> set[str]:
    on_path: set[str] = set()
    stack = [(root, root["end_ns"])]
    while stack:
        span, until = stack.pop()
        if span["record_id"] in on_path:
            continue
        on_path.add(span["record_id"])
        kids = children.get(span["span_id"])
        if not kids:
            continue
        cursor = span["end_ns"] if span["end_ns"] < until else until
        for child in sorted(kids, key=_END, reverse=True):
            # A child that starts at or after the point reached is not what the parent waited for.
            if child["ts_ns"] < cursor and child["end_ns"] > span["ts_ns"]:
                stack.append((child, cursor))
                cursor = child["ts_ns"]
    return on_path
