"""The operator's project operations: each opens the store of a Settings, acts, closes it and returns plain dicts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loopkit_core import projects, purge, retention
from loopkit_core.model import rfc3339
from loopkit_core.settings import Settings
from loopkit_core.signup import signup_shape
from loopkit_core.store.engines import Store


class UnknownProject(LookupError):
    """No live project has this ID."""

    def __init__(self, project_id: str) -> None:
        super().__init__(f"no project {project_id!r}")
        self.project_id = project_id


def create_project(settings: Settings, name: str) -> dict[str, Any]:
    """Create an uncapped, permanent project; its keys and recovery code in the signup shape (shown once)."""
    with _store(settings) as store:
        created = projects.create_project(store.control, name)
    return signup_shape(settings, created)


def list_projects(settings: Settings) -> list[dict[str, Any]]:
    """Every live project, oldest first, without secrets; times in RFC 3339."""
    with _store(settings) as store:
        return [_readable(p) for p in projects.list_projects(store.control)]


def show_project(settings: Settings, project_id: str) -> dict[str, Any]:
    """One project with its keys' display prefixes and its effective retention; UnknownProject if there is none."""
    with _store(settings) as store:
        project = projects.get_project(store.control, project_id)
        custom = retention.overrides(store.control).get(project_id)
    if project is None:
        raise UnknownProject(project_id)
    shown = _readable(project)
    shown["retention_days"] = settings.retention_days if custom is None else custom
    shown["retention_source"] = "server default" if custom is None else "project"
    return shown


def set_retention(settings: Settings, project_id: str, days: float | None) -> dict[str, Any]:
    """Keep a project's records `days` days (0: forever; None: the server's setting); the effective period."""
    with _store(settings) as store:
        try:
            retention.set_retention(store.control, project_id, days)
        except LookupError:
            raise UnknownProject(project_id) from None
        effective = retention.retention_days(store.control, project_id, settings.retention_days)
    source = "server default" if days is None else "project"
    return {"ok": True, "project_id": project_id, "retention_days": effective, "source": source}


def promote(settings: Settings, project_id: str) -> dict[str, Any]:
    """Make a project permanent (no quota, no expiry; keys unchanged); the project."""
    with _store(settings) as store:
        try:
            project = projects.promote(store.control, project_id)
        except LookupError:
            raise UnknownProject(project_id) from None
    return _readable(project)


def rotate_keys(settings: Settings, project_id: str) -> dict[str, Any]:
    """Revoke every key and the recovery code of a project and mint new ones, in the signup shape (shown once)."""
    with _store(settings) as store:
        try:
            rotated = projects.rotate_keys(store.control, project_id)
        except LookupError:
            raise UnknownProject(project_id) from None
    return signup_shape(settings, rotated)


def delete_project(settings: Settings, project_id: str) -> None:
    """Revoke a project's keys and delete its records for good; UnknownProject if there is none."""
    with _store(settings) as store:
        found = purge.delete_project(store, project_id)
    if not found:
        raise UnknownProject(project_id)


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    store = Store(settings)
    try:
        yield store
    finally:
        store.close()


def _readable(project: dict[str, Any]) -> dict[str, Any]:
    """Unix-second times as RFC 3339, as the HTTP API shows them."""
    times = {k: rfc3339(project[k] * 1_000_000_000) for k in ("created_at", "expires_at") if project.get(k)}
    keys = [{**k, "created_at": rfc3339(k["created_at"] * 1_000_000_000)} for k in project.get("keys", [])]
    return {**project, **times, **({"keys": keys} if "keys" in project else {})}
