"""`GET /v1/plugins`: what is loaded, which hooks each plugin implements, and what failed to load."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from loopkit_core.api.errors import json_response, principal
from loopkit_core.plugins import Plugins
from loopkit_core.scopes import TELEMETRY_READ

READ_SCOPE = TELEMETRY_READ


async def list_plugins(request: Request) -> Response:
    """Loaded plugins and the diagnosers among them."""
    await principal(request, READ_SCOPE)
    return json_response(describe(request.app.state.loopkit.plugins))


def describe(plugins: Plugins) -> dict[str, Any]:
    """The plugins answer (shared by the API and `loopkit plugins`)."""
    return {
        "ok": True,
        "plugins": plugins.describe(),
        "diagnosers": [name for name, _ in plugins.implementations("diagnose")],
        "verifiers": [name for name, _ in plugins.implementations("verify_issue")],
        "renderers": [
            {"name": r.name, "media_type": r.media_type, "description": r.description}
            for r in plugins.renderers().values()
        ],
        "load_errors": plugins.load_errors,
    }
