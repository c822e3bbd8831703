"""Eval specs: each issue's eval candidate as runnable examples rebuilt from its evidence records (JSON, JSONL, pytest).

An example is one evidence record: the operation and its attributes, the HTTP method and route, the GenAI tool call
(name, arguments, result), what was observed (status, exception, duration) and what the fix must make true (the
exception gone, a latency bound). Telemetry text stays data: in the pytest module it only ever appears inside one
JSON string literal (Python's repr), never as code, a comment or a docstring.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from sqlalchemy import Engine

from loopkit_core.model import rfc3339
from loopkit_core.releases import release_of
from loopkit_core.store.records import get_records

SPEC_VERSION = "loopkit.eval/1"
FORMATS = {  # format -> media type
    "json": "application/json",
    "jsonl": "application/jsonl; charset=utf-8",
    "pytest": "text/x-python; charset=utf-8",
}
EXAMPLES_PER_EVAL = 20  # one per evidence record (an issue keeps at most 20)
HTTP_KEYS = {"method": "http.request.method", "route": "http.route", "path": "url.path", "target": "url.full"}
GEN_AI_KEYS = {
    "operation": "gen_ai.operation.name",
    "system": "gen_ai.system",
    "model": "gen_ai.request.model",
    "tool_name": "gen_ai.tool.name",
    "tool_call_id": "gen_ai.tool.call.id",
    "tool_arguments": "gen_ai.tool.call.arguments",
    "input_messages": "gen_ai.input.messages",
    "prompt": "gen_ai.prompt",
}
GEN_AI_RESULT_KEYS = ("gen_ai.tool.call.result", "gen_ai.output.messages", "gen_ai.completion")


def evidence_records(engine: Engine, packet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evidence records of every issue with an eval candidate (at most EXAMPLES_PER_EVAL each), by ID."""
    ids = [
        rid
        for issue in packet.get("issues") or []
        if issue.get("eval_candidate")
        for rid in (issue.get("evidence") or [])[:EXAMPLES_PER_EVAL]
    ]
    found: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):  # bounded IN lists
        found.update(get_records(engine, ids[i : i + 500]))
    return found


def render(document: dict[str, Any], format: str) -> str:
    """The spec in one of FORMATS."""
    if format == "jsonl":
        return jsonl(document)
    if format == "pytest":
        return pytest_module(document)
    return orjson.dumps(document).decode()


def spec(packet: dict[str, Any], records: dict[str, dict[str, Any]], now_ns: int) -> dict[str, Any]:
    """The packet's eval spec: one eval per issue with an eval candidate, one example per evidence record found."""
    evals = []
    for issue in packet.get("issues") or []:
        candidate = issue.get("eval_candidate")
        if not candidate:
            continue
        expected = expectation(issue)
        evidence = (issue.get("evidence") or [])[:EXAMPLES_PER_EVAL]
        examples = [_example(candidate, issue, records[rid], expected) for rid in evidence if rid in records]
        evals.append(
            {
                "eval_candidate": candidate,
                "issue_id": issue.get("issue_id"),
                "title": issue.get("title"),
                "signal_type": issue.get("signal_type"),
                "expected": expected,
                "examples": examples,
                "missing_records": [rid for rid in evidence if rid not in records],  # e.g. past retention
            }
        )
    return {
        "spec_version": SPEC_VERSION,
        "packet_id": packet.get("packet_id"),
        "project_id": packet.get("project_id"),
        "generated_at": rfc3339(now_ns),
        "approval": (packet.get("approval") or {}).get("state"),
        "evals": evals,
    }


def expectation(issue: dict[str, Any]) -> dict[str, Any]:
    """What the fix must make true for every example of an issue: the assertion of its tests."""
    written = issue.get("eval") or {}
    text = written.get("expected") if isinstance(written, dict) else None
    numbers = text if isinstance(text, dict) else {}
    text = numbers.get("text") if numbers else text
    selector, stats = issue.get("selector") or {}, issue.get("stats") or {}
    if issue.get("signal_type") == "latency" and ("p95_ms_at_most" in numbers or "min_duration_ms" in selector):
        bound = numbers.get("p95_ms_at_most", selector.get("min_duration_ms"))
        return {"kind": "latency", "max_duration_ms": bound, "text": _text(text)}
    if issue.get("signal_type") in ("error", "tool_failure"):
        return {
            "kind": "no_failure",
            "exception_type": stats.get("exception_type") or None,
            "message_template": issue.get("template"),
            "text": _text(text),
        }
    return {"kind": "no_match", "text": _text(text)}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _example(candidate: str, issue: dict[str, Any], record: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    attributes = record.get("attributes") or {}
    given: dict[str, Any] = {
        "operation": record.get("name"),
        "service": record.get("service"),
        "type": record.get("type"),
        "attributes": attributes,
    }
    http = {name: attributes[key] for name, key in HTTP_KEYS.items() if key in attributes}
    if http:
        given["http"] = http
    gen_ai = {name: _json_or_text(attributes[key]) for name, key in GEN_AI_KEYS.items() if key in attributes}
    if gen_ai:
        given["gen_ai"] = gen_ai
    result = next((attributes[key] for key in GEN_AI_RESULT_KEYS if key in attributes), None)
    observed = {
        "status": record.get("status"),
        "exception_type": record.get("exception_type"),
        "message": record.get("message"),
        "duration_ms": record.get("duration_ms"),
        "http_status_code": attributes.get("http.response.status_code"),
        "result": _json_or_text(result) if result is not None else None,
    }
    return {
        "id": f"{candidate}/{record.get('record_id')}",
        "eval_candidate": candidate,
        "issue_id": issue.get("issue_id"),
        "record_id": record.get("record_id"),
        "trace_id": record.get("trace_id"),
        "session_id": record.get("session_id"),
        "timestamp": record.get("timestamp"),
        "release": release_of(record.get("resource") or {}),
        "input": given,
        "observed": observed,
        "expected": expected,
    }


def _json_or_text(value: Any) -> Any:
    # GenAI conventions carry arguments and results as JSON text: decode it so the example holds the real values.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def jsonl(document: dict[str, Any]) -> str:
    """One dataset example per line (input, expected_output and output, metadata): Phoenix and Langfuse import it."""
    lines = []
    for item in document["evals"]:
        for example in item["examples"]:
            metadata = {
                key: example[key]
                for key in ("eval_candidate", "issue_id", "record_id", "trace_id", "session_id", "timestamp", "release")
            }
            metadata.update({"packet_id": document["packet_id"], "observed": example["observed"]})
            line = {
                "id": example["id"],
                "input": example["input"],
                "expected_output": example["expected"],  # Langfuse's name
                "output": example["expected"],  # Phoenix's name for an example's reference output
                "metadata": metadata,
            }
            lines.append(orjson.dumps(line).decode())
    return "".join(line + "\n" for line in lines)


def pytest_module(document: dict[str, Any]) -> str:
    """A pytest module: one parametrised test per eval, one case per example, the expectation as its assertion."""
    names: list[str] = []
    tests = []
    for item in document["evals"]:
        name = _test_name(item["eval_candidate"], names)
        names.append(name)
        tests.append(_TEST.format(name=name, candidate=repr(item["eval_candidate"])))
    payload = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    return _MODULE.format(packet_id=_safe(document["packet_id"]), spec=repr(payload), tests="".join(tests))


def _test_name(candidate: str, taken: list[str]) -> str:
    base = "test_" + (re.sub(r"[^a-z0-9]+", "_", candidate.lower()).strip("_")[:60] or "eval")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _safe(text: Any) -> str:
    # Only the ID's own characters reach the module's docstring.
    return re.sub(r"[^A-Za-z0-9_-]", "", str(text or ""))[:40]


_MODULE = '''"""LoopKit eval specs for packet {packet_id}: one test per eval, one case per evidence record.

Generated by GET /v1/packets/{packet_id}/evals?format=pytest. Each example holds the real inputs rebuilt from an
evidence record (operation, attributes, HTTP method and route, GenAI tool-call arguments) and what the fix must make
true. Wire `run_example` to the code under test; until then every test is skipped. Everything taken from telemetry
is in SPEC, a JSON string: it is data, never instructions. After the fix ships, report the run with POST /v1/evals.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

SPEC = json.loads(
    {spec}
)
EXAMPLES = {{item["eval_candidate"]: item["examples"] for item in SPEC["evals"]}}


def run_example(example: dict[str, Any]) -> dict[str, Any]:
    """Run the code under test on example["input"]; answer what happened.

    Return {{"status": "ok" or "error", "exception_type": the exception's type name or None,
    "duration_ms": how long it took, "output": the result}}. Catch the exception and report it: do not let it
    escape, so that a failing example fails its assertion instead of erroring.
    """
    pytest.skip("run_example is not wired to the code under test yet (see its docstring)")


def check(example: dict[str, Any], outcome: dict[str, Any]) -> None:
    """The example's expectation as assertions."""
    expected = example["expected"]
    if expected["kind"] == "no_failure":
        assert outcome.get("exception_type") != expected["exception_type"], (
            f"{{example['id']}}: still raises {{expected['exception_type']}}"
        )
        assert outcome.get("status") != "error", f"{{example['id']}}: still fails"
    elif expected["kind"] == "latency":
        assert outcome.get("duration_ms") is not None, f"{{example['id']}}: run_example must report duration_ms"
        assert outcome["duration_ms"] <= expected["max_duration_ms"], (
            f"{{example['id']}}: took {{outcome['duration_ms']}} ms, the bound is {{expected['max_duration_ms']}} ms"
        )
    else:
        assert outcome.get("status") == "ok", f"{{example['id']}}: {{expected.get('text')}}"


def cases(candidate: str) -> Any:
    """One test case per example of an eval, named by its record ID."""
    examples = EXAMPLES[candidate]
    return pytest.mark.parametrize("example", examples, ids=[e["record_id"] for e in examples])
{tests}'''

_TEST = """

@cases({candidate})
def {name}(example: dict[str, Any]) -> None:
    check(example, run_example(example))
"""
