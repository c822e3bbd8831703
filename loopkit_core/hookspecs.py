"""The whole extension surface of LoopKit, in pipeline order. Each docstring is the hook's contract.

Plugins implement these with ``@loopkit_core.hookspecs.hookimpl``; built-in plugins are ordinary
plugins of the same shape, listed in ``loopkit_core.plugins.DEFAULT_PLUGINS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from loopkit_core.model import Issue, Record, Renderer, Signature, Verdict
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


@hookspec
def register_handoff_renderers() -> list[Renderer] | None:
    """At start-up: the handoff formats this plugin renders (`GET /v1/packets/{id}/handoff?format=NAME`).

    Called once per app; every plugin's renderers are collected and listed by the API, the CLI and
    ``/llms.txt``. A name registered twice is served by the plugin called first (third-party plugins
    before the built-ins, which are ``trylast``). ``Renderer.render(packet, context)`` must be pure:
    it turns the stored packet into text and never sends anything anywhere.
    """


@hookspec(firstresult=True)
def verify_issue(issue: dict[str, Any], before: Window, after: Window, previous: str) -> Verdict | None:
    """At verification: the verdict on one packet issue, comparing its window with a later one.

    ``issue`` is the issue as stored in the packet (its ``selector``, ``diagnoser``, ``stats``),
    ``before`` the packet's window, ``after`` the window since the fix (approval or packet creation),
    ``previous`` the issue's lifecycle status (``verified`` once a verdict was ``held``). The first
    verifier that knows the issue's kind answers; return None for issues you do not verify. Never
    answer ``held`` without enough traffic to say so: answer ``insufficient_data`` instead.
    """
