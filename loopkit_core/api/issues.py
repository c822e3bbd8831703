"""One tracked issue: `GET /v1/issues/{fingerprint}`, and a person's `POST .../merge` and `POST .../unmerge`."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_body, json_response, principal
from loopkit_core.api.packets import reader
from loopkit_core.loop.requests import merge_request, unmerge_request
from loopkit_core.scopes import APPROVALS_WRITE

MAX_BODY = 32 * 1024  # a 4,000-character note, escaped, fits; more is a 413


async def get_issue(request: Request) -> Response:
    """One issue (fingerprint or issue_id) with its merge state and audit trail; agent or dashboard key."""
    caller = await reader(request)
    found = await run_in_threadpool(request.app.state.loop.issue, caller, request.path_params["fingerprint"])
    return json_response({"ok": True, "issue": found})


async def merge(request: Request) -> Response:
    """A person merges the issue into `into` (sticky across diagnoses and verifications, audited); dashboard key."""
    caller = await principal(request, APPROVALS_WRITE)
    body = merge_request(await json_body(request, MAX_BODY))
    done = await run_in_threadpool(request.app.state.loop.merge_issue, caller, request.path_params["fingerprint"], body)
    return json_response({"ok": True, **done})


async def unmerge(request: Request) -> Response:
    """A person sets a merged issue apart again (audited); dashboard key."""
    caller = await principal(request, APPROVALS_WRITE)
    body = unmerge_request(await json_body(request, MAX_BODY))
    loop = request.app.state.loop
    done = await run_in_threadpool(loop.unmerge_issue, caller, request.path_params["fingerprint"], body)
    return json_response({"ok": True, **done})
