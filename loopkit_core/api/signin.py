"""Signing in to the dashboard and out: a key for a session cookie, and back (docs/dashboard.md)."""

from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from loopkit_core import sessions
from loopkit_core.api.dashboard import BASE, check_access, page, read_form, security_headers
from loopkit_core.api.errors import ApiError
from loopkit_core.api.origin import check_origin, safe_next


@page
async def login(request: Request) -> Response:
    """Exchange a key (form field `key`) for a session cookie, then 303 to `next` (a dashboard path)."""
    check_origin(request, signing_in=True)
    form = await read_form(request)
    loopkit = request.app.state.loopkit
    target = safe_next(form.get("next", BASE))
    key = form.get("key", "").strip()
    if not key:
        raise ApiError(401, "enter your dashboard key (lk_dash_...)")
    who = await run_in_threadpool(request.app.state.loop.sign_in, key)
    if who is None:
        raise ApiError(401, "unknown or revoked key: check it, or ask for the project's current dashboard key")
    check_access(who, loopkit.clock())
    token = sessions.issue(key, loopkit.clock())
    response = RedirectResponse(target, 303, headers=security_headers(secrets.token_urlsafe(8)))
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=sessions.TTL_SECONDS,
        path=sessions.COOKIE_PATH,
        secure=_is_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


@page
async def logout(request: Request) -> Response:
    """Forget the session cookie and show the sign-in page."""
    check_origin(request)
    response = RedirectResponse(f"{BASE}?signed_out=1", 303, headers=security_headers(secrets.token_urlsafe(8)))
    response.delete_cookie(
        sessions.COOKIE, path=sessions.COOKIE_PATH, secure=_is_https(request), httponly=True, samesite="strict"
    )
    return response


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.app.state.loopkit.settings.base_url().startswith("https://")
