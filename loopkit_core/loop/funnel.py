"""The loop funnel: median times from diagnosis to approval, merge and first held verdict; verified fixes per week."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any


def funnel(diagnosed: dict[str, int], approved: dict[str, int], merged: dict[str, int], held: dict[str, int]) -> dict:
    """The funnel over every recorded loop (each dict maps packet_id to unix ns of that milestone)."""
    return {
        "loops": len(diagnosed),
        "to_approval": _median_since(diagnosed, approved),
        "to_merge": _median_since(diagnosed, merged),
        "to_first_held": _median_since(diagnosed, held),
        "verified_fixes_per_week": per_week(held.values()),
    }


def per_week(instants: Any) -> list[dict[str, Any]]:
    """How many instants (unix ns) fall in each ISO week (`2026-W49`), oldest week first."""
    counts: dict[str, int] = {}
    for ns in instants:
        year, week, _ = datetime.fromtimestamp(ns / 1e9, UTC).isocalendar()
        key = f"{year}-W{week:02d}"
        counts[key] = counts.get(key, 0) + 1
    return [{"week": week, "count": counts[week]} for week in sorted(counts)]


def _median_since(start: dict[str, int], end: dict[str, int]) -> dict[str, Any]:
    # A milestone before its diagnosis cannot happen through LoopKit; clamp at 0 rather than report negative time.
    spans = [max(end[p] - start[p], 0) / 1e9 for p in end if p in start]
    return {"median_seconds": statistics.median(spans) if spans else None, "count": len(spans)}
