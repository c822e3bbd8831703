"""`GET /v1/sessions`, `GET /v1/sessions/{session_id}`, `GET /v1/traces/{trace_id}`: thin routes to the loop."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_response, principal, query_lists
from loopkit_core.loop.journeys import MAX_SESSION_RECORDS, MAX_TRACE_SPANS, page_limit, sessions_request
from loopkit_core.loop.requests import refuse_unknown
from loopkit_core.scopes import TELEMETRY_READ


async def list_sessions(request: Request) -> Response:
    """The window's sessions with their scorecards, sortable by score."""
    caller = await principal(request, TELEMETRY_READ)
    query = sessions_request(query_lists(request))
    page = await run_in_threadpool(request.app.state.loop.sessions, caller, query)
    return json_response({"ok": True, **page})


async def get_session(request: Request) -> Response:
    """One session's scorecard and records in time order (`limit` 1-1000, default 200)."""
    caller = await principal(request, TELEMETRY_READ)
    limit = _limit(request, 200, MAX_SESSION_RECORDS)
    found = await run_in_threadpool(
        request.app.state.loop.user_session, caller, request.path_params["session_id"], limit
    )
    return json_response({"ok": True, **found})


async def get_trace(request: Request) -> Response:
    """One trace as a span tree with its critical path (`limit` 1-10000 spans, default 10000)."""
    caller = await principal(request, TELEMETRY_READ)
    limit = _limit(request, MAX_TRACE_SPANS, MAX_TRACE_SPANS)
    found = await run_in_threadpool(request.app.state.loop.trace, caller, request.path_params["trace_id"], limit)
    return json_response({"ok": True, **found})


def _limit(request: Request, default: int, maximum: int) -> int:
    refuse_unknown(query_lists(request), {"limit"})
    return page_limit(request.query_params.get("limit"), default, maximum)
