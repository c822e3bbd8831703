"""The one background-job loop: a daemon thread that runs a pass every `interval` seconds until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("loopkit.jobs")

# How long stop() waits for a pass in progress by default: a pass checks the stop event between its steps.
JOIN_SECONDS = 30.0


class PeriodicJob(threading.Thread):
    """Runs `fn(stop_event)` every `interval` seconds on a daemon thread until stop().

    A pass that raises is logged and the next one runs on schedule. `run_at_start` runs the first pass
    immediately instead of after one interval. `fn` gets the stop event so a long pass can end early.
    """

    def __init__(
        self, name: str, interval: float, fn: Callable[[threading.Event], object], run_at_start: bool = False
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self._fn = fn
        self._run_at_start = run_at_start
        self._stop_event = threading.Event()
        self.passes = 0  # passes done (failed ones included), for tests and logs

    def run(self) -> None:
        """Run a pass, then sleep, until stopped; a failed pass is logged and retried next time."""
        if not self._run_at_start and self._stop_event.wait(self.interval):
            return
        while not self._stop_event.is_set():
            try:
                self._fn(self._stop_event)
            except Exception:
                log.exception("%s: pass failed", self.name)
            self.passes += 1
            if self._stop_event.wait(self.interval):
                return

    def stop(self, timeout: float | None = JOIN_SECONDS) -> None:
        """Ask the job to stop and wait at most `timeout` seconds for the pass in progress (None: no bound)."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
