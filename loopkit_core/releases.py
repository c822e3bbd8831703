"""Releases: a record's `service.version` (resource), semantic-version order, and per-release summaries."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loopkit_core.model import rfc3339

RELEASE_ATTRIBUTE = "service.version"  # OpenTelemetry's resource attribute for the version of the service
MAX_RELEASE = 200  # characters of a release name in a request
MAX_LISTED = 50  # releases listed per summary (the largest by count); the rest are summed in `others`

# semver.org 2.0.0's own regular expression, with an optional leading "v" (as in git tags).
_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@dataclass(frozen=True)
class ReleaseGroup:
    """The records of one release (None: records whose resource has no service.version) in a window."""

    release: str | None
    count: int
    first_ns: int
    last_ns: int


def release_of(resource: dict[str, Any]) -> str | None:
    """A resource's release: its service.version as text, or None when it has none."""
    value = resource.get(RELEASE_ATTRIBUTE)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def semver_key(release: str | None) -> tuple | None:
    """A sort key in semantic-version precedence (build metadata ignored), or None when not a semantic version."""
    match = _SEMVER.match(release or "")
    if match is None:
        return None
    major, minor, patch, pre, _build = match.groups()
    if pre is None:  # a release ranks above its pre-releases
        return (int(major), int(minor), int(patch), (1,))
    # Numeric identifiers rank below alphanumeric ones and compare as numbers (semver.org, rule 11).
    ids = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), (0, *ids))


def counts_toward(release: str | None, fixed_in: str) -> bool:
    """Whether a record of `release` is traffic of the fix shipped in `fixed_in`: that release or a later one.

    "Later" only when both are semantic versions (1.10.0 follows 1.9.2; 1.5.0-rc.1 precedes 1.5.0); any other
    name counts only when it is exactly `fixed_in`.
    """
    if release is None:
        return False
    if release == fixed_in:
        return True
    key, fixed = semver_key(release), semver_key(fixed_in)
    return key is not None and fixed is not None and key >= fixed


def newest(releases: Iterable[ReleaseGroup]) -> str | None:
    """The newest of some releases: the highest semantic version if all are, else the one seen last."""
    named = [g for g in releases if g.release is not None]
    if not named:
        return None
    keys = [semver_key(g.release) for g in named]
    if all(k is not None for k in keys):
        return max(zip(keys, named, strict=True), key=lambda pair: pair[0])[1].release
    return max(named, key=lambda g: (g.first_ns, g.release or "")).release


def merge_releases(groups: Iterable[ReleaseGroup]) -> list[ReleaseGroup]:
    """Groups of the same release added up (counts summed, first and last seen widened)."""
    merged: dict[str | None, ReleaseGroup] = {}
    for g in groups:
        seen = merged.get(g.release)
        if seen is not None:
            first, last = min(seen.first_ns, g.first_ns), max(seen.last_ns, g.last_ns)
            g = ReleaseGroup(g.release, seen.count + g.count, first, last)
        merged[g.release] = g
    return sorted(merged.values(), key=lambda g: (-g.count, g.release or ""))


def summary(groups: list[ReleaseGroup]) -> dict[str, Any]:
    """The JSON `releases` of an issue or a packet: first and last release seen, and the count per release."""
    named = sorted((g for g in groups if g.release is not None), key=lambda g: (g.first_ns, g.release or ""))
    listed = sorted(named, key=lambda g: (-g.count, g.release or ""))[:MAX_LISTED]
    kept = {g.release for g in listed}
    return {
        "first": named[0].release if named else None,
        "last": max(named, key=lambda g: (g.last_ns, g.release or "")).release if named else None,
        "by_release": [
            {
                "release": g.release,
                "count": g.count,
                "first_seen": rfc3339(g.first_ns),
                "last_seen": rfc3339(g.last_ns),
            }
            for g in named
            if g.release in kept
        ],
        "others": sum(g.count for g in named if g.release not in kept),
        "without_release": sum(g.count for g in groups if g.release is None),
    }
