"""`GET /v1/packets` and `GET /v1/packets/{packet_id}`: stored diagnosis packets of the caller's project."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import ApiError, is_lookup_key, json_body, json_response, principal
from loopkit_core.projects import Principal
from loopkit_core.scopes import APPROVALS_WRITE, DASHBOARD_READ, REPORTS_READ
from loopkit_core.store import approvals
from loopkit_core.store import packets as store
from loopkit_core.store.records import get_records

READ_SCOPE = REPORTS_READ
DASHBOARD_SCOPE = DASHBOARD_READ


async def list_packets(request: Request) -> Response:
    """The newest packets (summaries), newest first; `limit` (1-100, default 20)."""
    caller = await _reader(request)
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= store.MAX_LIST:
        raise ApiError(400, f"limit must be an integer from 1 to {store.MAX_LIST}")
    engine = request.app.state.loopkit.store.project(caller.project_id)
    found = await run_in_threadpool(store.list_packets, engine, int(raw))
    return json_response({"ok": True, "packets": found})


async def get_packet(request: Request) -> Response:
    """One packet of the caller's project, whole."""
    caller = await _reader(request)
    engine = request.app.state.loopkit.store.project(caller.project_id)
    packet = await _packet_or_404(engine, request.path_params["packet_id"])
    return json_response({"ok": True, "packet": packet})


async def _reader(request: Request) -> Principal:
    # Agents read packets with reports:read; people on the dashboard with dashboard:read.
    try:
        return await principal(request, READ_SCOPE)
    except ApiError as exc:
        if exc.status != 403:
            raise
        return await principal(request, DASHBOARD_SCOPE)


HANDOFF_SCOPE = REPORTS_READ
APPROVAL_SCOPE = APPROVALS_WRITE
MAX_NOTE = 4000
EVIDENCE_PER_ISSUE = 20
MAX_EVIDENCE_RECORDS = 500


async def handoff(request: Request) -> Response:
    """The packet rendered by a renderer plugin (`format`: json, markdown, prompt, or a plugin's)."""
    caller = await principal(request, HANDOFF_SCOPE)
    loopkit = request.app.state.loopkit
    renderers = loopkit.renderers
    name = request.query_params.get("format", "json")
    renderer = renderers.get(name)
    if renderer is None:
        raise ApiError(400, f"unknown format {name[:40]!r}; available: {', '.join(sorted(renderers))}")
    engine = loopkit.store.project(caller.project_id)
    packet = await _packet_or_404(engine, request.path_params["packet_id"])
    ids = [rid for issue in packet["issues"] for rid in issue["evidence"][:EVIDENCE_PER_ISSUE]][:MAX_EVIDENCE_RECORDS]
    records = await run_in_threadpool(get_records, engine, ids)
    context = {"records": records, "base_url": loopkit.settings.base_url()}
    try:
        text = await run_in_threadpool(renderer.render, packet, context)
    except Exception as exc:  # a broken renderer plugin answers 500-free, with its name
        raise ApiError(422, f"renderer {name!r} failed: {type(exc).__name__}: {exc}"[:500], "renderer_failed") from None
    return Response(text, media_type=renderer.media_type)


async def approve(request: Request) -> Response:
    """A person approves a packet, with a note; recorded in the audit trail, nothing external happens."""
    return await _decide(request, "approved")


async def reject(request: Request) -> Response:
    """A person rejects a packet, with a note; recorded in the audit trail, nothing external happens."""
    return await _decide(request, "rejected")


async def _decide(request: Request, decision: str) -> Response:
    caller = await principal(request, APPROVAL_SCOPE)
    loopkit = request.app.state.loopkit
    body = await json_body(request, 16 * 1024)
    if set(body) - {"note"}:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(set(body) - {'note'}))}; allowed: note")
    note = body.get("note")
    if not isinstance(note, str) or not note.strip():
        raise ApiError(400, "note is required: say why, in a few words")
    if len(note) > MAX_NOTE:
        raise ApiError(400, f"note must be at most {MAX_NOTE} characters")
    packet_id = request.path_params["packet_id"]
    engine = await record_decision(loopkit, caller, packet_id, decision, note)
    packet = await run_in_threadpool(store.get_packet, engine, packet_id)
    return json_response({"ok": True, "packet_id": packet_id, "status": decision, "approval": packet["approval"]})


async def _packet_or_404(engine: Engine, packet_id: str) -> dict[str, Any]:
    packet = await run_in_threadpool(store.get_packet, engine, packet_id) if is_lookup_key(packet_id) else None
    if packet is None:
        raise ApiError(404, f"no packet {packet_id[:40]!r} in this project")
    return packet


async def record_decision(loopkit: Any, caller: Principal, packet_id: str, decision: str, note: str) -> Engine:
    """Record a person's decision on a packet of the caller's project (404 if none); the project's engine."""
    engine = loopkit.store.project(caller.project_id)
    actor = f"{caller.key_kind} key {caller.key_display}"
    now_ns = int(loopkit.clock() * 1e9)
    decided = None
    if is_lookup_key(packet_id):
        decided = await run_in_threadpool(approvals.decide, engine, packet_id, decision, note.strip(), actor, now_ns)
    if decided is None:
        raise ApiError(404, f"no packet {packet_id[:40]!r} in this project")
    return engine
