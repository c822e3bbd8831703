"""The MCP server (official SDK, low-level API): tools, the fix_packet prompt and packet resources, each answered
by the loop service for the principal the HTTP endpoint authenticated."""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio.to_thread
import mcp_types as types
import orjson
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from loopkit_core import __version__
from loopkit_core.identity import Principal
from loopkit_core.loop import Loop, LoopError
from loopkit_core.mcp import bounds
from loopkit_core.mcp.tools import BY_NAME, TOOLS, Tool

log = logging.getLogger("loopkit")
PRINCIPAL = "loopkit.principal"  # the ASGI scope key the endpoint puts the authenticated caller under
PACKET_URI = re.compile(r"loopkit://packets/([^/]+)")
HANDOFF_URI = re.compile(r"loopkit://packets/([^/]+)/handoff/([^/]+)")
INSTRUCTIONS = (
    "LoopKit turns production telemetry into diagnosis packets. Read telemetry, diagnose, read the packet and its "
    "handoff, fix the code, record the stages with loopkit_improve, then verify. A person approves a packet on the "
    "dashboard (see loopkit_project); there is no approve tool. LoopKit opens no URL and sends nothing out."
)


def build_server(loop: Loop) -> Server[Any]:
    """An MCP server whose every handler calls `loop` as the caller of the current HTTP request."""

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        caller = _principal(ctx)
        return types.ListToolsResult(tools=[_describe(tool) for tool in TOOLS if tool.allowed(caller)])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        caller = _principal(ctx)
        tool = BY_NAME.get(params.name)
        try:
            if tool is None:
                raise LoopError(404, f"unknown tool {params.name[:80]!r}; tools: {', '.join(BY_NAME)}")
            body, summary = await anyio.to_thread.run_sync(tool.call, loop, caller, params.arguments)
        except LoopError as exc:
            return _tool_error(exc.status, exc.code, exc.message, exc.retry_after)
        except Exception:  # a bug: logged, and answered as the REST API answers one (500), in the session
            log.exception("MCP tool %s failed", params.name)
            return _tool_error(500, "error", "internal error", None)
        # The summary first; then the JSON itself, for clients that show only text (the MCP spec's advice).
        content = [types.TextContent(type="text", text=summary)]
        if tool.name != "loopkit_handoff":  # the handoff's text is its content already
            content.append(types.TextContent(type="text", text=orjson.dumps(body).decode()))
        return types.CallToolResult(content=content, structured_content=body)

    async def list_prompts(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        _principal(ctx)
        argument = types.PromptArgument(name="packet_id", description="a packet_id from loopkit_packets", required=True)
        prompt = types.Prompt(
            name="fix_packet",
            title="Fix a packet",
            description="The packet's `prompt` handoff: what failed, the evidence, what to change and how to verify.",
            arguments=[argument],
        )
        return types.ListPromptsResult(prompts=[prompt])

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> Any:
        caller = _principal(ctx)
        if params.name != "fix_packet":
            raise MCPError(types.INVALID_PARAMS, f"not_found: unknown prompt {params.name[:80]!r}; prompts: fix_packet")
        packet_id = (params.arguments or {}).get("packet_id") or ""
        text = await _call(loop.handoff, caller, packet_id, "prompt")
        message = types.PromptMessage(role="user", content=types.TextContent(type="text", text=text.text))
        return types.GetPromptResult(description=f"fix packet {packet_id}", messages=[message])

    async def list_resources(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        caller = _principal(ctx)
        found = await _call(loop.packets, caller, 20)
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    name=p["packet_id"],
                    title=f"packet {p['packet_id']} ({p.get('status')})",
                    uri=f"loopkit://packets/{p['packet_id']}",
                    mime_type="application/json",
                )
                for p in found
            ]
        )

    async def list_templates(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        _principal(ctx)
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    name="packet",
                    uri_template="loopkit://packets/{packet_id}",
                    description=f"a packet as JSON, its first {bounds.DEFAULT_ISSUES} issues (loopkit_packet pages)",
                    mime_type="application/json",
                ),
                types.ResourceTemplate(
                    name="handoff",
                    uri_template="loopkit://packets/{packet_id}/handoff/{format}",
                    description="a packet's handoff: json, markdown, prompt or a plugin's format",
                ),
            ]
        )

    async def read_resource(ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        caller = _principal(ctx)
        uri = str(params.uri)
        if match := HANDOFF_URI.fullmatch(uri):
            rendered = await _call(loop.handoff, caller, match[1], match[2])
            text, rest = bounds.text_page(rendered.text, 0, bounds.MAX_HANDOFF_CHARS)
            if rest is not None:
                text += (
                    f"\n\n[cut at character {rest} of {len(rendered.text)}: call loopkit_handoff with offset={rest}]"
                )
            contents = types.TextResourceContents(uri=uri, mime_type=rendered.media_type, text=text)
        elif match := PACKET_URI.fullmatch(uri):
            found = await _call(loop.packet, caller, match[1])
            page = bounds.packet_page(found, 0, bounds.DEFAULT_ISSUES)
            contents = types.TextResourceContents(
                uri=uri, mime_type="application/json", text=orjson.dumps(page).decode()
            )
        else:
            raise MCPError(types.INVALID_PARAMS, f"not_found: no resource {uri[:120]!r} (loopkit://packets/...)")
        return types.ReadResourceResult(contents=[contents])

    server: Server[Any] = Server(
        "loopkit",
        version=__version__,
        title="LoopKit",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=lambda name: BY_NAME[name].input_schema() if name in BY_NAME else None,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )
    # No span per MCP message (the SDK's default middleware): in a process with a tracer provider (the demo's
    # sample app) LoopKit would export its own traffic, and LoopKit sends nothing anywhere.
    server.middleware = []
    return server


def _tool_error(status: int, code: str, message: str, retry_after: float | None) -> types.CallToolResult:
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        error["retry_after_seconds"] = retry_after
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{code} ({status}): {message}")],
        structured_content={"ok": False, "error": error},
        is_error=True,
    )


def _describe(tool: Tool) -> types.Tool:
    annotations = types.ToolAnnotations(
        title=tool.title,
        read_only_hint=not tool.writes,
        destructive_hint=False,  # the writes are LoopKit's own bookkeeping, appended
        idempotent_hint=not tool.writes,
        open_world_hint=False,  # LoopKit never reaches anything outside itself
    )
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema(),
        annotations=annotations,
    )


def _principal(ctx: ServerRequestContext[Any]) -> Principal:
    request = ctx.request
    caller = getattr(request, "scope", {}).get(PRINCIPAL) if request is not None else None
    if not isinstance(caller, Principal):  # only reachable by serving this server on a transport without the endpoint
        raise MCPError(types.INVALID_REQUEST, "unauthenticated: serve LoopKit's MCP server through its /mcp endpoint")
    return caller


async def _call(method: Any, *args: Any) -> Any:
    # Prompts and resources answer errors as JSON-RPC errors (the protocol has no isError for them), with the code.
    try:
        return await anyio.to_thread.run_sync(method, *args)
    except LoopError as exc:
        raise MCPError(types.INVALID_PARAMS, f"{exc.code}: {exc.message}") from None
