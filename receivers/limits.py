"""Size limits per record: over-long attribute values and too many attributes, events or links are cut,
with a marker saying so, instead of rejecting the record (see docs/records.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopkit_core.model import Record
from loopkit_receivers.records_shape import MAX_NAME, MAX_TEXT

TRUNCATED = "loopkit.truncated_attributes"  # keys whose values were cut to the length limit
TRUNCATED_FIELDS = "loopkit.truncated_fields"  # record fields (name, message) cut to their length limit
DROPPED_ATTRIBUTES = "loopkit.dropped_attributes_count"
DROPPED_EVENTS = "loopkit.dropped_events_count"
DROPPED_LINKS = "loopkit.dropped_links_count"
MARKERS = frozenset((TRUNCATED, TRUNCATED_FIELDS, DROPPED_ATTRIBUTES, DROPPED_EVENTS, DROPPED_LINKS))
# The records shape rejects longer fields outright (records_shape.py); a span's are cut to the same lengths.
FIELD_LENGTHS = {"name": MAX_NAME, "message": MAX_TEXT}


@dataclass(frozen=True)
class Limits:
    """The caps, from Settings (max_attribute_value_length, max_attributes_per_span, ...)."""

    value_length: int = 16 * 1024
    attributes: int = 256
    events: int = 256
    links: int = 256

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The limits a Settings object configures."""
        return cls(
            settings.max_attribute_value_length,
            settings.max_attributes_per_span,
            settings.max_events_per_span,
            settings.max_links_per_span,
        )


DEFAULT = Limits()


def apply(records: list[Record], limits: Limits = DEFAULT) -> None:
    """Cut every record to the limits in place; records within them are left untouched (the common case)."""
    seen_resources: set[int] = set()
    for record in records:
        record.attributes = _attributes(record.attributes, limits)
        if len(record.name) > MAX_NAME or len(record.message) > MAX_TEXT:  # FIELD_LENGTHS' fields, seldom too long
            cut_fields = [f for f, n in FIELD_LENGTHS.items() if len(getattr(record, f)) > n]
            for name in cut_fields:
                setattr(record, name, getattr(record, name)[: FIELD_LENGTHS[name]])
            record.attributes[TRUNCATED_FIELDS] = cut_fields
        if len(record.events) > limits.events:
            dropped = len(record.events) - limits.events
            record.events = record.events[: limits.events]
            record.attributes[DROPPED_EVENTS] = dropped
        for event in record.events:
            attributes = event.get("attributes")
            if isinstance(attributes, dict):
                event["attributes"] = _attributes(attributes, limits)
        if len(record.links) > limits.links:
            dropped = len(record.links) - limits.links
            record.links = record.links[: limits.links]
            record.attributes[DROPPED_LINKS] = dropped
        if id(record.resource) not in seen_resources:  # a resource is shared by the spans of one request
            seen_resources.add(id(record.resource))
            cut = _attributes(record.resource, limits)
            if cut is not record.resource:
                record.resource.clear()
                record.resource.update(cut)


def _attributes(attributes: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The attributes within the limits: the same dict when nothing needs cutting, else a cut copy."""
    length = limits.value_length
    if len(attributes) <= limits.attributes:
        # The common case, checked once per record: nothing too long. Strings, most values, are checked inline.
        for value in attributes.values():
            kind = type(value)
            if kind is str:
                if len(value) > length:
                    break
            elif kind not in _ATOMS and _too_long(value, length):
                break
        else:
            return attributes
    kept: dict[str, Any] = {}
    cut_keys = []
    for key, value in list(attributes.items())[: limits.attributes]:
        if _too_long(value, length):
            value = _cut(value, length)
            cut_keys.append(key)
        kept[key] = value
    if len(attributes) > limits.attributes:
        kept[DROPPED_ATTRIBUTES] = len(attributes) - limits.attributes
    if cut_keys:
        kept[TRUNCATED] = cut_keys
    return kept


# Values that are never too long (what _too_long says of them without the call).
_ATOMS = frozenset((int, float, bool, type(None)))


def _too_long(value: Any, length: int) -> bool:
    if isinstance(value, str):
        return len(value) > length
    if isinstance(value, list):
        return any(_too_long(v, length) for v in value)
    if isinstance(value, dict):
        return any(_too_long(v, length) for v in value.values())
    return False


def _cut(value: Any, length: int) -> Any:
    if isinstance(value, str):
        return value[:length] if len(value) > length else value
    if isinstance(value, list):
        return [_cut(v, length) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v, length) for k, v in value.items()}
    return value
