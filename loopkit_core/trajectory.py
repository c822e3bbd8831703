"""Agents' trajectories before and after a fix: session-level numbers a verdict reports, never decides on.

When the traces of an issue's operation carry OpenTelemetry GenAI attributes (`gen_ai.*`), a
verification reports, for the packet's window and the after-window, over the sessions that called
the operation (a session: the records sharing `session_id`; a trace without one counts alone):

- `sessions`: how many were read (the newest `MAX_CALLS` calls of the operation, their traces);
- `success_rate`: the share of sessions with no error and no tool failure record;
- `tokens_per_session`, `input_tokens_per_session`, `output_tokens_per_session`: the sums of
  `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens` (integers; other types are ignored);
- `steps_per_session`: model calls (`gen_ai.operation.name` chat, text_completion, generate_content);
- `tool_calls_per_session` and `tool_failure_rate`: `execute_tool` spans, and the share of them that
  failed (type `tool_failure`, or status error).

`delta` is after minus before. The verdict itself still comes from the verifiers alone.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from loopkit_core.window import Window

MAX_CALLS = 500  # calls of the operation whose traces are read, per window
MAX_RECORDS = 20_000  # records of those traces read, per window
STEP_OPERATIONS = frozenset(("chat", "text_completion", "generate_content"))
NUMBERS = (
    "success_rate",
    "tokens_per_session",
    "input_tokens_per_session",
    "output_tokens_per_session",
    "steps_per_session",
    "tool_calls_per_session",
    "tool_failure_rate",
)


def operation(issue: dict[str, Any]) -> tuple[str, str | None] | None:
    """The (name, service) of the operation an issue is about, from its stats or selector."""
    stats, selector = issue.get("stats") or {}, issue.get("selector") or {}
    name = stats.get("span_name") or stats.get("operation") or selector.get("name")
    service = stats.get("service") or selector.get("service")
    return (name, service) if isinstance(name, str) and name else None


def trajectory(issue: dict[str, Any], before: Window, after: Window) -> dict[str, Any] | None:
    """Session-level numbers before and after, and their deltas; None when the operation is not a GenAI one."""
    op = operation(issue)
    if op is None:
        return None
    traces_b, traces_a = _traces(before, op), _traces(after, op)
    if not any(_is_genai(r) for trace in traces_b.values() for r in trace):
        return None
    was, now = _numbers(traces_b), _numbers(traces_a)
    delta = {
        key: (round(now[key] - was[key], 4) if now[key] is not None and was[key] is not None else None)
        for key in NUMBERS
    }
    return {"before": was, "after": now, "delta": delta}


def _traces(window: Window, op: tuple[str, str | None]) -> dict[str, list[dict[str, Any]]]:
    name, service = op
    selector: dict[str, Any] = {"name": name} if service is None else {"name": name, "service": service}
    calls = window.sample(selector, MAX_CALLS)
    trace_ids = sorted({r["trace_id"] for r in calls if r.get("trace_id") and r["type"] != "user_signal"})
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in window.traces(trace_ids, MAX_RECORDS):
        grouped[r["trace_id"]].append(r)
    return grouped


def _is_genai(record: dict[str, Any]) -> bool:
    return any(key.startswith("gen_ai.") for key in record.get("attributes") or {})


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _numbers(traces: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trace_id, found in traces.items():
        session = next((r["session_id"] for r in found if r.get("session_id")), None)
        sessions[session or f"trace:{trace_id}"].extend(found)
    n = len(sessions)
    ok = tokens_in = tokens_out = steps = tools = tool_failures = 0
    for found in sessions.values():
        ok += not any(r["type"] in ("error", "tool_failure") for r in found)
        for r in found:
            attributes = r.get("attributes") or {}
            tokens_in += _count(attributes.get("gen_ai.usage.input_tokens"))
            tokens_out += _count(attributes.get("gen_ai.usage.output_tokens"))
            kind = attributes.get("gen_ai.operation.name")
            steps += kind in STEP_OPERATIONS
            if kind == "execute_tool":
                tools += 1
                tool_failures += r["type"] == "tool_failure" or r["status"] == "error"

    def per(x: int, of: int) -> float | None:
        return round(x / of, 4) if of else None

    return {
        "sessions": n,
        "success_rate": per(ok, n),
        "tokens_per_session": per(tokens_in + tokens_out, n),
        "input_tokens_per_session": per(tokens_in, n),
        "output_tokens_per_session": per(tokens_out, n),
        "steps_per_session": per(steps, n),
        "tool_calls_per_session": per(tools, n),
        "tool_failure_rate": per(tool_failures, tools),
    }
