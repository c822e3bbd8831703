"""The API's error shape `{"ok": false, "error": {"code", "message"}}` and key checks for routes."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.projects import AuthError, Principal, require

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


# Every ID LoopKit mints (rec_, pkt_, iss_, hex fingerprints) fits this; anything else cannot exist, so it is a 404
# before it reaches the database (PostgreSQL, for one, refuses NUL bytes in text with an error, not a miss).
_LOOKUP_KEY = re.compile(r"[A-Za-z0-9_.:-]+")


def is_lookup_key(text: str, max_length: int = 40) -> bool:
    """Whether `text` could be a stored ID or fingerprint (worth a database lookup at all)."""
    return 0 < len(text) <= max_length and _LOOKUP_KEY.fullmatch(text) is not None


class ApiError(Exception):
    """Raised by a route; turned into the error JSON with its status by the app's handler."""

    def __init__(self, status: int, message: str, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.retry_after = retry_after


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, code: str | None = None, retry_after: float | None = None) -> Response:
    """The error JSON for a status (with Retry-After, in whole seconds, when the client should wait)."""
    headers = {"retry-after": str(math.ceil(retry_after))} if retry_after is not None else {}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="loopkit"'
    if status == 408:
        headers["connection"] = "close"  # the rest of a late body must not be read as the next request
    body = {"ok": False, "error": {"code": code or _CODES.get(status, "error"), "message": message}}
    return json_response(body, status, headers)


async def principal(request: Request, scope: str) -> Principal:
    """The caller of an API route if its key holds `scope`; ApiError 401/403 otherwise."""
    loopkit = request.app.state.loopkit
    authorization = request.headers.get("authorization")
    try:
        return await run_in_threadpool(require, loopkit.store.control, authorization, scope, loopkit.clock())
    except AuthError as exc:
        raise ApiError(exc.status, exc.message, exc.code) from None


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
