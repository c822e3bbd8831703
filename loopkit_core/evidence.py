"""Facts diagnosers quote from evidence records: stack frames, versions, slugs. Derived, never invented."""

from __future__ import annotations

import re
from typing import Any

# Control characters and bidirectional-text controls: in a handoff they could break a line or make text read
# differently from what it is, so one_line() turns each into a space. (str.split() already breaks at every
# Unicode line and paragraph separator: "\r", "\x0b", "\x0c", "\x1c"-"\x1e", "\x85", U+2028, U+2029.)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BACKTICKS = re.compile("`+")

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


def one_line(text: Any, limit: int | None = 200) -> str:
    """Text on one line: control characters and line separators as spaces, whitespace runs collapsed, bounded."""
    flat = " ".join(_UNSAFE.sub(" ", "" if text is None else str(text)).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def quote(text: Any, limit: int = 120) -> str:
    """Telemetry text as a Markdown code span: on one line, bounded, fenced by a longer backtick run than any inside.

    Handoffs quote every value taken from a record this way, so that no telemetry text can pass for the
    renderer's own structure or instructions (CommonMark code spans: a value with backticks still quotes).
    """
    flat = one_line(text, limit)
    if not flat:
        return "` `"
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(flat)), default=0) + 1)
    pad = " " if flat[0] == "`" or flat[-1] == "`" else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{flat}{pad}{fence}"


_NO_TEMPLATE = object()


def failure_eval_input(stats: dict[str, Any], example: dict[str, Any], template: Any = _NO_TEMPLATE) -> dict[str, Any]:
    """The `input` of a failure issue's eval: its operation and exception, one example record, and its message
    template when `template` is given (even None: the key is then there, null)."""
    facts = {
        "operation": stats["operation"],
        "service": stats["service"],
        "record_id": example.get("record_id"),
        "exception_type": stats["exception_type"],
        "message": excerpt(example.get("message"), 300),
    }
    if template is not _NO_TEMPLATE:
        facts["message_template"] = template
    facts["attributes"] = dict(list((example.get("attributes") or {}).items())[:20])
    return facts
