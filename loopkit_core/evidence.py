"""Facts diagnosers quote from evidence records: stack frames, versions, slugs. Derived, never invented."""

from __future__ import annotations

import re
from typing import Any

_PY_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_JVM_FRAME = re.compile(r"\bat ([\w$.<>]+)\(([\w$.]+:\d+)\)")
_JS_FRAME = re.compile(r"\bat (?:([\w$.<>]+) )?\(?((?:/|\w:)[^():]+:\d+):\d+\)?")
_SLUG = re.compile(r"[^a-z0-9]+")


def stack_frames(record: dict[str, Any], limit: int = 5) -> list[str]:
    """The innermost frames of the record's first exception stack trace, innermost first."""
    for event in record.get("events") or []:
        trace = (event.get("attributes") or {}).get("exception.stacktrace")
        if event.get("name") == "exception" and isinstance(trace, str):
            return _frames(trace)[:limit]
    trace = (record.get("attributes") or {}).get("exception.stacktrace")
    return _frames(trace)[:limit] if isinstance(trace, str) else []


def _frames(trace: str) -> list[str]:
    python = [f"{path}:{line} in {func}" for path, line, func in _PY_FRAME.findall(trace)]
    if python:
        return python[::-1]  # Python prints the innermost frame last
    jvm = [f"{func} ({where})" for func, where in _JVM_FRAME.findall(trace)]
    if jvm:
        return jvm
    return [f"{func or '<anonymous>'} ({where})" for func, where in _JS_FRAME.findall(trace)]


def service_version(record: dict[str, Any]) -> str | None:
    """The `service.version` resource attribute, if the record has one."""
    version = (record.get("resource") or {}).get("service.version")
    return str(version) if version is not None else None


def slug(*parts: str, limit: int = 48) -> str:
    """A lowercase dash-separated identifier from text parts (stable for the same input)."""
    text = "-".join(p for p in parts if p)
    return _SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-") or "issue"


def severity_for_count(count: int) -> str:
    """A count-based severity for failures: critical, high, medium or low."""
    if count >= 1000:
        return "critical"
    if count >= 100:
        return "high"
    if count >= 10:
        return "medium"
    return "low"


def excerpt(text: str | None, limit: int = 160) -> str:
    """A one-line excerpt of a message."""
    one_line = " ".join((text or "").split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
