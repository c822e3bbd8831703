"""The commands about this installation itself: serve, demo, and the plugins it loads."""

from __future__ import annotations

import argparse
import logging
import sys

from loopkit_core.cli.options import settings_of
from loopkit_core.cli.output import print_json, table
from loopkit_core.settings import Settings


def serve(args: argparse.Namespace) -> int:
    """`loopkit serve`: OTLP/HTTP, OTLP/gRPC and the API until SIGINT/SIGTERM."""
    from loopkit_core.server import serve as run_server

    settings = settings_of(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_server(settings)
    return 0


def demo(args: argparse.Namespace) -> int:
    """`loopkit demo`: the whole loop on a temporary store (docs/demo.md)."""
    from loopkit_core.demo import run

    return run(http_port=args.http_port, grpc_port=args.grpc_port, keep_serving=args.keep_serving)


def plugins(args: argparse.Namespace) -> int:
    """`loopkit plugins`: what this installation loads, as GET /v1/plugins answers it."""
    from loopkit_core.plugins import describe_loaded, get_plugins

    answer = describe_loaded(get_plugins(Settings.from_env().blocked_plugins_list()))
    if args.json:
        print_json(answer)
        return 0
    rows = [
        {
            **p,
            "hooks": ", ".join(p["hooks"]),
            "builtin": "yes" if p["builtin"] else "no",
            "distribution": p["distribution"] or "-",  # "-": registered in code, not installed
            "version": p["version"] or "-",
        }
        for p in answer["plugins"]
    ]
    table(rows, ("name", "builtin", "hooks", "module", "distribution", "version"))
    for error in answer["load_errors"]:
        print(f"failed to load {error['plugin']}: {error['error']}", file=sys.stderr)
    return 0
