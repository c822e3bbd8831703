"""LoopKit's MCP server: streamable HTTP at /mcp (endpoint.py) and stdio through `loopkit mcp` (proxy.py);
the tools (tools.py) call the loop service only (docs/mcp.md)."""
