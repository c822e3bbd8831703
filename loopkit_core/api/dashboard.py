"""`/v1/dashboard`: packets, issues, charts, evidence, handoff, approve/reject and verdicts, for people (HTML) and JSON.

A person signs in with the dashboard key (a form, or the key in the URL fragment that a tiny script posts to the
login route); the browser then holds a signed session cookie (see loopkit_core/sessions.py), never the key.
A bearer `authorization` header works on every route too. The agent key may read, only the dashboard key decides.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from loopkit_core import __version__, charts, sessions
from loopkit_core.api.errors import ApiError, error_response, json_response, principal, read_capped
from loopkit_core.api.origin import BASE, check_origin, here
from loopkit_core.identity import Principal
from loopkit_core.loop.errors import LoopError
from loopkit_core.loop.requests import MAX_NOTE, packet_limit
from loopkit_core.model import rfc3339
from loopkit_core.scopes import APPROVALS_WRITE, DASHBOARD_READ

READ_SCOPE = DASHBOARD_READ
DECIDE_SCOPE = APPROVALS_WRITE
MAX_FORM_BYTES = 16 * 1024
_PACKET_ID = re.compile(r"pkt_[0-9a-f]{1,36}")

_env = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Viewer:
    """Who looks at the dashboard, and how they signed in (a session cookie, or a bearer header)."""

    principal: Principal
    csrf: str | None  # set for cookie sessions: their forms must carry it

    @property
    def can_decide(self) -> bool:
        """Whether this key may approve or reject (only the dashboard key holds approvals:write)."""
        return DECIDE_SCOPE in self.principal.scopes

    def as_json(self) -> dict[str, Any]:
        """The viewer in JSON answers."""
        p = self.principal
        return {"project_id": p.project_id, "key_kind": p.key_kind, "key": p.key_display, "can_decide": self.can_decide}


def wants_json(request: Request) -> bool:
    """True when the client asks for JSON rather than a page."""
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def security_headers(nonce: str) -> dict[str, str]:
    """Headers on every dashboard answer: no caching, no referrer, no framing, a CSP that admits only our nonce."""
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "content-security-policy": csp,
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
    }


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """A page rendered from loopkit_core/templates with autoescaping, under the dashboard's headers."""
    nonce = secrets.token_urlsafe(16)
    html = _env.get_template(template).render(nonce=nonce, version=__version__, base=BASE, **context)
    return Response(html, status_code, headers=security_headers(nonce), media_type="text/html; charset=utf-8")


def _json(body: Any, status: int = 200) -> Response:
    response = json_response(body, status)
    response.headers.update(security_headers(secrets.token_urlsafe(8)))
    return response


def page(handler: Handler) -> Handler:
    """Answer errors as the dashboard should: the login page (HTML 401), an error page, or the API's JSON error."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            if wants_json(request):
                response = error_response(exc.status, exc.message, exc.code, exc.retry_after)
                response.headers.update(security_headers(secrets.token_urlsafe(8)))
                return response
            if exc.status == 401:
                signed_out = request.method == "GET" and request.query_params.get("signed_out") == "1"
                message = None if signed_out else exc.message
                target = BASE if signed_out else here(request)
                return render(
                    request, "login.html", 401, message=message, signed_out=signed_out, next=target, viewer=None
                )
            response = render(request, "error.html", exc.status, status=exc.status, message=exc.message, viewer=None)
            if exc.status == 408:
                response.headers["connection"] = "close"  # the rest of a late form is not a next request
            return response

    return wrapped


async def viewer(request: Request) -> Viewer:
    """The signed-in viewer: a bearer header if sent (it must be valid), else the session cookie."""
    if request.headers.get("authorization") is not None:
        return Viewer(await principal(request, READ_SCOPE), None)
    loop = request.app.state.loop
    token = request.cookies.get(sessions.COOKIE)
    if not token:
        raise ApiError(401, "sign in with your dashboard key")
    found = await run_in_threadpool(loop.session, token)
    if found is None:
        raise ApiError(401, "your session ended (it expired, or the key was rotated): sign in again")
    who, key_hash = found
    check_access(who, loop.clock())
    return Viewer(who, sessions.csrf_token(token, key_hash))


def check_access(who: Principal, now: float) -> None:
    """ApiError 403 unless the key may open the dashboard and its sandbox has not expired."""
    if READ_SCOPE not in who.scopes:
        raise ApiError(403, f"the {who.key_kind} key cannot open the dashboard: use the dashboard key")
    if who.expires_at is not None and now >= who.expires_at:
        raise ApiError(403, f"sandbox project {who.project_id} has expired", "project_expired")


async def decision_form(request: Request, who: Viewer, what: str) -> dict[str, str]:
    """The form of a person's act (approve, reject, merge...): dashboard key, same site, the session's csrf token."""
    if not who.can_decide:
        kind = who.principal.key_kind
        raise ApiError(403, f"the {kind} key may read the dashboard but not {what}: use the dashboard key")
    check_origin(request)
    form = await read_form(request)
    # Compared as bytes: compare_digest refuses non-ASCII str (a hostile form would raise, not be refused).
    if who.csrf is not None and not secrets.compare_digest(form.get("csrf", "").encode(), who.csrf.encode()):
        raise ApiError(403, "the form expired or came from another site: reload the page and try again", "csrf_failed")
    return form


async def read_form(request: Request) -> dict[str, str]:
    """A small form body (urlencoded, as browsers send it, or a JSON object of strings); ApiError otherwise."""
    raw = await read_capped(request, MAX_FORM_BYTES, "form")
    if not raw.strip():
        return {}
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "form must be UTF-8 urlencoded with at most 20 fields") from None
        return {name: values[0] for name, values in fields.items()}
    if media_type == "application/json":
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "body must be a JSON object") from None
        if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
            raise ApiError(400, "body must be a JSON object of strings")
        return body
    raise ApiError(415, "send the form as application/x-www-form-urlencoded (or application/json)")


# --- pages -------------------------------------------------------------------------------------------------------


@page
async def index(request: Request) -> Response:
    """The project's packets, newest first, with their status and issues; `limit` 1-100 (default 20)."""
    who = await viewer(request)
    limit = packet_limit(request.query_params.get("limit"))
    loop = request.app.state.loop
    found = await run_in_threadpool(loop.packets, who.principal, limit)
    about = await run_in_threadpool(loop.project, who.principal)
    for summary in found:
        summary["dashboard_url"] = f"{BASE}/packets/{summary['packet_id']}"
    if wants_json(request):
        return _json({"ok": True, "project": about, "viewer": who.as_json(), "packets": found})
    return render(request, "index.html", project=about, viewer=who, packets=found, limit=limit)


@page
async def packet_page(request: Request) -> Response:
    """One packet: issues with counts and charts, evidence, the Markdown handoff, the decision form, the timeline."""
    who = await viewer(request)
    context = await _packet_context(request, who, request.path_params["packet_id"])
    if wants_json(request):
        return _json(
            {
                "ok": True,
                "viewer": who.as_json(),
                "packet": context["packet"],
                "occurrences": {
                    issue_id: series.as_json() for issue_id, series in context["series"].items() if series is not None
                },
                "handoff": {"format": "markdown", "text": context["handoff"], "error": context["handoff_error"]},
                "stages": context["stages"],
                "timeline": context["timeline"],
            }
        )
    return render(request, "packet.html", **context)


async def _packet_context(request: Request, who: Viewer, packet_id: str, **extra: Any) -> dict[str, Any]:
    view = await run_in_threadpool(request.app.state.loop.packet_view, who.principal, packet_id)
    return {
        "packet": view.packet,
        "records": view.records,
        "series": view.series,
        "handoff": view.handoff,
        "handoff_error": view.handoff_error,
        "stages": view.stages,
        "timeline": view.timeline,
        "viewer": who,
        "max_note": MAX_NOTE,
        "form_error": None,
        "note": "",
        **extra,
    }


@page
async def record_page(request: Request) -> Response:
    """One record of the project with everything behind a claim: attributes, resource, events."""
    who = await viewer(request)
    record = await run_in_threadpool(request.app.state.loop.record, who.principal, request.path_params["record_id"])
    if wants_json(request):
        return _json({"ok": True, "viewer": who.as_json(), "record": record})
    back = request.query_params.get("packet", "")
    back = back if _PACKET_ID.fullmatch(back) else None
    pretty = {k: orjson.dumps(record[k], option=orjson.OPT_INDENT_2).decode() for k in ("attributes", "resource")}
    events = [
        {**event, "pretty": orjson.dumps(event.get("attributes", {}), option=orjson.OPT_INDENT_2).decode()}
        for event in record.get("events") or []
        if isinstance(event, dict)
    ]
    return render(request, "record.html", viewer=who, record=record, pretty=pretty, events=events, back=back)


# --- deciding ------------------------------------------------------------------------------------------------------


@page
async def approve(request: Request) -> Response:
    """A person approves the packet from its page (form: note, csrf); 303 back to the page."""
    return await _decide(request, "approved")


@page
async def reject(request: Request) -> Response:
    """A person rejects the packet from its page (form: note, csrf); 303 back to the page."""
    return await _decide(request, "rejected")


async def _decide(request: Request, decision: str) -> Response:
    who = await viewer(request)
    packet_id = request.path_params["packet_id"]
    form = await decision_form(request, who, "decide")
    note = form.get("note", "")
    try:
        await run_in_threadpool(request.app.state.loop.decide, who.principal, packet_id, decision, note)
    except LoopError as exc:
        if exc.status != 400 or wants_json(request):
            raise
        context = await _packet_context(request, who, packet_id, form_error=exc.message, note=note[: MAX_NOTE * 2])
        return render(request, "packet.html", 400, **context)
    target = f"{BASE}/packets/{packet_id}#decision"
    return RedirectResponse(target, 303, headers=security_headers(secrets.token_urlsafe(8)))


def when(ns_or_text: object) -> str:
    """A timestamp for people: RFC 3339 to the second, in UTC."""
    if isinstance(ns_or_text, int):
        ns_or_text = rfc3339(ns_or_text)
    if not isinstance(ns_or_text, str):
        return ""
    return ns_or_text[:19].replace("T", " ") + " UTC" if len(ns_or_text) >= 19 else ns_or_text


def session_href(session_id: object) -> str:
    """The session page of a session ID, or "" when no path can name it (a `/` in it: servers decode %2F first)."""
    if not isinstance(session_id, str) or not session_id or "/" in session_id:
        return ""
    return f"{BASE}/sessions/{quote(session_id, safe='')}"


_env.filters["when"] = when
_env.filters["session_href"] = session_href
_env.globals["chart_width"] = charts.WIDTH
_env.globals["chart_height"] = charts.HEIGHT
