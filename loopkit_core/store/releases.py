"""Records per release: grouped by resource in SQL, each resource's service.version read from its stored body."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, Select, func, select

from loopkit_core.releases import ReleaseGroup, release_of
from loopkit_core.store.schema import records, resources


def resource_releases(conn: Connection, keys: set[str] | None = None) -> dict[str, str | None]:
    """resource_key -> release (service.version, or None) of every stored resource, or of `keys`."""
    query = select(resources.c.resource_key, resources.c.body)
    if keys is not None:
        query = query.where(resources.c.resource_key.in_(sorted(keys)))
    return {key: release_of(orjson.loads(body)) for key, body in conn.execute(query).all()}


def release_counts(condition: Any) -> Select[Any]:
    """(resource_key, count, first_ns, last_ns) of the records matching `condition`, one row per resource.

    Grouped by resource_key in SQL (a service instance's spans share one), so only one row per distinct resource
    comes back; rows stored before project migration 3 (resource JSON in the row, no key) count as no release.
    `releases_of_rows` merges the rows per release, so rows of several reads (SQLite's day tables) may repeat a key.
    """
    r = records.c
    return (
        select(r.resource_key, func.count(), func.min(r.ts_ns), func.max(r.ts_ns))
        .where(condition)
        .group_by(r.resource_key)
    )


def releases_of_rows(conn: Connection, rows: list[tuple[str | None, int, int, int]]) -> list[ReleaseGroup]:
    """(resource_key, count, first_ns, last_ns) rows, one per resource, merged per release, most records first."""
    releases = resource_releases(conn, {key for key, *_ in rows if key})
    merged: dict[str | None, list[int]] = {}
    for key, count, first, last in rows:
        release = releases.get(key) if key else None
        seen = merged.setdefault(release, [0, first, last])
        seen[0] += count
        seen[1], seen[2] = min(seen[1], first), max(seen[2], last)
    groups = [ReleaseGroup(release, count, first, last) for release, (count, first, last) in merged.items()]
    return sorted(groups, key=lambda g: (-g.count, g.release or ""))
