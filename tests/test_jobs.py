"""`loopkit_core.jobs.PeriodicJob`, the loop behind the sandbox purger and the retention purger: real threads."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from loopkit_core.jobs import PeriodicJob


def wait_for(condition, seconds: float = 5.0) -> None:
    """Poll until condition() is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_failed_pass_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[threading.Event] = []

    def work(stop: threading.Event) -> None:
        calls.append(stop)
        if len(calls) == 1:
            raise RuntimeError("first pass broke")

    job = PeriodicJob("test-job", 0.01, work, run_at_start=True)
    with caplog.at_level(logging.ERROR, logger="loopkit.jobs"):
        job.start()
        wait_for(lambda: job.passes >= 3)
        job.stop()
    assert not job.is_alive()
    assert len(calls) == job.passes >= 3
    assert all(stop is calls[0] for stop in calls) and calls[0].is_set()  # the job's own stop event
    [record] = [r for r in caplog.records if r.name == "loopkit.jobs"]
    assert record.getMessage() == "test-job: pass failed" and record.exc_info[0] is RuntimeError


def test_the_first_pass_waits_one_interval_unless_run_at_start() -> None:
    ran: list[str] = []
    late = PeriodicJob("late", 3600.0, lambda _stop: ran.append("late"))
    early = PeriodicJob("early", 3600.0, lambda _stop: ran.append("early"), run_at_start=True)
    late.start()
    early.start()
    wait_for(lambda: early.passes == 1)
    late.stop()
    early.stop()
    assert not late.is_alive() and not early.is_alive()  # stopping ends the hour-long wait at once
    assert ran == ["early"] and late.passes == 0


def test_stop_waits_for_the_pass_in_progress_within_its_bound() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(_stop: threading.Event) -> None:
        started.set()
        release.wait(10)

    job = PeriodicJob("slow", 3600.0, slow, run_at_start=True)
    job.start()
    assert started.wait(5)
    begun = time.monotonic()
    job.stop(timeout=0.2)  # the pass ignores the stop event: stop returns at its bound, the thread still runs
    assert 0.2 <= time.monotonic() - begun < 5 and job.is_alive()
    release.set()
    job.join(5)
    assert not job.is_alive() and job.passes == 1
    PeriodicJob("never-started", 1.0, slow).stop()  # stopping a job that never started is harmless
