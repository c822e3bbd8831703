"""`POST /v1/runs/diagnose` and `POST /v1/runs/verify`: the runs that read a bounded window."""

from __future__ import annotations

import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core import diagnose, verify
from loopkit_core.api.errors import ApiError, is_lookup_key, json_body, json_response, principal
from loopkit_core.api.telemetry import MAX_SINCE_MINUTES, parse_instant
from loopkit_core.scopes import RUNS_WRITE

RUN_SCOPE = RUNS_WRITE
FIELDS = {"since_minutes", "until", "diagnosers", "min_count", "max_issues"}


async def run_diagnose(request: Request) -> Response:
    """Diagnose the caller's project over a window; answer with the stored packet."""
    caller = await principal(request, RUN_SCOPE)
    loopkit = request.app.state.loopkit
    body = await json_body(request)
    options = parse_options(body, {name for name, _ in loopkit.plugins.implementations("diagnose")})
    packet = await run_in_threadpool(
        diagnose.run, loopkit.store, loopkit.plugins, caller.project_id, options, int(loopkit.clock() * 1e9)
    )
    return json_response({"ok": True, "packet": packet})


def parse_options(body: dict[str, Any], known: set[str]) -> diagnose.DiagnoseRequest:
    """Validate a diagnose body; ApiError 400 naming the field otherwise."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    since = body.get("since_minutes", 60)
    if isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since):
        raise ApiError(400, "since_minutes must be a number")
    if not 0 < since <= MAX_SINCE_MINUTES:
        raise ApiError(400, f"since_minutes must be greater than 0 and at most {MAX_SINCE_MINUTES}")
    until = body.get("until")
    until_ns = None
    if until is not None:
        if not isinstance(until, str | int) or isinstance(until, bool):
            raise ApiError(400, "until must be RFC 3339 or unix nanoseconds")
        until_ns = parse_instant(str(until))
    diagnosers = body.get("diagnosers")
    if diagnosers is not None:
        if not isinstance(diagnosers, list) or not all(isinstance(d, str) for d in diagnosers):
            raise ApiError(400, "diagnosers must be a list of diagnoser names")
        missing = sorted(set(diagnosers) - known)
        if missing:
            raise ApiError(400, f"unknown diagnoser(s) {', '.join(missing)}; loaded: {', '.join(sorted(known))}")
        diagnosers = tuple(diagnosers)
    min_count = _int(body.get("min_count", 3), "min_count", 1, 1_000_000_000)
    max_issues = _int(body.get("max_issues", 20), "max_issues", 1, diagnose.MAX_ISSUES)
    return diagnose.DiagnoseRequest(float(since), until_ns, diagnosers, min_count, max_issues)


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return value


VERIFY_FIELDS = {"packet_id", "since_minutes"}


async def run_verify(request: Request) -> Response:
    """Verdicts for a packet's issues on the window after it (after approval, or after the packet)."""
    caller = await principal(request, RUN_SCOPE)
    loopkit = request.app.state.loopkit
    body = await json_body(request)
    unknown = sorted(set(body) - VERIFY_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(VERIFY_FIELDS))}")
    packet_id = body.get("packet_id")
    if not isinstance(packet_id, str) or not packet_id or len(packet_id) > 40:
        raise ApiError(400, "packet_id is required: the packet_id of a stored packet")
    if not is_lookup_key(packet_id):
        raise ApiError(404, f"no packet {packet_id!r} in this project")
    since = body.get("since_minutes")
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int | float) or not 0 < since <= MAX_SINCE_MINUTES
    ):
        raise ApiError(400, f"since_minutes must be a number greater than 0 and at most {MAX_SINCE_MINUTES}")
    request_ = verify.VerifyRequest(packet_id, float(since) if since is not None else None)
    now_ns = int(loopkit.clock() * 1e9)
    verification = await run_in_threadpool(
        verify.run, loopkit.store, loopkit.plugins, caller.project_id, request_, now_ns
    )
    if verification is None:
        raise ApiError(404, f"no packet {packet_id!r} in this project")
    return json_response({"ok": True, "verification": verification})
