"""Fingerprint rules: a project's ordered rules that group failures their own way (docs/grouping.md).

A rule matches errors and tool failures on columns, a message glob and attribute values, and sets the issue's
fingerprint (a template of variables such as `{name} {attributes.error.type}`) and optionally its title. This
module is the language: parsing and validating a rule set, the variables of a template, rendering, and the
fingerprint of a group. It is pure; the SQL that evaluates rules lives in `store/records.py`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from loopkit_core.model import FAILURE_TYPES
from loopkit_core.selectors import (
    ATTRIBUTE_PREFIX,
    MATCH_KEYS,
    VARIABLE_COLUMNS,
    Match,
    RuleGroup,
    RulePart,
    Signatures,
    is_variable,
    parse_selector,
)

MAX_RULES = 100  # rules in one set
MAX_PATTERN = 1024  # characters of any match value, attribute value or template
MAX_ATTRIBUTES = 20  # attribute conditions in one match
MAX_VARIABLES = 8  # distinct variables in one fingerprint template
MAX_BODY = 64 * 1024  # bytes of a PUT /v1/grouping/rules body
RULE_FIELDS = ("match", "fingerprint", "title")
_VARIABLE = re.compile(r"\{([^{}]*)\}")
# Why a rule set is refused: the `reason` of the 400 answer (docs/grouping.md#fingerprint-rules).
REASONS = (
    "not_an_object",
    "unknown_field",
    "missing_field",
    "wrong_type",
    "empty_match",
    "unknown_type",
    "bad_template",
    "bad_template_variable",
    "too_long",
    "too_many_rules",
)


class RuleError(ValueError):
    """A refused rule set: which rule (None for the set itself), why (one of REASONS), and a message."""

    def __init__(self, index: int | None, reason: str, message: str) -> None:
        where = "rules" if index is None else f"rules[{index}]"
        super().__init__(f"{where}: {message}")
        self.index = index
        self.reason = reason


@dataclass(frozen=True)
class FingerprintRule:
    """One rule: the failures it matches, the fingerprint template that groups them, an optional title template."""

    match: Match
    fingerprint: str
    title: str | None = None

    @property
    def variables(self) -> tuple[str, ...]:
        """The fingerprint's distinct variables, in order of first appearance: what its groups are keyed on."""
        return tuple(dict.fromkeys(template_variables(self.fingerprint)))

    def to_json(self) -> dict[str, Any]:
        """`{"match": MATCH, "fingerprint": TEMPLATE, "title"?: TEMPLATE}`."""
        out: dict[str, Any] = {"match": self.match.to_json(), "fingerprint": self.fingerprint}
        if self.title is not None:
            out["title"] = self.title
        return out


def template_variables(template: str) -> list[str]:
    """The variables a template names, in order (repeats kept); ValueError for a stray brace, LookupError for an
    unknown name."""
    outside = _VARIABLE.sub("", template)
    if "{" in outside or "}" in outside:
        raise ValueError("braces only enclose a variable, e.g. {name}")
    names = [m.strip() for m in _VARIABLE.findall(template)]
    for name in names:
        if not is_variable(name):
            allowed = ", ".join(f"{{{v}}}" for v in VARIABLE_COLUMNS)
            raise LookupError(f"unknown variable {{{name[:60]}}}; allowed: {allowed}, {{attributes.KEY}}")
    return names


def parse_rules(value: Any) -> list[FingerprintRule]:
    """The rules of a JSON list, validated; RuleError naming the first wrong rule and why."""
    if not isinstance(value, list):
        raise RuleError(None, "wrong_type", "rules must be a list of rule objects")
    if len(value) > MAX_RULES:
        raise RuleError(None, "too_many_rules", f"at most {MAX_RULES} rules, not {len(value)}")
    return [_rule(i, raw) for i, raw in enumerate(value)]


def _rule(index: int, raw: Any) -> FingerprintRule:
    if not isinstance(raw, dict):
        raise RuleError(index, "not_an_object", "a rule must be an object with match, fingerprint and title")
    unknown = sorted(set(raw) - set(RULE_FIELDS))
    if unknown:
        raise RuleError(
            index, "unknown_field", f"unknown field {unknown[0][:60]!r}; a rule has {', '.join(RULE_FIELDS)}"
        )
    for name in ("match", "fingerprint"):
        if name not in raw:
            raise RuleError(index, "missing_field", f"a rule needs {name!r} (title is optional)")
    match = _match(index, raw["match"])
    fingerprint = _template(index, "fingerprint", raw["fingerprint"])
    variables = set(template_variables(fingerprint))
    if len(variables) > MAX_VARIABLES:
        raise RuleError(index, "bad_template", f"fingerprint names at most {MAX_VARIABLES} distinct variables")
    title = raw.get("title")
    if title is not None:
        title = _template(index, "title", title)
        # A title varies only with what its group is keyed on: each issue has one title.
        extra = [v for v in template_variables(title) if v not in variables]
        if extra:
            raise RuleError(
                index, "bad_template_variable", f"title variable {{{extra[0]}}} is not in the fingerprint template"
            )
    return FingerprintRule(match, fingerprint, title)


def _match(index: int, raw: Any) -> Match:
    if not isinstance(raw, dict):
        raise RuleError(index, "wrong_type", "match must be an object")
    unknown = sorted(set(raw) - set(MATCH_KEYS))
    if unknown:
        raise RuleError(
            index, "unknown_field", f"match has no field {unknown[0][:60]!r}; its fields: {', '.join(MATCH_KEYS)}"
        )
    for key in MATCH_KEYS[:-1]:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise RuleError(index, "wrong_type", f"match.{key} must be a string")
        if isinstance(value, str) and len(value) > MAX_PATTERN:
            raise RuleError(index, "too_long", f"match.{key} is longer than {MAX_PATTERN} characters")
        if isinstance(value, str) and "\x00" in value:
            raise RuleError(index, "wrong_type", f"match.{key} must not contain NUL")
    if raw.get("type") is not None and raw["type"] not in FAILURE_TYPES:
        kinds = " or ".join(FAILURE_TYPES)
        raise RuleError(index, "unknown_type", f"match.type must be {kinds}: rules group errors and tool failures")
    attributes = raw.get("attributes", {})
    if not isinstance(attributes, dict):
        raise RuleError(index, "wrong_type", "match.attributes must be an object of attribute name -> value")
    if len(attributes) > MAX_ATTRIBUTES:
        raise RuleError(index, "too_long", f"match.attributes holds at most {MAX_ATTRIBUTES} conditions")
    for key, value in attributes.items():
        if len(key) > MAX_PATTERN or (isinstance(value, str) and len(value) > MAX_PATTERN):
            raise RuleError(index, "too_long", f"match.attributes entries are at most {MAX_PATTERN} characters")
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            # Bound as a 64-bit integer in SQL (as attributes are stored): a larger one could never be compared.
            raise RuleError(index, "wrong_type", f"match.attributes[{key[:60]!r}] must fit in 64 bits")
    if all(raw.get(key) is None for key in MATCH_KEYS[:-1]) and not attributes:
        reason = "match needs at least one condition (a rule matching every failure is a mistake)"
        raise RuleError(index, "empty_match", reason)
    try:
        return Match.from_json(raw)
    except ValueError as exc:
        raise RuleError(index, "wrong_type", str(exc)) from None


def _template(index: int, name: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RuleError(index, "wrong_type", f"{name} must be a non-empty string")
    if len(raw) > MAX_PATTERN:
        raise RuleError(index, "too_long", f"{name} is longer than {MAX_PATTERN} characters")
    try:
        template_variables(raw)
    except LookupError as exc:
        raise RuleError(index, "bad_template_variable", f"{name}: {exc.args[0]}") from None
    except ValueError as exc:
        raise RuleError(index, "bad_template", f"{name}: {exc}") from None
    return raw


_NUMBER_TYPES = {"integer", "real", "number"}


def attribute_value(key: str | None) -> tuple[bool, Any]:
    """(present, JSON value) of an attribute key as `dialect.json_attribute_key` reads it, on either backend."""
    if key is None:
        return False, None
    kind, _, text = key.partition(":")
    if kind in ("text", "string"):
        return True, text
    if kind in ("true", "false"):  # SQLite names booleans by value
        return True, kind == "true"
    if kind == "boolean":
        return True, text == "true"
    if kind in _NUMBER_TYPES:
        integral = kind == "integer" or (kind == "number" and text.lstrip("-").isdigit())
        return True, int(text) if integral else float(text)
    if kind == "null":
        return True, None
    return True, orjson.loads(text)  # object or array: its JSON text


def typed_values(values: dict[str, str | None]) -> dict[str, Any]:
    """Each variable's value as JSON (attributes typed, whatever the backend); absent attributes left out."""
    out: dict[str, Any] = {}
    for name, key in values.items():
        if name.startswith(ATTRIBUTE_PREFIX):
            present, value = attribute_value(key)
            if present:
                out[name] = value
        else:
            out[name] = key
    return out


def fingerprint(rule: FingerprintRule, values: dict[str, str | None]) -> str:
    """A rule group's fingerprint: a hash of the template and its values (the rule's position and version do not
    count, so reordering or editing other rules keeps an issue; equal templates and values join one issue)."""
    body = orjson.dumps(["rule", rule.fingerprint, typed_values(values)], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def render(template: str, values: dict[str, str | None]) -> str:
    """A template with each variable replaced by its value (strings as they are, other JSON as JSON, absent: empty)."""
    typed = typed_values(values)

    def text(m: re.Match[str]) -> str:
        value = typed.get(m.group(1).strip())
        if value is None:
            return ""
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return _VARIABLE.sub(text, template)


def rebase(key: str, selector: dict[str, Any], rules: list[FingerprintRule]) -> dict[str, Any] | None:
    """What a tracked failure issue names under the rules in force (None: nothing any more), for merged issues.

    A record belongs to the first rule in force that matches it, else to its signature's issue. So a signature issue
    leaves out every rule's records, and a rule issue (fingerprint `key`) keeps the parts of the rules in force that
    still give `key` for its values: a rule issue whose template no rule in force has names nothing. Other kinds are
    kept as they are.
    """
    parsed = parse_selector(selector)
    if isinstance(parsed, Signatures):
        return Signatures(parsed.signatures, tuple(rule.match for rule in rules)).to_json()
    if not isinstance(parsed, RuleGroup):
        return parsed.to_json()
    known = list({orjson.dumps(p.values, option=orjson.OPT_SORT_KEYS): p.values for p in parsed.parts}.values())
    parts = [
        RulePart(rule.match, tuple(r.match for r in rules[:index]), values)
        for index, rule in enumerate(rules)
        for values in known
        if set(values) == set(rule.variables) and fingerprint(rule, values) == key
    ]
    return RuleGroup(tuple(parts)).to_json() if parts else None
