"""Size limits per record: over-long fields and attribute values, too many attributes, events or links, and
too big or too deep nested values are cut, with a marker saying so, instead of rejecting the record (see
docs/records.md and docs/reliability.md)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any

from loopkit_core.model import Record
from loopkit_receivers.records_shape import MAX_NAME, MAX_TEXT
from loopkit_receivers.span_count import MAX_SPANS_PER_REQUEST

TRUNCATED = "loopkit.truncated_attributes"  # keys whose values were cut to the limits
TRUNCATED_KEYS = "loopkit.truncated_attribute_keys"  # attribute keys cut to MAX_KEY (as stored, cut)
TRUNCATED_FIELDS = "loopkit.truncated_fields"  # record (event, link) fields cut to their length limit
DROPPED_ATTRIBUTES = "loopkit.dropped_attributes_count"
DROPPED_EVENTS = "loopkit.dropped_events_count"
DROPPED_LINKS = "loopkit.dropped_links_count"
MARKERS = frozenset((TRUNCATED, TRUNCATED_KEYS, TRUNCATED_FIELDS, DROPPED_ATTRIBUTES, DROPPED_EVENTS, DROPPED_LINKS))
# The records shape rejects longer name, message, service, session_id and user_id outright (records_shape.py);
# a span's, and the fields derived from attributes, resource and scope, are cut to the same lengths.
FIELD_LENGTHS = {
    "name": MAX_NAME,
    "message": MAX_TEXT,
    "service": MAX_NAME,
    "scope": MAX_NAME,
    "session_id": MAX_NAME,
    "user_id": MAX_NAME,
    "exception_type": MAX_NAME,
}
# Indexed text columns (name and service share one index entry, session_id has its own) are also cut to this many
# bytes as PostgreSQL stores them: UTF-8, with NUL and U+FFFE taking 3 bytes more each (their escape, dialect.py).
# Two such values and the entry's other columns stay under PostgreSQL's btree limit of 2,704 bytes an entry.
MAX_INDEXED_BYTES = 1280
INDEXED = ("name", "service", "session_id")
# Any string of at most this many characters is within MAX_INDEXED_BYTES (at most 6 stored bytes a character).
_SAFE_CHARS = MAX_INDEXED_BYTES // 6
# An event's name is cut like a span's; a link's IDs (hex text) to the length of a valid one.
LINK_ID_LENGTHS = {"trace_id": 32, "span_id": 16}


@dataclass(frozen=True)
class Limits:
    """The caps, from Settings (max_attribute_value_length, max_attributes_per_span, ...)."""

    value_length: int = 16 * 1024
    attributes: int = 256
    events: int = 256
    links: int = 256
    key_length: int = 1024  # characters of an attribute key, at any depth (fixed: MAX_KEY)
    elements: int = 1024  # elements of one list or map inside an attribute value (fixed: MAX_ELEMENTS)
    depth: int = 32  # lists and maps nested inside more than this many others become null (fixed: MAX_DEPTH)
    spans: int = MAX_SPANS_PER_REQUEST  # spans or records in one request (max_spans_per_request)

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The limits a Settings object configures."""
        return cls(
            settings.max_attribute_value_length,
            settings.max_attributes_per_span,
            settings.max_events_per_span,
            settings.max_links_per_span,
            spans=settings.max_spans_per_request,
        )


DEFAULT = Limits()
MAX_KEY, MAX_ELEMENTS, MAX_DEPTH = DEFAULT.key_length, DEFAULT.elements, DEFAULT.depth


def apply(records: list[Record], limits: Limits = DEFAULT) -> None:
    """Cut every record to the limits in place; records within them are left untouched (the common case)."""
    seen_resources: set[int] = set()
    for record in records:
        record.attributes = _attributes(record.attributes, limits)
        # Length checks only, in the common case: FIELD_LENGTHS' and INDEXED's fields, seldom too long.
        if (
            len(record.name) > _SAFE_CHARS
            or len(record.service) > _SAFE_CHARS
            or len(record.message) > MAX_TEXT
            or (record.scope is not None and len(record.scope) > MAX_NAME)
            or (record.session_id is not None and len(record.session_id) > _SAFE_CHARS)
            or (record.user_id is not None and len(record.user_id) > MAX_NAME)
            or (record.exception_type is not None and len(record.exception_type) > MAX_NAME)
        ):
            _cut_fields(record)
        if len(record.events) > limits.events:
            dropped = len(record.events) - limits.events
            record.events = record.events[: limits.events]
            record.attributes[DROPPED_EVENTS] = dropped
        for event in record.events:
            attributes = event.get("attributes")
            if isinstance(attributes, dict):
                event["attributes"] = _attributes(attributes, limits)
            name = event.get("name")
            if isinstance(name, str) and len(name) > MAX_NAME:
                event["name"] = name[:MAX_NAME]
                _own_attributes(event)[TRUNCATED_FIELDS] = ["name"]
        if len(record.links) > limits.links:
            dropped = len(record.links) - limits.links
            record.links = record.links[: limits.links]
            record.attributes[DROPPED_LINKS] = dropped
        for link in record.links:
            _cut_link(link, limits)
        if id(record.resource) not in seen_resources:  # a resource is shared by the spans of one request
            seen_resources.add(id(record.resource))
            cut = _attributes(record.resource, limits)
            if cut is not record.resource:
                record.resource.clear()
                record.resource.update(cut)


def stored_bytes(text: str) -> int:
    """The bytes PostgreSQL stores for a text value: UTF-8, NUL and U+FFFE escaped (3 bytes more each)."""
    if text.isascii():
        return len(text) + 3 * text.count("\x00")
    return len(text.encode("utf-8", "surrogatepass")) + 3 * (text.count("\x00") + text.count("\ufffe"))


def cut_to_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` whose stored_bytes are at most `limit` (whole characters only)."""
    if stored_bytes(text) <= limit:
        return text
    size = 0
    for i, char in enumerate(text):
        code = ord(char)
        size += 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
        if code == 0 or code == 0xFFFE:
            size += 3
        if size > limit:
            return text[:i]
    return text


def _cut_fields(record: Record) -> None:
    cut = []
    for name, length in FIELD_LENGTHS.items():
        value = getattr(record, name)
        if value is None:
            continue
        short = value[:length]
        if name in INDEXED:
            short = cut_to_bytes(short, MAX_INDEXED_BYTES)
        if len(short) < len(value):
            setattr(record, name, short)
            cut.append(name)
    if cut:
        record.attributes[TRUNCATED_FIELDS] = cut


def _own_attributes(item: dict[str, Any]) -> dict[str, Any]:
    # An event's or link's attributes, where its markers go.
    attributes = item.get("attributes")
    if not isinstance(attributes, dict):
        attributes = item["attributes"] = {}
    return attributes


def _cut_link(link: dict[str, Any], limits: Limits) -> None:
    attributes = link.get("attributes")
    if isinstance(attributes, dict):
        link["attributes"] = _attributes(attributes, limits)
    cut = []
    for name, length in LINK_ID_LENGTHS.items():
        value = link.get(name)
        if isinstance(value, str) and len(value) > length:
            link[name] = value[:length]
            cut.append(name)
    if cut:
        _own_attributes(link)[TRUNCATED_FIELDS] = cut


def _attributes(attributes: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The attributes within the limits: the same dict when nothing needs cutting, else a cut copy."""
    length, key_length = limits.value_length, limits.key_length
    # The common case, checked once per record: nothing too long. Keys are measured in one C loop (map), and
    # strings, most values, inline.
    if len(attributes) <= limits.attributes and (not attributes or max(map(len, attributes)) <= key_length):
        for value in attributes.values():
            kind = type(value)
            if kind is str:
                if len(value) > length:
                    break
            elif kind not in _ATOMS and _too_long(value, limits, 0):
                break
        else:
            return attributes
    kept: dict[str, Any] = {}
    cut_values = []
    cut_keys = []
    for key, value in islice(attributes.items(), limits.attributes):
        if len(key) > key_length:
            key = key[:key_length]
            cut_keys.append(key)
        if _too_long(value, limits, 0):
            value = _cut(value, limits, 0)
            cut_values.append(key)
        kept[key] = value
    if len(attributes) > limits.attributes:
        kept[DROPPED_ATTRIBUTES] = len(attributes) - limits.attributes
    if cut_values:
        kept[TRUNCATED] = cut_values
    if cut_keys:
        kept[TRUNCATED_KEYS] = cut_keys
    return kept


# Values that are never too long (what _too_long says of them without the call).
_ATOMS = frozenset((int, float, bool, type(None)))


def _too_long(value: Any, limits: Limits, depth: int) -> bool:
    # depth: how many lists and maps hold `value` inside the attribute value (0: the value itself). A list or map
    # inside more than `limits.depth` others is too deep: OTLP/JSON refuses those (otlp_json._MAX_DEPTH).
    if isinstance(value, str):
        return len(value) > limits.value_length
    if isinstance(value, list):
        if depth > limits.depth or len(value) > limits.elements:
            return True
        return any(type(v) not in _ATOMS and _too_long(v, limits, depth + 1) for v in value)
    if isinstance(value, dict):
        if depth > limits.depth or len(value) > limits.elements:
            return True
        key_length = limits.key_length
        return any(
            len(k) > key_length or (type(v) not in _ATOMS and _too_long(v, limits, depth + 1)) for k, v in value.items()
        )
    return False


def _cut(value: Any, limits: Limits, depth: int) -> Any:
    # Lists and maps deeper than the limit become null; longer ones keep their first elements.
    if isinstance(value, str):
        return value[: limits.value_length] if len(value) > limits.value_length else value
    if isinstance(value, list):
        if depth > limits.depth:
            return None
        return [_cut(v, limits, depth + 1) for v in islice(value, limits.elements)]
    if isinstance(value, dict):
        if depth > limits.depth:
            return None
        return {k[: limits.key_length]: _cut(v, limits, depth + 1) for k, v in islice(value.items(), limits.elements)}
    return value
