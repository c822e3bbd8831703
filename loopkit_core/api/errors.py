"""The API's error shape `{"ok": false, "error": {"code", "message"}}` and key checks for routes."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.identity import Principal
from loopkit_core.loop.errors import CODES, LoopError
from loopkit_core.loop.requests import is_lookup_key

__all__ = [
    "ApiError",
    "error_response",
    "is_lookup_key",
    "json_body",
    "json_response",
    "principal",
    "query_lists",
    "read_capped",
]

# Routes raise the loop service's error; the app's handler turns it into the error JSON with its status.
ApiError = LoopError


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    retry_after: float | None = None,
    details: dict[str, object] | None = None,
) -> Response:
    """The error JSON for a status (with Retry-After, in whole seconds, when the client should wait); `details`
    are further fields of the error object (never `code` or `message`)."""
    headers = {"retry-after": str(math.ceil(retry_after))} if retry_after is not None else {}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="loopkit"'
    if status == 408:
        headers["connection"] = "close"  # the rest of a late body must not be read as the next request
    error = {**(details or {}), "code": code or CODES.get(status, "error"), "message": message}
    body = {"ok": False, "error": error}
    return json_response(body, status, headers)


async def principal(request: Request, scope: str) -> Principal:
    """The caller of an API route if its key holds `scope`; ApiError 401/403 otherwise."""
    return await run_in_threadpool(request.app.state.loop.authenticate, request.headers.get("authorization"), scope)


def query_lists(request: Request) -> dict[str, list[str]]:
    """The query string as each parameter's values, the shape the loop's request parsers take."""
    params = request.query_params
    return {name: params.getlist(name) for name in params}


async def json_body(request: Request, max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """A small JSON object body ({} when empty); ApiError 400/413 otherwise."""
    raw = await read_capped(request, max_bytes, "body")
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


async def read_capped(request: Request, max_bytes: int, what: str) -> bytes:
    """The whole body if it is at most `max_bytes` and arrives within request_body_timeout_seconds; 413/408."""
    timeout = request.app.state.loopkit.settings.request_body_timeout_seconds
    raw = bytearray()
    try:
        # A client trickling its body ties up a connection, not a thread; the deadline bounds how long.
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > max_bytes:
                    raise ApiError(413, f"{what} must be at most {max_bytes} bytes")
    except TimeoutError:
        raise ApiError(408, f"the {what} did not arrive within {timeout:g} s") from None
    return bytes(raw)
