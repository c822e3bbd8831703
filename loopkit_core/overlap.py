"""Reads of one diagnosis that may run at once: in threads on PostgreSQL, one after another on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from loopkit_core.window import Window

READERS = 2  # reads started beside the diagnosis's own thread (Reads)
T = TypeVar("T")


def overlaps(window: Window) -> bool:
    """Whether a diagnosis's independent reads run at once: on PostgreSQL, whose own processes do the reading.

    Not on SQLite: its reads hold the GIL for much of their time, and two diagnoses at once took 1.03-1.40 times as
    long as one after the other (docs/benchmarks.md).
    """
    return window.engine.dialect.name == "postgresql"


class Reads:
    """Reads of one diagnosis that may overlap (see overlaps()); otherwise each runs when it is started."""

    def __init__(self, window: Window) -> None:
        threads = overlaps(window)
        self._pool = ThreadPoolExecutor(READERS, thread_name_prefix="loopkit-diagnose") if threads else None

    def __enter__(self) -> Reads:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def start(self, read: Callable[..., T], *args: Any) -> Future[T]:
        """Start `read(*args)`; its answer, or its exception, comes from the future's result()."""
        if self._pool is not None:
            return self._pool.submit(read, *args)
        done: Future[T] = Future()
        try:
            done.set_result(read(*args))
        except Exception as exc:  # raised again by result(), where a thread's would be
            done.set_exception(exc)
        return done
