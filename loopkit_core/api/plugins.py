"""`GET /v1/plugins`: what is loaded, which hooks each plugin implements, and what failed to load."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_response, principal
from loopkit_core.scopes import TELEMETRY_READ


async def list_plugins(request: Request) -> Response:
    """Loaded plugins and the diagnosers among them."""
    await principal(request, TELEMETRY_READ)
    return json_response(request.app.state.loop.plugins_loaded())
