"""Latency outlier detector (placeholder until the detector lands)."""

from __future__ import annotations

from typing import Any

from loopkit_core.hookspecs import hookimpl


@hookimpl
def diagnose(window: Any, options: dict[str, Any]) -> list[Any]:
    """No latency issues yet."""
    return []
