"""Derive a record's signal type, status and summary fields from OpenTelemetry conventions."""

from __future__ import annotations

from typing import Any

from loopkit_core.model import EXPLICIT_TYPES

# OTLP Status.code values.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = {STATUS_UNSET: "unset", STATUS_OK: "ok", STATUS_ERROR: "error"}
# OTLP Span.kind values.
SPAN_KINDS = {0: None, 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

SIGNAL_ATTRIBUTE = "loopkit.signal"
SESSION_KEYS = ("session.id", "gen_ai.conversation.id")
USER_KEYS = ("user.id", "enduser.id")


def first_exception(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The attributes of the first `exception` event, if the span has one."""
    for event in events:
        if event.get("name") == "exception":
            return event.get("attributes") or {}
    return None


def classify(status: str, attributes: dict[str, Any], exception: dict[str, Any] | None) -> str:
    """Signal type of a span: an explicit `loopkit.signal` wins, then tool failure, error, span."""
    explicit = attributes.get(SIGNAL_ATTRIBUTE)
    if isinstance(explicit, str) and explicit in EXPLICIT_TYPES:
        return explicit
    failed = status == "error" or exception is not None
    if failed and attributes.get("gen_ai.operation.name") == "execute_tool":
        return "tool_failure"
    if failed:
        return "error"
    return "span"


def summary(
    status_message: str, attributes: dict[str, Any], exception: dict[str, Any] | None
) -> tuple[str, str | None]:
    """The record's (message, exception type): the exception's if any, else the span status's."""
    if exception is not None:
        message = _text(exception.get("exception.message")) or status_message
        exc_type = _text(exception.get("exception.type")) or _text(attributes.get("error.type"))
        return message, exc_type
    return status_message, _text(attributes.get("exception.type")) or _text(attributes.get("error.type"))


def pick(attributes: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first of `keys` present in `attributes`, as a string."""
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)
