"""Stored diagnosis packets of the caller's project: list, get, handoff, and a person's approve/reject."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import ApiError, json_body, json_response, principal
from loopkit_core.identity import Principal
from loopkit_core.loop.requests import packet_limit
from loopkit_core.scopes import APPROVALS_WRITE, DASHBOARD_READ, REPORTS_READ


async def list_packets(request: Request) -> Response:
    """The newest packets (summaries), newest first; `limit` (1-100, default 20)."""
    caller = await reader(request)
    limit = packet_limit(request.query_params.get("limit"))
    found = await run_in_threadpool(request.app.state.loop.packets, caller, limit)
    return json_response({"ok": True, "packets": found})


async def get_packet(request: Request) -> Response:
    """One packet of the caller's project, whole."""
    caller = await reader(request)
    packet = await run_in_threadpool(request.app.state.loop.packet, caller, request.path_params["packet_id"])
    return json_response({"ok": True, "packet": packet})


async def reader(request: Request) -> Principal:
    """The caller of a read route: an agent key (reports:read) or a dashboard key (dashboard:read)."""
    # Agents read packets with reports:read; people on the dashboard with dashboard:read.
    try:
        return await principal(request, REPORTS_READ)
    except ApiError as exc:
        if exc.status != 403:
            raise
        return await principal(request, DASHBOARD_READ)


async def handoff(request: Request) -> Response:
    """The packet rendered by a renderer plugin (`format`: json, markdown, prompt, or a plugin's)."""
    caller = await principal(request, REPORTS_READ)
    name = request.query_params.get("format", "json")
    rendered = await run_in_threadpool(request.app.state.loop.handoff, caller, request.path_params["packet_id"], name)
    return Response(rendered.text, media_type=rendered.media_type)


async def evals(request: Request) -> Response:
    """The packet's eval specs (`format`: json, jsonl, pytest): real inputs rebuilt from the evidence records."""
    caller = await principal(request, REPORTS_READ)
    name = request.query_params.get("format", "json")
    rendered = await run_in_threadpool(request.app.state.loop.evals, caller, request.path_params["packet_id"], name)
    return Response(rendered.text, media_type=rendered.media_type)


async def approve(request: Request) -> Response:
    """A person approves a packet, with a note; recorded in the audit trail, nothing external happens."""
    return await _decide(request, "approved")


async def reject(request: Request) -> Response:
    """A person rejects a packet, with a note; recorded in the audit trail, nothing external happens."""
    return await _decide(request, "rejected")


async def _decide(request: Request, decision: str) -> Response:
    caller = await principal(request, APPROVALS_WRITE)
    body = await json_body(request, 16 * 1024)
    if set(body) - {"note"}:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(set(body) - {'note'}))}; allowed: note")
    packet_id = request.path_params["packet_id"]
    decided = await run_in_threadpool(request.app.state.loop.decide, caller, packet_id, decision, body.get("note"))
    return json_response({"ok": True, **decided})
