"""`GET /v1/packets` and `GET /v1/packets/{packet_id}`: stored diagnosis packets of the caller's project."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import ApiError, json_response, principal
from loopkit_core.projects import Principal
from loopkit_core.store import packets as store

READ_SCOPE = "reports:read"
DASHBOARD_SCOPE = "dashboard:read"


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
    packet_id = request.path_params["packet_id"]
    engine = request.app.state.loopkit.store.project(caller.project_id)
    packet = await run_in_threadpool(store.get_packet, engine, packet_id) if len(packet_id) <= 40 else None
    if packet is None:
        raise ApiError(404, f"no packet {packet_id[:40]!r} in this project")
    return json_response({"ok": True, "packet": packet})


async def _reader(request: Request) -> Principal:
    # Agents read packets with reports:read; people on the dashboard with dashboard:read.
    try:
        return await principal(request, READ_SCOPE)
    except ApiError as exc:
        if exc.status != 403:
            raise
        return await principal(request, DASHBOARD_SCOPE)
