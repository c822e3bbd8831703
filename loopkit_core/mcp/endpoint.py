"""`/mcp`: MCP over streamable HTTP on LoopKit's HTTP port, authenticated by the REST API's bearer keys.

Stateless: every HTTP request carries its key and is served on its own (no MCP session is kept between requests),
so a revoked key stops at once, nothing is held per client, and any process behind a load balancer can answer.
LoopKit's tools only answer requests; they never need a stream back to the client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from loopkit_core.loop import Loop
from loopkit_core.mcp.server import PRINCIPAL, build_server
from loopkit_core.scopes import DASHBOARD_READ

MAX_MCP_BODY_BYTES = 64 * 1024  # one JSON-RPC message: tool arguments are small (the REST JSON bodies' cap)
# The SDK logs "Terminating session: None" at INFO after every stateless request: one line per tool call.
logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)


class McpEndpoint:
    """The ASGI app at /mcp: authenticate the key, then hand the request to the SDK's streamable HTTP transport."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.manager = StreamableHTTPSessionManager(
            app=build_server(loop), json_response=True, stateless=True, max_request_body_size=MAX_MCP_BODY_BYTES
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the SDK's task group (on the serving event loop) while the server serves."""
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Agent and dashboard keys hold dashboard:read; a producer key does not, so it is refused here (403) and
        # never sees a tool. Raised LoopErrors become the REST error JSON through the app's handler.
        authorization = Request(scope).headers.get("authorization")
        caller = await run_in_threadpool(self.loop.authenticate, authorization, DASHBOARD_READ)
        await self.manager.handle_request({**scope, PRINCIPAL: caller}, receive, send)
