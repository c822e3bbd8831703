"""Negative user signals: which `user_signal` records count as negative, and what the user was doing.

A record is a user signal when its type is `user_signal` (the records shape's `type`, or the span
attribute `loopkit.signal = user_signal`). It is **negative** when any of these holds (the defaults,
configurable with the `negative_signal_*` settings, see docs/configuration.md):

- a score attribute (`loopkit.signal.score`, `feedback.score`, `score`, `rating`), a number (not a
  boolean), is at most `negative_signal_max_score` (0: a thumbs-down sent as -1 or as 0 of 0/1);
- a label attribute (`loopkit.signal.label`, `feedback`, `feedback.label`, `feedback.value`,
  `feedback.type`), a string, is one of `negative_signal_labels` (case and `-`/` ` vs `_` ignored):
  `thumbs_down`, `negative`, `dislike`, `downvote`, `unhelpful`, `not_helpful`, `bad`, `retry`,
  `regenerate`, `abandoned`;
- the record's own name is one of those labels (a span called `thumbs_down`).

An attribute of the wrong type (a score sent as the text "-1", a label sent as a number) is stored
like any other attribute and ignored here: it never makes a signal negative and never fails.

Attribution (what the user was doing): a negative signal belongs to its own trace when that trace
holds other records in the read range (the signal was sent inside the request it rates); else to
its session: the latest root span (no parent) of the same `session_id` that started at most
`lookback_seconds` (900) before the signal; else to nothing (counted, never linked).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from loopkit_core.window import Window

SCORE_KEYS = ("loopkit.signal.score", "feedback.score", "score", "rating")
LABEL_KEYS = ("loopkit.signal.label", "feedback", "feedback.label", "feedback.value", "feedback.type")
NEGATIVE_LABELS = (
    "thumbs_down",
    "negative",
    "dislike",
    "downvote",
    "unhelpful",
    "not_helpful",
    "bad",
    "retry",
    "regenerate",
    "abandoned",
)
SECOND_NS = 10**9


@dataclass(frozen=True)
class NegativeRule:
    """What makes a user signal negative, and how far back a session is searched for what it rates."""

    score_keys: tuple[str, ...] = SCORE_KEYS
    max_score: float = 0.0
    label_keys: tuple[str, ...] = LABEL_KEYS
    labels: tuple[str, ...] = NEGATIVE_LABELS
    lookback_seconds: float = 900.0
    max_signals: int = 10_000  # user signals read per window (the newest), so a flood stays bounded
    max_context_records: int = 50_000  # records of the signals' traces and sessions read per window

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> NegativeRule:
        """A rule from a plain dict (settings or diagnose options); missing keys keep their default."""
        values = dict(options or {})
        for key in ("score_keys", "label_keys", "labels"):
            if isinstance(values.get(key), str):
                values[key] = tuple(v.strip() for v in values[key].split(",") if v.strip())
            elif isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        rule = cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
        return rule

    def label(self, value: Any) -> str | None:
        """The normalised label if `value` is a negative label, else None (non-strings are ignored)."""
        if not isinstance(value, str):
            return None
        normal = value.strip().lower().replace("-", "_").replace(" ", "_")
        return normal if normal in {_normal(label) for label in self.labels} else None


def _normal(label: str) -> str:
    return label.strip().lower().replace("-", "_").replace(" ", "_")


def negative_reason(record: dict[str, Any], rule: NegativeRule) -> str | None:
    """Why a user_signal record is negative (e.g. `feedback=thumbs_down`, `score=-1`), or None."""
    if record.get("type") != "user_signal":
        return None
    attributes = record.get("attributes") or {}
    for key in rule.score_keys:
        value = attributes.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= rule.max_score:
            return f"{key}={value:g}"
    for key in rule.label_keys:
        label = rule.label(attributes.get(key))
        if label is not None:
            return f"{key}={label}"
    label = rule.label(record.get("name"))
    return f"name={label}" if label is not None else None


@dataclass
class Attributed:
    """One negative signal and what it was attributed to (`via` None: nothing, counted but not linked)."""

    signal: dict[str, Any]
    reason: str
    via: str | None = None  # "trace" | "session" | None
    root: dict[str, Any] | None = None  # the root span of what the user was doing
    context: list[dict[str, Any]] = field(default_factory=list)  # every record of that trace

    @property
    def operation(self) -> tuple[str, str] | None:
        """The rated operation (name, service): the root span's, or None when unattributed."""
        return (self.root["name"], self.root["service"]) if self.root else None

    @property
    def session(self) -> str | None:
        """The session of the signal, else of what it was attributed to."""
        return self.signal.get("session_id") or (self.root or {}).get("session_id")


@dataclass
class Signals:
    """A window's user signals: how many were read, and each negative one with its attribution."""

    read: int
    truncated: bool
    negative: list[Attributed]

    @property
    def unattributed(self) -> int:
        """Negative signals with no trace or session to link them to."""
        return sum(1 for a in self.negative if a.via is None)


def attribute(window: Window, rule: NegativeRule, context: bool = True) -> Signals:
    """Every negative user signal of the window (the newest `max_signals`), attributed as the module says.

    With `context=False` a signal attributed through its session gets its root span but not the rest of
    the root's trace (`load_context` reads it later, for the few signals that need it).
    """
    read = window.sample({"type": "user_signal"}, rule.max_signals)
    negatives = [Attributed(s, reason) for s in read if (reason := negative_reason(s, rule)) is not None]
    lookback = int(rule.lookback_seconds * SECOND_NS)
    wide = Window(window.project_id, max(window.start_ns - lookback, 0), window.end_ns, window.engine)
    budget = rule.max_context_records
    by_trace = _group(wide.traces([a.signal["trace_id"] for a in negatives if a.signal.get("trace_id")], budget))
    pending_sessions = []
    for a in negatives:
        own = [r for r in by_trace.get(a.signal.get("trace_id") or "", []) if r["type"] != "user_signal"]
        if own:
            a.via, a.context = "trace", own
            a.root = _root(own)
        elif a.signal.get("session_id"):
            pending_sessions.append(a)
    session_ids = sorted({a.signal["session_id"] for a in pending_sessions})
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in wide.sessions(session_ids, budget, roots_only=True):
        by_session[r["session_id"]].append(r)
    for a in pending_sessions:
        ts = a.signal["timestamp_unix_nano"]
        before = [
            r for r in by_session.get(a.signal["session_id"], []) if ts - lookback <= r["timestamp_unix_nano"] <= ts
        ]
        if before:
            a.via, a.root = "session", max(before, key=lambda r: (r["timestamp_unix_nano"], r["record_id"]))
    if context:
        load_context(window, rule, pending_sessions)
    return Signals(len(read), len(read) >= rule.max_signals, negatives)


def load_context(window: Window, rule: NegativeRule, attributed: list[Attributed]) -> None:
    """Read every record of the root span's trace for signals attributed through their session."""
    pending = [a for a in attributed if a.via == "session" and a.root is not None and not a.context]
    lookback = int(rule.lookback_seconds * SECOND_NS)
    wide = Window(window.project_id, max(window.start_ns - lookback, 0), window.end_ns, window.engine)
    roots = sorted({a.root["trace_id"] for a in pending if a.root and a.root.get("trace_id")})
    by_root_trace = _group(wide.traces(roots, rule.max_context_records))
    for a in pending:
        assert a.root is not None
        a.context = by_root_trace.get(a.root.get("trace_id") or "", [a.root])


def split(signals: Signals, middle_ns: int) -> tuple[Signals, Signals]:
    """The signals before and from `middle_ns` (attribution is per signal, so halves need no second read)."""
    early = [a for a in signals.negative if a.signal["timestamp_unix_nano"] < middle_ns]
    late = [a for a in signals.negative if a.signal["timestamp_unix_nano"] >= middle_ns]
    return Signals(signals.read, signals.truncated, early), Signals(signals.read, signals.truncated, late)


def _group(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in found:
        grouped[r["trace_id"]].append(r)
    return grouped


def _root(trace: list[dict[str, Any]]) -> dict[str, Any]:
    roots = [r for r in trace if not r.get("parent_span_id")]
    return min(roots or trace, key=lambda r: (r["timestamp_unix_nano"], r["record_id"]))
