"""The collector's young-generation threshold is raised while a diagnosis runs, and only then."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Project

from loopkit_core import collector
from loopkit_core.server import Running
from loopkit_core.window import Window


@pytest.fixture
def default_threshold() -> Iterator[tuple[int, ...]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*saved)


def test_the_threshold_is_raised_until_the_last_concurrent_block_ends(default_threshold: tuple[int, ...]) -> None:
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector.fewer_collections():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with collector.fewer_collections():
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)
        thread.start()
        assert entered.wait(10)
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)  # the other block still runs
    release.set()
    thread.join(10)
    assert gc.get_threshold() == default_threshold
    with pytest.raises(RuntimeError), collector.fewer_collections():
        raise RuntimeError("a failed diagnosis restores it too")
    assert gc.get_threshold() == default_threshold


def test_a_diagnosis_runs_with_the_raised_threshold(
    server: Running,
    client: httpx.Client,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
    default_threshold: tuple[int, ...],
) -> None:
    now = time.time_ns() - 10**9
    records = [{"type": "error", "name": "POST /pay", "message": "declined", "timestamp": now - n} for n in range(5)]
    assert client.post("/v1/traces", json={"records": records}, headers=project.auth()).status_code == 200
    seen: list[tuple[int, ...]] = []
    counts = Window.counts_by_type

    def counting(self: Window) -> Any:
        seen.append(gc.get_threshold())
        return counts(self)

    monkeypatch.setattr(Window, "counts_by_type", counting)
    answer = client.post("/v1/runs/diagnose", json={"since_minutes": 5}, headers=project.auth("agent"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["packet"]["telemetry_read"] == 5
    assert seen and all(threshold[0] == collector.YOUNG_THRESHOLD for threshold in seen)
    assert gc.get_threshold() == default_threshold
