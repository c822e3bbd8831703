"""`loopkit mcp --url URL`: MCP over stdio for clients that start a command (Claude Code, Codex, Cursor).

A thin client of a running server: an MCP server on stdin/stdout whose every request is passed, as it is, to the
server's /mcp endpoint with the agent key (the SDK's client on one side, its server on the other).
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client

from loopkit_core import __version__


def run(url: str | None, key: str | None) -> int:
    """Serve stdio until the client closes it; ValueError when the URL or the key is missing."""
    if not url:
        raise ValueError("--url (or LOOPKIT_URL) is required: the LoopKit server, e.g. http://127.0.0.1:4318")
    if not key:
        raise ValueError("an agent key is required: set LOOPKIT_AGENT_KEY (or pass --key)")
    endpoint = url.rstrip("/") + "/mcp"
    try:
        anyio.run(serve, endpoint, key)
    except Exception as exc:  # the SDK reports a refused key or an unreachable server inside exception groups
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        raise OSError(f"MCP at {endpoint}: {type(exc).__name__}: {exc}"[:500]) from None
    return 0


async def serve(endpoint: str, key: str) -> None:
    """Proxy stdio to `endpoint` with `key` until stdin closes."""
    http = create_mcp_http_client(headers={"authorization": f"Bearer {key}"})
    http.event_hooks = {"response": [_refused]}
    async with (
        http,
        Client(streamable_http_client(endpoint, http_client=http), cache=None) as upstream,
        stdio_server() as (read, write),
    ):
        server = _server(upstream)
        await server.run(read, write, server.create_initialization_options())


async def _refused(response: Any) -> None:
    # A refused key is the likeliest mistake: say what the server said instead of the SDK's generic error.
    if response.status_code in (401, 403):
        await response.aread()
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise PermissionError(f"{response.status_code}: {message}")


def _server(upstream: Client) -> Server[Any]:
    session = upstream.session

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return await session.list_tools(params=params)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        return await session.call_tool(params.name, params.arguments)

    async def list_prompts(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return await session.list_prompts(params=params)

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> Any:
        return await session.get_prompt(params.name, params.arguments)

    async def list_resources(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return await session.list_resources(params=params)

    async def list_templates(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return await session.list_resource_templates(params=params)

    async def read_resource(ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        return await session.read_resource(str(params.uri))

    server: Server[Any] = Server(
        "loopkit",
        version=__version__,
        title="LoopKit (stdio)",
        instructions=upstream.instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )
    server.middleware = []  # no span per message (see server.py)
    return server
