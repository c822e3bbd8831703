"""Deleting projects: on the operator's command, and for sandboxes past expiry plus the grace period."""

from __future__ import annotations

import logging
from collections.abc import Callable

from loopkit_core.jobs import PeriodicJob
from loopkit_core.projects import expired_before, mark_deleted
from loopkit_core.store.engines import Store

log = logging.getLogger("loopkit.purge")


def delete_project(store: Store, project_id: str, now: float | None = None) -> bool:
    """Revoke a project's keys, mark it deleted and remove its records; False if there was none."""
    found = mark_deleted(store.control, project_id, now)
    if found:
        store.drop(project_id)
    return found


def purge_expired(store: Store, now: float, grace_seconds: float) -> list[str]:
    """Delete every sandbox that expired at least `grace_seconds` before `now`; returns their IDs."""
    purged = [pid for pid in expired_before(store.control, now - grace_seconds) if delete_project(store, pid, now)]
    if purged:
        log.info("purged %d expired project(s): %s", len(purged), ", ".join(purged))
    return purged


class Purger(PeriodicJob):
    """Runs purge_expired every `interval` seconds (the first pass after one interval) until stopped."""

    def __init__(self, store: Store, clock: Callable[[], float], interval: float, grace_seconds: float) -> None:
        super().__init__("loopkit-purger", interval, lambda _stop: purge_expired(store, clock(), grace_seconds))
