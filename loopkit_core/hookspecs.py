"""The whole extension surface of LoopKit, in pipeline order. Each docstring is the hook's contract.

Plugins implement these with ``@loopkit_core.hookspecs.hookimpl``; built-in plugins are ordinary
plugins of the same shape, listed in ``loopkit_core.plugins.DEFAULT_PLUGINS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from loopkit_core.model import Issue, Record, Signature
    from loopkit_core.window import Window

hookspec = pluggy.HookspecMarker("loopkit")
hookimpl = pluggy.HookimplMarker("loopkit")


@hookspec(firstresult=True)
def record_signature(record: Record) -> Signature | None:
    """At ingest: the grouping signature of one error or tool-failure record, or None to pass.

    Called once per record whose type is ``error`` or ``tool_failure``, before it is stored; the first
    non-None answer wins (built-in: the signature clusterer's masked template, marked ``trylast``).
    Must be fast and pure: it runs on the ingest path and must not do I/O.
    """


@hookspec
def diagnose(window: Window, options: dict[str, Any]) -> list[Issue] | None:
    """At diagnosis: the issues this diagnoser finds in a bounded window of one project's records.

    Every diagnoser runs (one plugin at a time: an exception is reported in the packet's
    ``diagnoser_errors`` and the others still run). ``options`` holds the request's ``min_count``,
    ``max_issues`` and ``since_minutes``. Return issues whose ``selector`` names exactly the records
    behind them, so counts, evidence and ``GET /v1/telemetry?issue=`` agree; return None or [] when
    nothing crosses the bar. Must only read the window it was given.
    """
