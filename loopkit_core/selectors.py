"""Typed selectors: which records an issue is about, as six small dataclasses with one tagged JSON form each.

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


def _attributes(value: Any, what: str) -> dict[str, Scalar]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} attributes must be an object")
    for key, item in value.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key:
            raise ValueError(f"{what} attribute names must be non-empty strings without quotes or backslashes")
        if not isinstance(item, Scalar):
            raise ValueError(f"{what} attribute {key!r} must equal a string, number or boolean")
    return dict(value)


# What a fingerprint rule may match on (docs/grouping.md#fingerprint-rules): columns compared for equality, the
# message against a glob (`*` any run of characters, `?` one character; case-sensitive), attributes by value.
MATCH_COLUMNS = ("type", "name", "service", "exception_type")
MATCH_KEYS = (*MATCH_COLUMNS, "message", "attributes")
# The columns a fingerprint template may name; `attributes.KEY` names a top-level attribute.
VARIABLE_COLUMNS = ("type", "name", "service", "exception_type", "message")
ATTRIBUTE_PREFIX = "attributes."


def is_variable(name: str) -> bool:
    """Whether `name` is a variable a fingerprint rule's group can be keyed on (a column, or attributes.KEY)."""
    if name in VARIABLE_COLUMNS:
        return True
    key = name.removeprefix(ATTRIBUTE_PREFIX)
    return name.startswith(ATTRIBUTE_PREFIX) and bool(key) and '"' not in key and "\\" not in key


@dataclass(frozen=True)
class Match:
    """A fingerprint rule's conditions: equal columns, a message glob, equal attributes (all must hold)."""

    type: str | None = None
    name: str | None = None
    service: str | None = None
    exception_type: str | None = None
    message: str | None = None  # a glob: * any run of characters, ? one character, case-sensitive
    attributes: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in (*MATCH_COLUMNS, "message"):
            _optional_text(getattr(self, key), f"match {key}")
        object.__setattr__(self, "attributes", _attributes(self.attributes, "match"))
        if self.message is not None and "\x00" in self.message:
            raise ValueError("match message must not contain NUL")
        if all(getattr(self, key) is None for key in (*MATCH_COLUMNS, "message")) and not self.attributes:
            raise ValueError("a match needs at least one condition")

    @classmethod
    def from_json(cls, value: Any) -> Match:
        """The match of its JSON object form; ValueError naming an unknown key or a wrong type."""
        if isinstance(value, Match):
            return value
        if not isinstance(value, dict):
            raise ValueError("a match must be an object")
        unknown = sorted(set(value) - set(MATCH_KEYS))
        if unknown:
            raise ValueError(f"a match has no key {unknown[0]!r}; its keys: {', '.join(MATCH_KEYS)}")
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        """`{"type"?: T, "name"?: N, "service"?: S, "exception_type"?: E, "message"?: GLOB, "attributes"?: {K: V}}`."""
        out: dict[str, Any] = {k: getattr(self, k) for k in (*MATCH_COLUMNS, "message") if getattr(self, k) is not None}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        return out


def _matches(value: Any, what: str) -> tuple[Match, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"selector {what} must be a list of matches")
    return tuple(Match.from_json(m) for m in value)


@dataclass(frozen=True)
class Signatures:
    """Failures whose ingest signature (the record_signature hook's key) is one of `signatures`.

    `unless`: none of these fingerprint rule matches holds (the records the project's rules group instead).
    """

    signatures: tuple[str, ...]
    unless: tuple[Match, ...] = ()
    kind: ClassVar[str] = "signatures"

    def __post_init__(self) -> None:
        object.__setattr__(self, "signatures", _strings(self.signatures, "signatures"))
        object.__setattr__(self, "unless", _matches(self.unless, "unless"))

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "signatures", "signatures": [KEY, ...], "unless"?: [MATCH, ...]}`."""
        out: dict[str, Any] = {"kind": self.kind, "signatures": list(self.signatures)}
        if self.unless:
            out["unless"] = [m.to_json() for m in self.unless]
        return out


@dataclass(frozen=True)
class RulePart:
    """One rule's share of a rule group: its match holds, no earlier rule's does, the variables have these values.

    `values` maps each variable (`name`, `attributes.KEY`, ...) to its stored key: the column's value, or for an
    attribute its JSON type and text as the store extracts it (`loopkit_core.store.dialect.json_attribute_key`);
    None when absent.
    """

    match: Match
    unless: tuple[Match, ...] = ()
    values: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", Match.from_json(self.match))
        object.__setattr__(self, "unless", _matches(self.unless, "unless"))
        if not isinstance(self.values, dict):
            raise ValueError("selector values must be an object")
        for name, value in self.values.items():
            if not isinstance(name, str) or not is_variable(name):
                raise ValueError(f"selector values: {name!r} is not a variable")
            _optional_text(value, f"value of {name}")

    @classmethod
    def from_json(cls, value: Any) -> RulePart:
        """A part of its JSON object form."""
        if not isinstance(value, dict) or set(value) - {"match", "unless", "values"} or "match" not in value:
            raise ValueError('a rule selector part is {"match", "unless"?, "values"?}')
        return cls(value["match"], value.get("unless", ()), value.get("values", {}))

    def to_json(self) -> dict[str, Any]:
        """`{"match": MATCH, "unless": [MATCH, ...], "values": {VARIABLE: KEY | null}}`."""
        return {"match": self.match.to_json(), "unless": [m.to_json() for m in self.unless], "values": self.values}


@dataclass(frozen=True)
class RuleGroup:
    """Failures a project's fingerprint rules grouped into one issue: the records of any of `parts`."""

    parts: tuple[RulePart, ...]
    kind: ClassVar[str] = "rule"

    def __post_init__(self) -> None:
        if not isinstance(self.parts, list | tuple) or not self.parts:
            raise ValueError("selector parts must be a non-empty list")
        object.__setattr__(
            self, "parts", tuple(RulePart.from_json(p) if isinstance(p, dict) else p for p in self.parts)
        )
        if not all(isinstance(p, RulePart) for p in self.parts):
            raise ValueError("selector parts must be rule parts")

    def to_json(self) -> dict[str, Any]:
        """`{"kind": "rule", "parts": [{"match", "unless", "values"}, ...]}`."""
        return {"kind": self.kind, "parts": [p.to_json() for p in self.parts]}


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
        object.__setattr__(self, "attributes", _attributes(self.attributes, "selector"))

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

    selectors: tuple[Signatures | RecordIds | Records | SlowCalls | RuleGroup, ...]
    kind: ClassVar[str] = "any"

    def __post_init__(self) -> None:
        raw = self.selectors
        if isinstance(raw, dict | str) or not isinstance(raw, list | tuple) or not 0 < len(raw) <= MAX_ANY:
            raise ValueError(f"selector selectors must be a list of 1 to {MAX_ANY} selectors")
        parts: list[Signatures | RecordIds | Records | SlowCalls | RuleGroup] = []
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


Selector = Signatures | RecordIds | Records | SlowCalls | RuleGroup | AnyOf
SELECTOR_TYPES = (Signatures, RecordIds, Records, SlowCalls, RuleGroup, AnyOf)
KINDS: dict[str, type[Selector]] = {cls.kind: cls for cls in SELECTOR_TYPES}
# The keys each tagged form may carry besides "kind" (anything else is a mistake worth a clear error).
_KEYS = {
    "signatures": {"signatures", "unless"},
    "record_ids": {"record_ids"},
    "records": {"type", "name", "service", "attributes"},
    "slow_calls": {"name", "service", "min_duration_ms"},
    "rule": {"parts"},
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
        return Signatures(selector["signatures"], selector.get("unless", ()))
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
    # Only when they leave out the same fingerprint rules' records: the `unless` of each is part of what it names.
    if all(isinstance(s, Signatures) and s.unless == parsed.selectors[0].unless for s in parsed.selectors):
        keys = [k for s in parsed.selectors for k in s.signatures]  # type: ignore[union-attr]
        return Signatures(tuple(dict.fromkeys(keys)), parsed.selectors[0].unless).to_json()  # type: ignore[union-attr]
    # Equal selectors once each (compared by their JSON form: a Records selector's attributes are a dict).
    unique = list({json.dumps(s.to_json(), sort_keys=True): s for s in parsed.selectors}.values())
    return unique[0].to_json() if len(unique) == 1 else AnyOf(tuple(unique)).to_json()
