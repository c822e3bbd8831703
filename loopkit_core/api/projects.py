"""Self-serve projects: `POST /v1/signup`, `/v1/provision`, `/v1/recover`, and `GET /contact.json`."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from loopkit_core import projects
from loopkit_core.api.errors import ApiError, json_body, json_response
from loopkit_core.projects import bearer_token
from loopkit_core.provisioning import Policy
from loopkit_core.signup import signup_shape

MAX_BODY = 16 * 1024


async def signup(request: Request) -> Response:
    """Mint a capped, expiring sandbox project with its three keys (shown once)."""
    loopkit = request.app.state.loopkit
    _limit(request)
    body = await json_body(request, MAX_BODY)
    name = body.get("project_name")
    if name is None:
        name = "sandbox"
    settings = loopkit.settings
    expires_at = int(loopkit.clock() + settings.sandbox_days * 86400)
    created = await run_in_threadpool(
        _call, projects.create_project, loopkit.store.control, name, "sandbox", settings.sandbox_quota_spans, expires_at
    )
    return json_response(answer(request, created), 201)


async def provision(request: Request) -> Response:
    """Mint a permanent project once per (operator, name); resume it later with one of its keys."""
    loopkit = request.app.state.loopkit
    _limit(request)
    body = await json_body(request, MAX_BODY)
    if "project_name" not in body:
        raise ApiError(400, "project_name is required")
    token = bearer_token(request.headers.get("authorization"))
    policy = Policy.of(loopkit.settings)
    refusal = None if policy.consents(token) else policy.refusal()
    project, created = await run_in_threadpool(
        _call, projects.provision, loopkit.store.control, body["project_name"], body.get("operator"), token, refusal
    )
    return json_response(
        {**answer(request, project), "resumed": not created, "graduated": True}, 201 if created else 200
    )


async def recover(request: Request) -> Response:
    """Rotate all keys and the recovery code of a project, given its recovery code."""
    loopkit = request.app.state.loopkit
    _limit(request)
    body = await json_body(request, MAX_BODY)
    rotated = await run_in_threadpool(
        _call, projects.recover, loopkit.store.control, body.get("project_id"), body.get("recovery_code")
    )
    return json_response(answer(request, rotated))


async def contact(request: Request) -> Response:
    """How to get a production (uncapped) project on this server."""
    settings = request.app.state.loopkit.settings
    return json_response(
        {
            "ok": True,
            "production": {
                "text": settings.contact_text,
                "email": settings.contact_email,
                "operator_command": "loopkit projects promote PROJECT_ID --data-dir DATA_DIR",
            },
            "sandbox": {
                "quota_spans": settings.sandbox_quota_spans,
                "days": settings.sandbox_days,
                "grace_days_after_expiry": settings.sandbox_grace_days,
            },
            # POST /v1/provision: open to anyone, or only with the operator's token (docs/deployment.md).
            "provisioning": Policy.of(settings).as_json(),
        }
    )


def answer(request: Request, project: dict[str, Any]) -> dict[str, Any]:
    """The signup shape for an HTTP answer."""
    return signup_shape(request.app.state.loopkit.settings, project)


def _call(fn: Any, *args: Any) -> Any:
    """Run a projects function, translating its exceptions into API errors."""
    try:
        return fn(*args)
    except projects.AuthError as exc:
        raise ApiError(exc.status, exc.message, exc.code) from None
    except projects.Conflict as exc:
        raise ApiError(409, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _limit(request: Request) -> None:
    client = request.client.host if request.client else "unknown"
    retry_after = request.app.state.loopkit.rate_limiter.hit(client)
    if retry_after is not None:
        raise ApiError(429, "too many project requests from this address; retry later", retry_after=retry_after)
