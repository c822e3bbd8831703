"""An issue's occurrences over time: counted per time bucket in SQL, and laid out as a small SVG bar chart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from loopkit_core.model import rfc3339
from loopkit_core.store.records import selector_condition
from loopkit_core.store.schema import records

BUCKETS = 30
WIDTH = 300
HEIGHT = 60


@dataclass(frozen=True)
class Bar:
    """One bucket of the chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    count: int
    start: str


@dataclass(frozen=True)
class Series:
    """Occurrences of one issue per equal time bucket of [start_ns, end_ns)."""

    start_ns: int
    end_ns: int
    bucket_ns: int
    counts: list[int]
    marker_ns: int | None = None  # e.g. the end of the packet's window

    def as_json(self) -> dict[str, Any]:
        """The series for the dashboard's JSON answer."""
        return {
            "start": rfc3339(self.start_ns),
            "end": rfc3339(self.end_ns),
            "bucket_seconds": self.bucket_ns / 1e9,
            "counts": self.counts,
            "total": sum(self.counts),
        }

    def bars(self) -> list[Bar]:
        """The bars, scaled so the tallest fills the chart; a bucket with any occurrence is at least 2 units tall."""
        peak = max(self.counts, default=0) or 1
        slot = WIDTH / len(self.counts)
        out = []
        for i, count in enumerate(self.counts):
            height = 0.0 if count == 0 else max(2.0, (HEIGHT - 4) * count / peak)
            start = rfc3339(self.start_ns + i * self.bucket_ns)
            out.append(Bar(round(i * slot + 1, 2), round(HEIGHT - height, 2), round(slot - 2, 2), height, count, start))
        return out

    def marker_x(self) -> float | None:
        """Where the marker falls on the x axis, when it is inside the chart."""
        if self.marker_ns is None or not self.start_ns < self.marker_ns < self.end_ns:
            return None
        return round(WIDTH * (self.marker_ns - self.start_ns) / (self.end_ns - self.start_ns), 2)


def occurrences(
    engine: Engine, selector: dict[str, Any], start_ns: int, end_ns: int, marker_ns: int | None = None
) -> Series:
    """Count the selector's records per bucket of [start_ns, end_ns) in one grouped query.

    The chart starts a little before the first occurrence in the range (not at `start_ns`), so a burst at the end
    of a long window still spreads over several bars.
    """
    c = records.c
    condition = selector_condition(selector)
    with engine.connect() as conn:
        first = conn.execute(select(func.min(c.ts_ns)).where(c.ts_ns >= start_ns, c.ts_ns < end_ns, condition)).scalar()
    if first is not None:
        start_ns = max(start_ns, int(first) - (end_ns - int(first)) // (BUCKETS - 1))
    end_ns = max(end_ns, start_ns + BUCKETS)
    bucket_ns = -(-(end_ns - start_ns) // BUCKETS)  # ceiling, so BUCKETS buckets cover the whole range
    bucket = ((c.ts_ns - start_ns) // bucket_ns).label("bucket")
    stmt = select(bucket, func.count()).where(c.ts_ns >= start_ns, c.ts_ns < end_ns, condition).group_by(bucket)
    counts = [0] * BUCKETS
    with engine.connect() as conn:
        for index, count in conn.execute(stmt).all():
            counts[min(int(index), BUCKETS - 1)] += int(count)
    return Series(start_ns, end_ns, bucket_ns, counts, marker_ns)
