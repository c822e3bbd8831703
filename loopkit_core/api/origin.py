"""Same-site checks of the dashboard's forms: where a form came from, and where signing in may return to."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request

from loopkit_core.api.errors import ApiError

BASE = "/v1/dashboard"


def here(request: Request) -> str:
    """The dashboard path of this request, safe to return to after signing in."""
    return safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


def safe_next(target: object) -> str:
    """A same-site dashboard path to return to after signing in (never another host: no open redirect)."""
    if not isinstance(target, str) or len(target) > 500 or _unsafe(target):
        return BASE
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return BASE
    # Browsers decode %2e as a dot segment and may read %2f or %5c as a separator, so the check runs on the path
    # as decoded once, with its dot segments resolved, and the answer is that path, encoded again.
    path = unquote(parts.path)
    if _unsafe(path) or "//" in path:
        return BASE
    resolved: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if not resolved:
                return BASE
            resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    path = "/" + "/".join(resolved)
    if not (path == BASE or path.startswith(BASE + "/")):
        return BASE
    if path.startswith(BASE + "/login") or path.startswith(BASE + "/logout"):
        return BASE
    return quote(path, safe="/-._~!$&'()*+,;=:@") + (f"?{parts.query}" if parts.query else "")


def _unsafe(text: str) -> bool:
    # Controls, spaces and backslashes (which browsers read as "/") never belong in a path we redirect to.
    return "\\" in text or any(ord(ch) < 33 or 127 <= ord(ch) < 160 for ch in text)


def check_origin(request: Request, signing_in: bool = False) -> None:
    """Refuse a browser POST whose Origin is another site (cross-site request forgery)."""
    # Browsers send Sec-Fetch-Site on every request; under `Referrer-Policy: no-referrer` their Origin is "null",
    # which says nothing, so only a named foreign origin counts against the request.
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = {f"{request.url.scheme}://{request.url.netloc}", request.app.state.loopkit.settings.base_url()}
    foreign_origin = origin not in (None, "null") and origin not in own
    if foreign_origin or (site is not None and site not in ("same-origin", "none")):
        raise ApiError(403, "this form came from another site; open the dashboard directly", "csrf_failed")
    # Signing in has no session to hold a CSRF token yet, so a browser (every browser sends Origin on a POST)
    # must prove the form is ours: a cross-site page can make its Origin "null", and a browser without
    # Sec-Fetch-Site would then let it sign the victim into the attacker's project (docs/dashboard.md).
    if signing_in and site is None and origin is not None and origin not in own:
        raise ApiError(
            403,
            "this browser did not say the sign-in form came from this site (no Sec-Fetch-Site header): "
            "use a current browser, or send the key in an authorization header",
            "csrf_failed",
        )
