"""`POST /v1/runs/diagnose` and `POST /v1/runs/verify`: the runs that read a bounded window."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_body, json_response, principal
from loopkit_core.loop.requests import diagnose_request, verify_request
from loopkit_core.scopes import RUNS_WRITE


async def run_diagnose(request: Request) -> Response:
    """Diagnose the caller's project over a window; answer with the stored packet."""
    caller = await principal(request, RUNS_WRITE)
    loop = request.app.state.loop
    options = diagnose_request(await json_body(request), loop.diagnosers())
    packet = await run_in_threadpool(loop.diagnose, caller, options)
    return json_response({"ok": True, "packet": packet})


async def run_verify(request: Request) -> Response:
    """Verdicts for a packet's issues on the window after it (after approval, or after the packet)."""
    caller = await principal(request, RUNS_WRITE)
    options = verify_request(await json_body(request))
    verification = await run_in_threadpool(request.app.state.loop.verify, caller, options)
    return json_response({"ok": True, "verification": verification})
