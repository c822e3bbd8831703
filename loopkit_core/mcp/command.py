"""`loopkit mcp`: the handler of the command (cli.py declares its flags); the MCP SDK loads only when it runs."""

from __future__ import annotations

import argparse
import os


def run(args: argparse.Namespace) -> int:
    """Serve MCP over stdio, passed on to `--url`'s /mcp with `--key` or LOOPKIT_AGENT_KEY; ValueError if missing."""
    from loopkit_core.mcp.proxy import run as proxy

    return proxy(args.url or os.environ.get("LOOPKIT_URL"), args.key or os.environ.get("LOOPKIT_AGENT_KEY"))
