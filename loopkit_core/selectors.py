"""Typed selectors: which records an issue is about, as five small dataclasses with one tagged JSON form each.

An issue's selector names exactly the records behind it (docs/plugin_hooks.md#selectors). Its JSON form names
its kind, `{"kind": "records", "type": "user_signal", ...}`, so nothing is told apart by which key happens to be
present. The older untagged dicts (`{"signatures": [...]}`, `{"type": ...}`, ...) are still accepted everywhere
a selector is: `parse_selector` reads both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

# Attribute values a selector can compare (with their JSON type: "1" is not 1).
Scalar = str | int | float | bool


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"selector {what} must be a list of strings")
    return tuple(value)


def _optional_text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"selector {what} must be a string")
    return value


@dataclass(frozen=True)
class Signatures:
    """Failures whose ingest signature (the record_signature hook's key) is one of `signatures`."""

    signatures: tuple[str, ...]
    kind: ClassVar[str] = "signatures"

    def __post_init__(self) -> None:
        object.__setattr__(self, "signatures", _strings(self.signatures, "signatures"))

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "signatures", "signatures": [KEY, ...]}`."""
        return {"kind": self.kind, "signatures": list(self.signatures)}


@dataclass(frozen=True)
class RecordIds:
    """Exactly these records (small, explicit sets only: the list is stored with the issue)."""

    record_ids: tuple[str, ...]
    kind: ClassVar[str] = "record_ids"

    def __post_init__(self) -> None:
        object.__setattr__(self, "record_ids", _strings(self.record_ids, "record_ids"))

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "record_ids", "record_ids": [ID, ...]}`."""
        return {"kind": self.kind, "record_ids": list(self.record_ids)}


@dataclass(frozen=True)
class Records:
    """Records of one signal type, optionally of one name and service, whose attributes equal `attributes`."""

    type: str
    name: str | None = None
    service: str | None = None
    attributes: dict[str, Scalar] = field(default_factory=dict)
    kind: ClassVar[str] = "records"

    def __post_init__(self) -> None:
        if not isinstance(self.type, str):
            raise ValueError("selector type must be a string")
        _optional_text(self.name, "name")
        _optional_text(self.service, "service")
        if not isinstance(self.attributes, dict):
            raise ValueError("selector attributes must be an object")
        for key, value in self.attributes.items():
            if not isinstance(key, str) or not key or '"' in key or "\\" in key:
                raise ValueError("selector attribute names must be non-empty strings without quotes or backslashes")
            if not isinstance(value, Scalar):
                raise ValueError(f"selector attribute {key!r} must equal a string, number or boolean")

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "records", "type": T, "name"?: N, "service"?: S, "attributes"?: {K: V}}` (unset keys left out)."""
        out: dict[str, Any] = {"kind": self.kind, "type": self.type}
        out.update({k: v for k, v in (("name", self.name), ("service", self.service)) if v is not None})
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        return out


@dataclass(frozen=True)
class SlowCalls:
    """Records of one name (any type), optionally of one service, lasting at least `min_duration_ms`."""

    name: str
    service: str | None = None
    min_duration_ms: float = 0.0
    kind: ClassVar[str] = "slow_calls"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError("selector name must be a string")
        _optional_text(self.service, "service")
        duration = self.min_duration_ms
        if isinstance(duration, bool) or not isinstance(duration, int | float) or not duration >= 0:
            raise ValueError("selector min_duration_ms must be a non-negative number")

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "slow_calls", "name": N, "service"?: S, "min_duration_ms": X}`."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.service is not None:
            out["service"] = self.service
        out["min_duration_ms"] = self.min_duration_ms
        return out


MAX_ANY = 200  # selectors in one any-of selector (a merged issue's members)


@dataclass(frozen=True)
class AnyOf:
    """Records any of `selectors` names: the union a merged issue stands for (docs/grouping.md)."""

    selectors: tuple[Signatures | RecordIds | Records | SlowCalls, ...]
    kind: ClassVar[str] = "any"

    def __post_init__(self) -> None:
        raw = self.selectors
        if isinstance(raw, dict | str) or not isinstance(raw, list | tuple) or not 0 < len(raw) <= MAX_ANY:
            raise ValueError(f"selector selectors must be a list of 1 to {MAX_ANY} selectors")
        parts: list[Signatures | RecordIds | Records | SlowCalls] = []
        for item in raw:
            parsed = parse_selector(item)
            # Nested any-of selectors are flattened: one level is all SQL needs, and equal forms compare equal.
            parts.extend(parsed.selectors if isinstance(parsed, AnyOf) else (parsed,))
        if len(parts) > MAX_ANY:
            raise ValueError(f"selector selectors must be a list of 1 to {MAX_ANY} selectors")
        object.__setattr__(self, "selectors", tuple(parts))

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "any", "selectors": [SELECTOR, ...]}` (each in its tagged form)."""
        return {"kind": self.kind, "selectors": [s.to_json() for s in self.selectors]}


Selector = Signatures | RecordIds | Records | SlowCalls | AnyOf
SELECTOR_TYPES = (Signatures, RecordIds, Records, SlowCalls, AnyOf)
KINDS: dict[str, type[Selector]] = {cls.kind: cls for cls in SELECTOR_TYPES}
# The keys each tagged form may carry besides "kind" (anything else is a mistake worth a clear error).
_KEYS = {
    "signatures": {"signatures"},
    "record_ids": {"record_ids"},
    "records": {"type", "name", "service", "attributes"},
    "slow_calls": {"name", "service", "min_duration_ms"},
    "any": {"selectors"},
}


def parse_selector(selector: Selector | dict[str, Any]) -> Selector:
    """The typed selector of a tagged or an untagged (older) JSON form; ValueError when it names no records."""
    if isinstance(selector, SELECTOR_TYPES):
        return selector
    if not isinstance(selector, dict):
        raise ValueError(f"a selector must be an object, not {type(selector).__name__}")
    if "kind" in selector:
        kind = selector["kind"]
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"unknown selector kind {kind!r}; one of {', '.join(KINDS)}")
        unknown = sorted(set(selector) - _KEYS[kind] - {"kind"})
        if unknown:
            raise ValueError(f"a {kind} selector has no key {unknown[0]!r}; its keys: {', '.join(sorted(_KEYS[kind]))}")
        return KINDS[kind](**{k: v for k, v in selector.items() if k != "kind"})
    # The untagged form: the first of these keys present decides; other keys are ignored (e.g. "partition").
    if "signatures" in selector:
        return Signatures(selector["signatures"])
    if "record_ids" in selector:
        return RecordIds(selector["record_ids"])
    if "type" in selector:
        attributes = selector.get("attributes") or {}
        return Records(selector["type"], selector.get("name"), selector.get("service"), attributes)
    if "name" in selector:
        return SlowCalls(selector["name"], selector.get("service"), float(selector.get("min_duration_ms", 0.0)))
    raise ValueError(f"unknown selector {sorted(selector)}")


def selector_json(selector: Selector | dict[str, Any]) -> dict[str, Any]:
    """What is stored with an issue: a typed selector's tagged form; a dict checked and kept as written."""
    if isinstance(selector, dict):
        parse_selector(selector)
        return selector
    return parse_selector(selector).to_json()


def union(selectors: list[Selector | dict[str, Any]]) -> dict[str, Any]:
    """The tagged JSON form of the records any of `selectors` names.

    Signature selectors alone stay one signature selector (their keys, in order, once each), so the verifiers of
    failure issues still recognise a merged failure issue; anything else is an any-of selector. ValueError when
    the list is empty or a selector is not valid.
    """
    parsed = AnyOf(tuple(selectors))  # flattens, checks each part and the bound
    if all(isinstance(s, Signatures) for s in parsed.selectors):
        keys = [k for s in parsed.selectors for k in s.signatures]  # type: ignore[union-attr]
        return Signatures(tuple(dict.fromkeys(keys))).to_json()
    # Equal selectors once each (compared by their JSON form: a Records selector's attributes are a dict).
    unique = list({json.dumps(s.to_json(), sort_keys=True): s for s in parsed.selectors}.values())
    return unique[0].to_json() if len(unique) == 1 else AnyOf(tuple(unique)).to_json()
