"""`GET /v1/grouping/rules` and `PUT /v1/grouping/rules`: the project's fingerprint rules (docs/grouping.md)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_body, json_response, principal
from loopkit_core.fingerprint_rules import MAX_BODY
from loopkit_core.loop.requests import grouping_rules_request
from loopkit_core.scopes import APPROVALS_WRITE, DASHBOARD_READ


async def rules(request: Request) -> Response:
    """One route, two methods: GET reads the rules in force, PUT replaces them."""
    return await (put_rules(request) if request.method == "PUT" else get_rules(request))


async def get_rules(request: Request) -> Response:
    """The rules in force (version 0 and [] when none were saved); ETag is the version."""
    caller = await principal(request, DASHBOARD_READ)
    rules = await run_in_threadpool(request.app.state.loop.grouping_rules, caller)
    return json_response({"ok": True, **rules}, headers={"etag": f'"{rules["version"]}"'})


async def put_rules(request: Request) -> Response:
    """Save a new version of the rules (dashboard key); 400 naming the rule and reason, 409 on a stale version."""
    caller = await principal(request, APPROVALS_WRITE)
    rules = grouping_rules_request(await json_body(request, MAX_BODY), request.headers.get("if-match"))
    saved = await run_in_threadpool(request.app.state.loop.set_grouping_rules, caller, rules)
    return json_response({"ok": True, **saved}, headers={"etag": f'"{saved["version"]}"'})
