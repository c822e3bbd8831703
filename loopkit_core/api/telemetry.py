"""`GET /v1/telemetry` (bounded, filtered, cursor-paged reads) and `GET /v1/records/{record_id}`."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_response, principal, query_lists
from loopkit_core.loop.requests import telemetry_request
from loopkit_core.scopes import TELEMETRY_READ


async def list_telemetry(request: Request) -> Response:
    """A page of the project's records in a bounded window, newest first."""
    caller = await principal(request, TELEMETRY_READ)
    query = telemetry_request(query_lists(request))
    # Spliced: the records' stored JSON goes into the answer as it is, not parsed and written again.
    page = await run_in_threadpool(request.app.state.loop.telemetry, caller, query, True)
    return json_response({"ok": True, **page})


async def get_record(request: Request) -> Response:
    """One record of the caller's project with its full provenance."""
    caller = await principal(request, TELEMETRY_READ)
    record = await run_in_threadpool(request.app.state.loop.record, caller, request.path_params["record_id"])
    return json_response({"ok": True, "record": record})
