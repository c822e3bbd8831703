"""A session's scorecard: success, tool health, latency, user satisfaction and GenAI trajectory figures.

Components are shares from 0 to 1 (null when the session has nothing to measure them on):

- `success`: the share of the session's traces with no failure record (`error`, `tool_failure`); records
  without a trace count as one trace together.
- `tool_health`: the share of tool calls that did not fail. Tool calls are spans with
  `gen_ai.operation.name = execute_tool` and every `tool_failure` record.
- `latency`: the share of timed records (duration above 0) no slower than `slow_ms` (default 2000 ms).
- `satisfaction`: 0 when the session has a negative user signal, else 1 when it has any user signal, else null.

`score` is 100 times the mean of the components that are not null, rounded to one decimal (100: nothing
went wrong that LoopKit can see). GenAI figures follow the OpenTelemetry GenAI conventions: `steps` are model
calls (`gen_ai.operation.name` of `chat`, `text_completion`, `generate_content`), `tool_calls` as above,
`input_tokens` / `output_tokens` the sums of `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens`
(integers only: attributes of another type are ignored).

Negative user signals: issue 16 part A documents the configurable rule of its `user_signals` diagnoser; until it
lands, `is_negative` is the default rule here: a `user_signal` record whose `score`, `feedback.score` or
`user_signal.score` is a number below 0, or whose `feedback`, `label`, `feedback.label` or `user_signal.label`
is one of NEGATIVE_LABELS (case-insensitive).
"""

from __future__ import annotations

from typing import Any

from loopkit_core.model import rfc3339
from loopkit_core.store.traces import SessionFacts, parse_attributes

NEGATIVE_LABELS = frozenset({"thumbs_down", "thumbs-down", "thumbsdown", "dislike", "negative", "bad", "-1"})
LABEL_KEYS = ("feedback", "label", "feedback.label", "user_signal.label")
SCORE_KEYS = ("score", "feedback.score", "user_signal.score")
STEP_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATION = "execute_tool"
SORTS = ("-start", "start", "score", "-score", "-failures", "-records", "-negative_signals")


def is_negative(attributes: dict[str, Any]) -> bool:
    """Whether a user_signal record's attributes mark it negative (the default rule, see the module docstring)."""
    for key in SCORE_KEYS:
        value = attributes.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            return True
    for key in LABEL_KEYS:
        value = attributes.get(key)
        if isinstance(value, str) and value.strip().lower() in NEGATIVE_LABELS:
            return True
    return False


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def summary(facts: SessionFacts) -> dict[str, Any]:
    """One session's summary and scorecard, as GET /v1/sessions answers it."""
    signals = negative = steps = tool_calls = typed = untyped = input_tokens = output_tokens = 0
    genai = False
    for kind, status, text in facts.detail:
        attributes = parse_attributes(text)
        if kind == "user_signal":
            signals += 1
            negative += is_negative(attributes)
        operation = attributes.get("gen_ai.operation.name")
        if isinstance(operation, str):
            genai = True
            if operation in STEP_OPERATIONS:
                steps += 1
            elif operation == TOOL_OPERATION:
                tool_calls += 1
                typed += kind == "tool_failure"
                untyped += kind != "tool_failure" and status == "error"
        input_tokens += _tokens(attributes.get("gen_ai.usage.input_tokens"))
        output_tokens += _tokens(attributes.get("gen_ai.usage.output_tokens"))
    # tool_failure records without GenAI attributes are tool calls too (failed ones); a failed execute_tool span
    # is normally typed tool_failure at ingest, but an explicit loopkit.signal may have typed it otherwise.
    all_tool_calls = tool_calls + max(facts.tool_failures - typed, 0)
    all_tool_failures = facts.tool_failures + untyped
    traces = max(facts.traces, 1)
    components = {
        "success": _share(traces - facts.failed_traces, traces),
        "tool_health": _share(all_tool_calls - all_tool_failures, all_tool_calls) if all_tool_calls else None,
        "latency": _share(facts.timed_calls - facts.slow_calls, facts.timed_calls) if facts.timed_calls else None,
        "satisfaction": (0.0 if negative else 1.0) if signals else None,
    }
    present = [v for v in components.values() if v is not None]
    score = round(100 * sum(present) / len(present), 1) if present else 100.0
    return {
        "session_id": facts.session_id,
        "start": rfc3339(facts.start_ns),
        "end": rfc3339(facts.end_ns),
        "duration_ms": round((facts.end_ns - facts.start_ns) / 1e6, 3),
        "records": facts.records,
        "traces": facts.traces,
        "failures": facts.failures,
        "user_signals": signals,
        "negative_signals": negative,
        "users": facts.users,
        "services": facts.services,
        "scorecard": {
            "score": score,
            **components,
            "slow_calls": facts.slow_calls,
            "slowest_ms": round(facts.max_duration_ms, 3),
            "tool_calls": all_tool_calls,
            "tool_failures": all_tool_failures,
            "genai": {
                "steps": steps,
                "tool_calls": tool_calls,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }
            if genai
            else None,
        },
    }


def _share(part: int, whole: int) -> float:
    return round(max(part, 0) / whole, 4)


def sort_key(sort: str) -> tuple[Any, bool]:
    """The key function and reverse flag for a `sort` of SORTS (ties: the newest session first)."""
    field = sort.lstrip("-")
    descending = sort.startswith("-")

    def key(s: dict[str, Any]) -> tuple[Any, str, str]:
        value = s["scorecard"]["score"] if field == "score" else s[field]
        return (value, s["end"], s["session_id"]) if descending else (value, _invert(s["end"]), s["session_id"])

    return key, descending


def _invert(text: str) -> str:
    # Ascending sorts still list the newest session first among ties: invert the RFC 3339 digits.
    return text.translate(str.maketrans("0123456789", "9876543210"))
