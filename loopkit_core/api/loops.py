"""The loop's bookkeeping: `POST /v1/packets/{packet_id}/stages` (stages done outside LoopKit) and `GET /v1/loops`."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import ApiError, json_body, json_response, principal
from loopkit_core.api.packets import reader
from loopkit_core.loop.requests import STAGE_FIELDS, loops_limit
from loopkit_core.scopes import RUNS_WRITE


async def record_stage(request: Request) -> Response:
    """An agent records a stage it did outside LoopKit (issue opened, PR opened, merged, deployed); 201."""
    caller = await principal(request, RUNS_WRITE)
    body = await json_body(request, 16 * 1024)
    unknown = sorted(set(body) - STAGE_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(STAGE_FIELDS))}")
    stage = body.get("stage")
    if not isinstance(stage, str):
        raise ApiError(400, "stage is required: issue_opened, pr_opened, merged or deployed")
    recorded = await run_in_threadpool(
        request.app.state.loop.record_stage,
        caller,
        request.path_params["packet_id"],
        stage,
        body.get("url"),
        body.get("note"),
        body.get("issue_id"),
    )
    return json_response({"ok": True, "stage": recorded}, status=201)


async def list_loops(request: Request) -> Response:
    """The recorded loops, newest first, with their stages, and the funnel; `limit` (1-100, default 20)."""
    caller = await reader(request)
    limit = loops_limit(request.query_params.get("limit"))
    found = await run_in_threadpool(request.app.state.loop.loops, caller, limit)
    return json_response({"ok": True, **found})
