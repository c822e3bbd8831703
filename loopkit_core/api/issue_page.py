"""The dashboard's page of one issue (`/v1/dashboard/issues/{fingerprint}`): its merge state and audit trail, and
the merge and unmerge forms a person uses (dashboard key; same-site forms with the session's csrf token)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from loopkit_core.api.dashboard import Viewer, decision_form, page, render, security_headers, viewer, wants_json
from loopkit_core.api.errors import json_response
from loopkit_core.api.origin import BASE
from loopkit_core.loop.errors import LoopError
from loopkit_core.loop.requests import MAX_NOTE, merge_request, unmerge_request

MAX_CANDIDATES = 500  # issues offered as merge targets (the most recently seen)


@page
async def issue_page(request: Request) -> Response:
    """One issue: status, what it is merged into and what is merged into it, the audit trail, the forms."""
    who = await viewer(request)
    context = await _context(request, who, request.path_params["fingerprint"])
    if wants_json(request):
        response = json_response(
            {"ok": True, "viewer": who.as_json(), "issue": context["issue"], "candidates": context["candidates"]}
        )
        response.headers.update(security_headers(secrets.token_urlsafe(8)))
        return response
    return render(request, "issue.html", **context)


@page
async def merge(request: Request) -> Response:
    """A person merges the issue into the one picked (form: into, note, csrf); 303 back to the issue page."""
    return await _act(request, "merge")


@page
async def unmerge(request: Request) -> Response:
    """A person sets the merged issue apart again (form: note, csrf); 303 back to the issue page."""
    return await _act(request, "unmerge")


async def _act(request: Request, action: str) -> Response:
    who = await viewer(request)
    key = request.path_params["fingerprint"]
    form = await decision_form(request, who, "merge issues")
    fields = {k: v for k, v in form.items() if k != "csrf"}
    loop = request.app.state.loop
    try:
        if action == "merge":
            done = await run_in_threadpool(loop.merge_issue, who.principal, key, merge_request(fields))
        else:
            done = await run_in_threadpool(loop.unmerge_issue, who.principal, key, unmerge_request(fields))
    except LoopError as exc:
        if exc.status not in (400, 409) or wants_json(request):
            raise
        note = form.get("note", "")[: MAX_NOTE * 2]
        context = await _context(request, who, key, form_error=exc.message, note=note)
        return render(request, "issue.html", exc.status, **context)
    target = f"{BASE}/issues/{quote(done['issue']['fingerprint'], safe='')}#merges"
    return RedirectResponse(target, 303, headers=security_headers(secrets.token_urlsafe(8)))


async def _context(request: Request, who: Viewer, key: str, **extra: Any) -> dict[str, Any]:
    loop = request.app.state.loop
    found = await run_in_threadpool(loop.issue, who.principal, key)
    index = await run_in_threadpool(loop.issue_index, who.principal, MAX_CANDIDATES)
    # Any other issue may be the target, except those merged into this one (that would be a cycle).
    excluded = {found["fingerprint"], *found["merged_from"]}
    candidates = [
        {k: i[k] for k in ("fingerprint", "issue_id", "title", "status", "merged_into")}
        for i in index["issues"]
        if i["fingerprint"] not in excluded
    ]
    return {
        "issue": found,
        "candidates": candidates,
        "viewer": who,
        "max_note": MAX_NOTE,
        "form_error": None,
        "note": "",
        **extra,
    }
