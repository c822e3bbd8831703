"""`GET /v1/plugins`: what is loaded, which hooks each plugin implements, and what failed to load."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_response, principal
from loopkit_core.plugins import describe_loaded

READ_SCOPE = "telemetry:read"


async def list_plugins(request: Request) -> Response:
    """Loaded plugins and the diagnosers among them."""
    await principal(request, READ_SCOPE)
    return json_response(describe_loaded(request.app.state.loopkit.plugins))
