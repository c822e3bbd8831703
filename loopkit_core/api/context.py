"""Dashboard pages for the context of a packet's evidence: the Issues page, sessions, a session, a trace.

`/v1/dashboard/issues` (one row per fingerprint across packets), `/v1/dashboard/sessions` (scorecards),
`/v1/dashboard/sessions/{session_id}` (timeline and scorecard), `/v1/dashboard/traces/{trace_id}` (a waterfall
drawn on the server as SVG: no script, no external asset). Each answers JSON to `accept: application/json`.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.dashboard import page, render, security_headers, viewer, wants_json
from loopkit_core.api.errors import json_response, query_lists
from loopkit_core.loop.journeys import SessionsRequest, page_limit, sessions_request

MAX_ISSUES_PAGE = 500
PAGE_TRACE_SPANS = 2000  # spans drawn on a trace page (the API answers up to 10,000)
PAGE_SESSION_RECORDS = 500


def _json(body: dict[str, Any]) -> Response:
    response = json_response(body)
    response.headers.update(security_headers(secrets.token_urlsafe(8)))
    return response


@page
async def issues_page(request: Request) -> Response:
    """Every tracked issue, most recently seen first: lifecycle, counts per packet, last seen, regressed, impact."""
    who = await viewer(request)
    limit = page_limit(request.query_params.get("limit"), 100, MAX_ISSUES_PAGE)
    found = await run_in_threadpool(request.app.state.loop.issue_index, who.principal, limit)
    if wants_json(request):
        return _json({"ok": True, "viewer": who.as_json(), **found})
    return render(request, "issues.html", viewer=who, limit=limit, **found)


@page
async def sessions_page(request: Request) -> Response:
    """The window's sessions with their scorecards (GET /v1/sessions's parameters), worst score first by default."""
    who = await viewer(request)
    query: SessionsRequest = sessions_request(query_lists(request))
    if "sort" not in request.query_params:
        query = SessionsRequest(query.since_minutes, query.until_ns, query.limit, "score", query.slow_ms)
    found = await run_in_threadpool(request.app.state.loop.sessions, who.principal, query)
    if wants_json(request):
        return _json({"ok": True, "viewer": who.as_json(), **found})
    return render(request, "sessions.html", viewer=who, query=query, **found)


@page
async def session_page(request: Request) -> Response:
    """One session: its scorecard and its records as a timeline, each linked to its record and trace."""
    who = await viewer(request)
    session_id = request.path_params["session_id"]
    found = await run_in_threadpool(
        request.app.state.loop.user_session, who.principal, session_id, PAGE_SESSION_RECORDS
    )
    if wants_json(request):
        return _json({"ok": True, "viewer": who.as_json(), **found})
    return render(request, "session.html", viewer=who, **found)


@page
async def trace_page(request: Request) -> Response:
    """One trace as a waterfall: a row per span (depth-first), its bar on the root's time, the critical path marked."""
    who = await viewer(request)
    found = await run_in_threadpool(
        request.app.state.loop.trace, who.principal, request.path_params["trace_id"], PAGE_TRACE_SPANS
    )
    if wants_json(request):
        return _json({"ok": True, "viewer": who.as_json(), **found})
    return render(request, "trace.html", viewer=who, bars=bars(found["spans"]), **found)


def bars(spans: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each span's bar as (x, width) in percent of the trace's span of time (at least 0.2% wide, to be seen)."""
    if not spans:
        return []
    ends = [s["offset_ms"] + s["duration_ms"] for s in spans]
    total = max(max(ends), 1e-9)
    out = []
    for span in spans:
        x = 100 * span["offset_ms"] / total
        width = max(100 * span["duration_ms"] / total, 0.2)
        out.append((round(min(x, 99.8), 3), round(min(width, 100 - min(x, 99.8)), 3)))
    return out
