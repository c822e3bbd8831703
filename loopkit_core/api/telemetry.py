"""`GET /v1/telemetry` (bounded, filtered, cursor-paged reads) and `GET /v1/records/{record_id}`."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import ApiError, is_lookup_key, json_response, principal
from loopkit_core.model import parse_rfc3339, rfc3339
from loopkit_core.store import records as store
from loopkit_core.store.packets import find_issue

READ_SCOPE = "telemetry:read"
MAX_SINCE_MINUTES = 10 * 366 * 24 * 60
# Query parameter -> record column. `issue` (an issue_id or fingerprint) is resolved to its selector.
FILTERS = {
    "type": "type",
    "name": "name",
    "service": "service",
    "record_id": "record_id",
    "trace_id": "trace_id",
    "session_id": "session_id",
}
# Case-insensitive hex IDs are stored lowercase.
LOWERCASE = {"trace_id"}
PARAMS = {"since_minutes", "until", "limit", "cursor", "issue", *FILTERS}


async def list_telemetry(request: Request) -> Response:
    """A page of the project's records in a bounded window, newest first."""
    caller = await principal(request, READ_SCOPE)
    cursor_key = request.app.state.loopkit.store.cursor_key(caller.project_id)
    query = parse_query(request, cursor_key)
    engine = request.app.state.loopkit.store.project(caller.project_id)
    issue_keys = request.query_params.getlist("issue")
    if issue_keys:
        query = replace(query, selectors=tuple([await _issue_selector(engine, key) for key in issue_keys[:50]]))
    rows, after = await run_in_threadpool(store.read_window, engine, query)
    return json_response(
        {
            "ok": True,
            "records": rows,
            "next_cursor": store.encode_cursor(query, after, cursor_key) if after else None,
            "window": {"start": rfc3339(query.start_ns), "end": rfc3339(query.end_ns)},
        }
    )


async def get_record(request: Request) -> Response:
    """One record of the caller's project with its full provenance."""
    caller = await principal(request, READ_SCOPE)
    record_id = request.path_params["record_id"]
    engine = request.app.state.loopkit.store.project(caller.project_id)
    record = await run_in_threadpool(store.get_record, engine, record_id) if is_lookup_key(record_id) else None
    if record is None:
        raise ApiError(404, f"no record {record_id[:40]!r} in this project")
    return json_response({"ok": True, "record": record})


async def _issue_selector(engine: Engine, key: str) -> dict[str, Any]:
    issue = await run_in_threadpool(find_issue, engine, key) if is_lookup_key(key, 80) else None
    if issue is None:
        raise ApiError(404, f"no issue {key[:80]!r} in this project (use an issue_id or fingerprint from a packet)")
    return issue["selector"]


def parse_query(request: Request, cursor_key: bytes) -> store.WindowQuery:
    """Validate the query string (a cursor must be signed with `cursor_key`) into a WindowQuery; 400 otherwise."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - PARAMS)
    if unknown:
        raise ApiError(400, f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(PARAMS))}")
    limit = _int(params.get("limit", "100"), "limit")
    if not 1 <= limit <= store.MAX_PAGE:
        raise ApiError(400, f"limit must be between 1 and {store.MAX_PAGE}")
    filters = []
    for param, column in FILTERS.items():
        values = params.getlist(param)
        if values:
            if any(len(v) > 1024 for v in values) or len(values) > 50:
                raise ApiError(400, f"{param}: at most 50 values of at most 1024 characters")
            if any("\x00" in v for v in values):
                raise ApiError(400, f"{param}: values must not contain NUL characters")
            filters.append((column, tuple(v.lower() for v in values) if param in LOWERCASE else tuple(values)))
    cursor = params.get("cursor")
    if cursor:
        try:
            start_ns, end_ns, after = store.decode_cursor(cursor, cursor_key)
        except ValueError:
            raise ApiError(400, "cursor is not valid: pass next_cursor from the previous page unchanged") from None
        return store.WindowQuery(start_ns, end_ns, limit, tuple(filters), after)
    since = _float(params.get("since_minutes", "60"), "since_minutes")
    if not 0 < since <= MAX_SINCE_MINUTES:
        raise ApiError(400, f"since_minutes must be greater than 0 and at most {MAX_SINCE_MINUTES}")
    until = params.get("until")
    end_ns = parse_instant(until) if until else time.time_ns()
    start_ns = max(end_ns - int(since * 60e9), 0)
    return store.WindowQuery(start_ns, end_ns, limit, tuple(filters))


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None


def _float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a number") from None
    if not math.isfinite(number):
        raise ApiError(400, f"{name} must be a finite number")
    return number


def parse_instant(value: str) -> int:
    """RFC 3339 or unix nanoseconds (1970-2262) as unix ns; ApiError 400 otherwise."""
    message = "until must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or unix nanoseconds"
    if value.isdigit() and len(value) <= 19:
        ns = int(value)
    else:
        try:
            ns = parse_rfc3339(value)
        except (ValueError, OverflowError):
            raise ApiError(400, message) from None
    if not 0 < ns <= store.MAX_NS:
        # The store keeps 64-bit unix nanoseconds: 1970 to 2262.
        raise ApiError(400, message + ", between 1970 and 2262")
    return ns
