"""Fewer garbage collections while a diagnosis runs: its memo keeps ~100,000 objects alive for its length.

At the default young-generation threshold (700) each diagnosis ran 6-7 full collections that walked them all
(0.21-0.34 s of a 3.1 s diagnosis of 750,000 records, start-up objects frozen); at 10,000, none (0.07 s in all).
The threshold is raised only while a diagnosis runs: raised for good, it cost ingest 5-10% of its server CPU
(docs/benchmarks.md). It is process-wide, so concurrent diagnoses share one raise, restored by the last to end.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_running = 0
_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold to YOUNG_THRESHOLD until the block (and any concurrent one) ends."""
    global _running, _saved
    with _lock:
        if _running == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(YOUNG_THRESHOLD, _saved[0]), *_saved[1:])
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                gc.set_threshold(*_saved)
