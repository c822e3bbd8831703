"""The MCP tools: each one validates its arguments with the REST validators, calls the loop service and answers
with the REST JSON (bounded) plus a short summary. Refusals are LoopErrors, with the REST codes and messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from loopkit_core.identity import Principal
from loopkit_core.loop import Loop, LoopError
from loopkit_core.loop.requests import (
    FILTERS,
    MAX_SINCE_MINUTES,
    STAGE_FIELDS,
    diagnose_request,
    loops_limit,
    packet_limit,
    telemetry_request,
    verify_request,
)
from loopkit_core.mcp import bounds
from loopkit_core.scopes import DASHBOARD_READ, REPORTS_READ, RUNS_WRITE, TELEMETRY_READ

MAX_RECORD_IDS = 50
READERS = (REPORTS_READ, DASHBOARD_READ)  # agents read with reports:read, people's dashboard key with dashboard:read
Answer = tuple[dict[str, Any], str]  # (structured content: the REST JSON, a one-line summary)


@dataclass(frozen=True)
class Tool:
    """One MCP tool: its name, what it does, its JSON Schema, the scopes that may call it, and its handler."""

    name: str
    title: str
    description: str
    properties: dict[str, Any]
    scopes: tuple[str, ...]  # any one of them
    writes: bool
    run: Callable[[Loop, Principal, dict[str, Any]], Answer]
    required: tuple[str, ...] = ()

    def input_schema(self) -> dict[str, Any]:
        """The tool's arguments as a JSON Schema object."""
        schema: dict[str, Any] = {"type": "object", "properties": self.properties, "additionalProperties": False}
        if self.required:
            schema["required"] = list(self.required)
        return schema

    def allowed(self, principal: Principal) -> bool:
        """Whether the principal's key holds a scope this tool needs."""
        return any(scope in principal.scopes for scope in self.scopes)

    def call(self, loop: Loop, principal: Principal, arguments: Mapping[str, Any] | None) -> Answer:
        """Check the scope, then run the tool; LoopError on any refusal."""
        if not self.allowed(principal):
            raise LoopError(
                403, f"the {principal.key_kind} key of this project does not have the {self.scopes[-1]} scope"
            )
        return self.run(loop, principal, dict(arguments or {}))


# --- argument checks (the wording of the REST body checks) -------------------------------------------------------


def _only(args: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise LoopError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _packet_id(args: Mapping[str, Any]) -> str:
    packet_id = args.get("packet_id")
    if not isinstance(packet_id, str) or not packet_id or len(packet_id) > 40:
        raise LoopError(400, "packet_id is required: the packet_id of a stored packet")
    return packet_id


def _int(args: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LoopError(400, f"{name} must be an integer from {low} to {high}")
    return value


def _query_values(name: str, value: Any) -> list[str]:
    # The REST query string carries text; the same validators then give the same messages for the same values.
    if name in FILTERS or name == "issue":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise LoopError(400, f"{name} must be a string or a list of strings")
    return [_text(value) or ""]


def _text(value: Any) -> str | None:
    # A JSON value as the REST query string would carry it (None: absent), for the REST limit checks. The standard
    # library's encoder, as JSON integers may exceed the 64 bits orjson takes (a 2**70 limit is a 400, not a crash).
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


# --- the tools ---------------------------------------------------------------------------------------------------


def project(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """The key's project: quota, expiry, counts, the dashboard URL (which carries no key)."""
    _only(args, set())
    found = loop.project(principal)
    memory = loop.memory(principal)
    found["key_kind"] = principal.key_kind
    found["counts"] = {
        "records_accepted": found["records_accepted"],
        "issues_verified": memory["verified_total"],
        "issues_regressed": memory["regressed_total"],
        "packets_approved_in_flight": len(memory["in_flight"]),
        "packets_approved_in_flight_truncated": memory["in_flight_truncated"],
    }
    found["dashboard_url"] = f"{loop.settings.base_url()}/v1/dashboard"
    summary = (
        f"project {found['project_id']} ({found.get('project_name')}, {found.get('kind')}): "
        f"{found['records_accepted']} records accepted, {memory['verified_total']} issues verified, "
        f"{memory['regressed_total']} regressed; dashboard {found['dashboard_url']}"
    )
    return {"ok": True, "project": found}, summary


def telemetry(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """Records by ID (full provenance), or a page of a window with filters and a cursor."""
    record_ids = args.pop("record_ids", None)
    if record_ids is not None:
        if args:
            raise LoopError(400, f"record_ids cannot be combined with {', '.join(sorted(args))}")
        if (
            not isinstance(record_ids, list)
            or not 1 <= len(record_ids) <= MAX_RECORD_IDS
            or not all(isinstance(r, str) for r in record_ids)
        ):
            raise LoopError(400, f"record_ids must be a list of 1 to {MAX_RECORD_IDS} record IDs")
        found, missing = [], []
        for record_id in record_ids:
            try:
                found.append(loop.record(principal, record_id))
            except LoopError as exc:
                if exc.status != 404:
                    raise
                missing.append(record_id)
        if not found:
            raise LoopError(404, f"no record {record_ids[0][:40]!r} in this project")
        keep = bounds.records_that_fit(found)
        body: dict[str, Any] = {"ok": True, "records": found[:keep], "missing": missing}
        if keep < len(found):
            rest = ", ".join(r["record_id"] for r in found[keep:])
            body["records_cut"] = {"returned": keep, "rest": f"call loopkit_telemetry with record_ids=[{rest}]"}
        return body, f"{keep} record(s) of {len(record_ids)} asked for; {len(missing)} not in this project"
    args.setdefault("limit", bounds.DEFAULT_RECORDS)
    request = telemetry_request({name: _query_values(name, value) for name, value in args.items()})
    page = loop.telemetry(principal, request)
    keep = bounds.records_that_fit(page["records"])
    cut = keep < len(page["records"])
    if cut:
        # Read the page again at the size that fits, so next_cursor continues right after the last record shown.
        page = loop.telemetry(principal, replace(request, limit=keep))
    body = {"ok": True, **page}
    if cut:
        body["records_cut"] = {
            "returned": keep,
            "asked_for": request.limit,
            "rest": "call loopkit_telemetry with cursor=next_cursor (and the same filters) for the next records",
        }
    more = "; more with cursor=next_cursor" if page["next_cursor"] else ""
    window = page["window"]
    return body, f"{len(page['records'])} record(s) in [{window['start']}, {window['end']}){more}"


def diagnose(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """Run the diagnosers over a window and store the packet; the answer starts with the loop's memory."""
    diagnosed = loop.diagnose(principal, diagnose_request(args, loop.diagnosers()))
    memory, packet = diagnosed["memory"], diagnosed["packet"]
    issues = packet.get("issues") or []
    summary = (
        f"memory: {memory.get('new_issues')} new issue(s), {memory.get('verified_total')} verified, "
        f"{memory.get('regressed_total')} regressed, {len(memory.get('in_flight') or [])} approved in flight. "
        f"Packet {packet['packet_id']}: {len(issues)} issue(s)"
        + "".join(f"; {i.get('issue_id')} {i.get('title') or i.get('diagnoser')} x{i.get('count')}" for i in issues[:5])
    )
    return {"ok": True, "memory": memory, "packet": bounds.packet_page(packet, 0, bounds.DEFAULT_ISSUES)}, summary


def packets(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """The newest packets (summaries), newest first."""
    _only(args, {"limit"})
    found = loop.packets(principal, packet_limit(_text(args.get("limit"))))
    return {"ok": True, "packets": found}, f"{len(found)} packet(s), newest first" + "".join(
        f"; {p.get('packet_id')} ({p.get('status')})" for p in found[:5]
    )


def packet(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """One packet, its issues a page at a time."""
    _only(args, {"packet_id", "issue_offset", "issue_limit"})
    packet_id = _packet_id(args)
    offset = _int(args, "issue_offset", 0, 0, 1_000_000)
    limit = _int(args, "issue_limit", bounds.DEFAULT_ISSUES, 1, bounds.MAX_ISSUES_SHOWN)
    found = loop.packet(principal, packet_id)
    shown = bounds.packet_page(found, offset, limit)
    total = len(found.get("issues") or [])
    summary = (
        f"packet {packet_id} ({found.get('status')}): issues {offset + 1}-{offset + len(shown['issues'])} of {total}"
    )
    return {"ok": True, "packet": shown}, summary


def handoff(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """A packet rendered by a renderer plugin, a bounded slice of it at a time."""
    _only(args, {"packet_id", "format", "offset", "max_chars"})
    packet_id = _packet_id(args)
    name = args.get("format", "json")
    if not isinstance(name, str):
        raise LoopError(400, "format must be a string: json, markdown, prompt or a plugin's format")
    offset = _int(args, "offset", 0, 0, 1_000_000_000)
    max_chars = _int(args, "max_chars", bounds.DEFAULT_HANDOFF_CHARS, 1000, bounds.MAX_HANDOFF_CHARS)
    rendered = loop.handoff(principal, packet_id, name)
    text, next_offset = bounds.text_page(rendered.text, offset, max_chars)
    body = {
        "ok": True,
        "packet_id": packet_id,
        "format": rendered.format,
        "media_type": rendered.media_type,
        "text": text,
        "offset": offset,
        "total_chars": len(rendered.text),
        "next_offset": next_offset,
    }
    if next_offset is not None:
        text += (
            f"\n\n[cut at character {next_offset} of {len(rendered.text)}: call loopkit_handoff with "
            f"packet_id={packet_id!r}, format={name!r}, offset={next_offset} for the rest]"
        )
    return body, text


def improve(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """Record a stage of the loop (issue opened, PR opened, merged, deployed) for an approved packet."""
    _only(args, {"packet_id", *STAGE_FIELDS})
    packet_id = _packet_id(args)
    stage = args.get("stage")
    if not isinstance(stage, str):
        raise LoopError(400, "stage is required: issue_opened, pr_opened, merged or deployed")
    recorded = loop.record_stage(principal, packet_id, stage, args.get("url"), args.get("note"), args.get("issue_id"))
    return {"ok": True, "stage": recorded}, f"recorded {stage} for packet {packet_id}"


def verify(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """Verdicts for a packet's issues on the window after approval; stored, as POST /v1/runs/verify stores them."""
    record = args.pop("record", True)
    if not isinstance(record, bool):
        raise LoopError(400, "record must be true or false")
    if not record:
        raise LoopError(400, "record: false is not supported: every verification is recorded (docs/mcp.md)")
    verification = loop.verify(principal, verify_request(args))
    verdicts = verification.get("verdicts") or []
    summary = f"verification of {verification.get('packet_id')}: " + (
        "; ".join(f"{v.get('issue_id')} {v.get('verdict')}" for v in verdicts) or "no verdicts"
    )
    return {"ok": True, "verification": verification}, summary


def loops(loop: Loop, principal: Principal, args: dict[str, Any]) -> Answer:
    """The loops: packets with their stages and verifications, and the funnel."""
    _only(args, {"limit"})
    found = loop.loops(principal, loops_limit(_text(args.get("limit"))))
    body = {"ok": True, **found}
    keep = bounds.records_that_fit(found["loops"], bounds.MAX_ANSWER_CHARS - bounds.size(found["funnel"]))
    if keep < len(found["loops"]):
        body["loops"] = found["loops"][:keep]
        body["loops_cut"] = {
            "returned": keep,
            "rest": "a person sees every loop on the dashboard; or pass a smaller limit",
        }
    funnel = found["funnel"]
    summary = (
        f"{len(body['loops'])} loop(s); funnel: {funnel.get('loops')} diagnosed, "
        f"{funnel['to_approval']['count']} approved, {funnel['to_merge']['count']} merged, "
        f"{funnel['to_first_held']['count']} held"
    )
    return body, summary


_LIMIT = {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
_PACKET_ID = {"type": "string", "maxLength": 40, "description": "a packet_id (pkt_...) from loopkit_packets"}
_STRINGS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 50}]}

TOOLS = [
    Tool(
        "loopkit_project",
        "Project",
        "The project this key belongs to: name, kind, span quota, expiry, records accepted, and the dashboard URL "
        "where a person approves packets.",
        {},
        (DASHBOARD_READ, REPORTS_READ),
        False,
        project,
    ),
    Tool(
        "loopkit_telemetry",
        "Read telemetry",
        "Bounded reads of the project's records, newest first: by record_ids (full provenance), or a window "
        f"(since_minutes before until) with filters (trace_id, session_id, issue, type, name, service, record_id). "
        f"{bounds.DEFAULT_RECORDS} records by default; pass next_cursor as cursor for the next page.",
        {
            "record_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_RECORD_IDS},
            "since_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SINCE_MINUTES, "default": 60},
            "until": {"type": "string", "description": "RFC 3339 or unix nanoseconds; default now"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": bounds.DEFAULT_RECORDS},
            "cursor": {"type": "string", "description": "next_cursor of the previous page"},
            **{name: _STRINGS for name in ("trace_id", "session_id", "issue", "type", "name", "service", "record_id")},
        },
        (TELEMETRY_READ,),
        False,
        telemetry,
    ),
    Tool(
        "loopkit_diagnose",
        "Diagnose",
        "Run the diagnosers over a window and store the packet. The answer starts with `memory` (what the loop "
        "already knows: verified, regressed, approved in flight), then the packet.",
        {
            "since_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SINCE_MINUTES, "default": 60},
            "until": {"type": ["string", "integer"], "description": "RFC 3339 or unix nanoseconds; default now"},
            "diagnosers": {"type": "array", "items": {"type": "string"}},
            "min_count": {"type": "integer", "minimum": 1, "default": 3},
            "max_issues": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
        },
        (RUNS_WRITE,),
        True,
        diagnose,
    ),
    Tool(
        "loopkit_packets",
        "List packets",
        "The newest diagnosis packets (summaries), newest first.",
        {"limit": _LIMIT},
        READERS,
        False,
        packets,
    ),
    Tool(
        "loopkit_packet",
        "Read a packet",
        f"One packet with its issues ({bounds.DEFAULT_ISSUES} at a time: issue_offset for the next ones), evidence "
        "record IDs, approval and status.",
        {
            "packet_id": _PACKET_ID,
            "issue_offset": {"type": "integer", "minimum": 0, "default": 0},
            "issue_limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": bounds.MAX_ISSUES_SHOWN,
                "default": bounds.DEFAULT_ISSUES,
            },
        },
        READERS,
        False,
        packet,
        ("packet_id",),
    ),
    Tool(
        "loopkit_handoff",
        "Handoff",
        "A packet rendered for a coding agent by a renderer plugin (json, markdown, prompt or a plugin's format), "
        f"{bounds.DEFAULT_HANDOFF_CHARS} characters at a time (offset for the rest).",
        {
            "packet_id": _PACKET_ID,
            "format": {"type": "string", "default": "json"},
            "offset": {"type": "integer", "minimum": 0, "default": 0},
            "max_chars": {
                "type": "integer",
                "minimum": 1000,
                "maximum": bounds.MAX_HANDOFF_CHARS,
                "default": bounds.DEFAULT_HANDOFF_CHARS,
            },
        },
        (REPORTS_READ,),
        False,
        handoff,
        ("packet_id",),
    ),
    Tool(
        "loopkit_improve",
        "Record a loop stage",
        "Record what happened after a person approved a packet: issue_opened, pr_opened, merged or deployed, with "
        "the URL of the issue, pull request or deploy. LoopKit stores it and opens nothing.",
        {
            "packet_id": _PACKET_ID,
            "stage": {"type": "string", "enum": ["issue_opened", "pr_opened", "merged", "deployed"]},
            "url": {"type": "string"},
            "note": {"type": "string"},
            "issue_id": {"type": "string", "description": "the packet's issue this stage is about (default: all)"},
        },
        (RUNS_WRITE,),
        True,
        improve,
        ("packet_id", "stage"),
    ),
    Tool(
        "loopkit_verify",
        "Verify",
        "Verdicts (held, improved, regressed, insufficient_data) for a packet's issues on the window after its "
        "approval; recorded, as POST /v1/runs/verify records them.",
        {
            "packet_id": _PACKET_ID,
            "since_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SINCE_MINUTES},
            "release": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "the service.version carrying the fix: only it and later semantic versions count",
            },
            "record": {"type": "boolean", "default": True, "description": "verification is always recorded"},
        },
        (RUNS_WRITE,),
        True,
        verify,
        ("packet_id",),
    ),
    Tool(
        "loopkit_loops",
        "Loops",
        "The project's loops: each approved packet with its stages (issue opened, PR opened, merged, deployed, "
        "verified) and the funnel figures.",
        {"limit": _LIMIT},
        READERS,
        False,
        loops,
    ),
]
BY_NAME = {tool.name: tool for tool in TOOLS}
