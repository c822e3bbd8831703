"""Per-project engines are bounded (max_open_projects): the least recently used is closed, and reopens on use."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest
from conftest import Project, make_settings, new_project
from sqlalchemy import func, select

from loopkit_core.server import in_thread
from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.schema import records

BOUND = 4


def open_fds() -> int:
    """File descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


def write(client: httpx.Client, project: Project, count: int, name: str = "e") -> None:
    """Ingest `count` events into a project."""
    body = {"records": [{"type": "event", "name": name} for _ in range(count)]}
    response = client.post("/v1/traces", json=body, headers=project.auth("producer"))
    assert response.status_code == 200 and response.json()["accepted"] == count, response.text


def read(client: httpx.Client, project: Project) -> int:
    """How many records a project reads back."""
    response = client.get("/v1/telemetry", params={"limit": 1000}, headers=project.auth("agent"))
    assert response.status_code == 200, response.text
    return len(response.json()["records"])


def test_file_descriptors_stay_bounded_and_evicted_projects_still_work(tmp_path: Path):
    settings = make_settings(tmp_path / "data", max_open_projects=BOUND)
    with in_thread(settings) as running, httpx.Client(base_url=running.http_url, timeout=30) as client:
        store = running.app.store
        projects = [new_project(running, f"p{i}") for i in range(10 * BOUND)]
        for i, project in enumerate(projects[:BOUND]):
            write(client, project, i + 1)
            assert read(client, project) == i + 1
        full = open_fds()
        for i, project in enumerate(projects[BOUND:], start=BOUND):
            write(client, project, i + 1)
            assert read(client, project) == i + 1
            assert store.open_projects() == BOUND
        # 36 more projects written and read, yet no more descriptors than with the first 4 (SQLite: ~3 per
        # pooled connection; PostgreSQL: one shared pool).
        assert open_fds() <= full + 2, (full, open_fds())
        # Every evicted project reopens: its records are all there, and it takes more.
        for i, project in enumerate(projects):
            assert read(client, project) == i + 1
            write(client, project, 1, "again")
            assert read(client, project) == i + 2
        assert store.open_projects() == BOUND
        assert open_fds() <= full + 2, (full, open_fds())


def test_a_connection_in_use_survives_the_eviction_of_its_engine(tmp_path: Path):
    store = Store(make_settings(tmp_path / "data", max_open_projects=1))
    try:
        first, second = "first-00000001", "second-0000002"
        engine = store.project(first)
        with engine.begin() as conn:
            conn.execute(records.delete())  # a write, so the file exists
        with engine.connect() as conn:
            store.project(second)  # evicts `first` while this connection is checked out
            assert store.open_projects() == 1
            assert conn.execute(select(func.count()).select_from(records)).scalar() == 0
        # The evicted engine object itself still works (a request that fetched it before the eviction).
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(records)).scalar() == 0
        assert store.project(first) is not engine
        assert store.open_projects() == 1
    finally:
        store.close()


def test_concurrent_ingest_into_more_projects_than_the_bound(tmp_path: Path):
    settings = make_settings(tmp_path / "data", max_open_projects=2, rate_limit_per_hour=1000)
    with in_thread(settings) as running:
        projects = [new_project(running, f"c{i}") for i in range(8)]
        errors: list[str] = []

        def send(offset: int) -> None:
            with httpx.Client(base_url=running.http_url, timeout=60) as own:
                for round_ in range(5):
                    for project in projects[offset:] + projects[:offset]:
                        body = {"records": [{"type": "event", "name": f"{offset}-{round_}"}]}
                        answer = own.post("/v1/traces", json=body, headers=project.auth("producer"))
                        if answer.status_code != 200:
                            errors.append(answer.text)
                        own.get("/v1/telemetry", params={"limit": 5}, headers=project.auth("agent"))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        with httpx.Client(base_url=running.http_url, timeout=30) as client:
            assert [read(client, p) for p in projects] == [4 * 5] * len(projects)
        assert running.app.store.open_projects() == 2


def test_bound_setting_from_the_environment():
    assert Settings().max_open_projects == 256
    assert Settings.from_env({"LOOPKIT_MAX_OPEN_PROJECTS": "3"}).max_open_projects == 3
    with pytest.raises(ValueError, match="^max_open_projects must be at least 1$"):
        Settings.from_env({"LOOPKIT_MAX_OPEN_PROJECTS": "0"})
