"""`POST /v1/evals`: an agent reports an eval run for one of a packet's issues (counts, the code it ran on, a note)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_body, json_response, principal
from loopkit_core.loop.requests import eval_run_request
from loopkit_core.scopes import RUNS_WRITE


async def record_eval(request: Request) -> Response:
    """Record an eval run (append-only); 201 with the stored run."""
    caller = await principal(request, RUNS_WRITE)
    run = eval_run_request(await json_body(request, 16 * 1024))
    recorded = await run_in_threadpool(request.app.state.loop.record_eval, caller, run)
    return json_response({"ok": True, "eval_run": recorded}, status=201)
