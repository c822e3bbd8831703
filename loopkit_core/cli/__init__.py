"""The `loopkit` command: its argument tree, and one dispatch that turns every known error into a message and code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from loopkit_core import __version__
from loopkit_core.cli import client, installation, projects, scaffold
from loopkit_core.cli.errors import exit_status
from loopkit_core.cli.options import add_data_dir, add_json, add_server, add_store
from loopkit_core.mcp import command as mcp_command


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `loopkit` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except Exception as exc:
        status = exit_status(exc)
        if status is None:
            raise
        code, message = status
        print(f"loopkit: error: {message}", file=sys.stderr)
        return code


def build_parser() -> argparse.ArgumentParser:
    """Every command, its flags and its handler."""
    parser = argparse.ArgumentParser(prog="loopkit", description="LoopKit: telemetry in, diagnosis packets out.")
    parser.add_argument("--version", action="version", version=f"loopkit {__version__}")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="serve OTLP/HTTP, OTLP/gRPC and the API")
    add_data_dir(serve)
    serve.add_argument("--host", help="address to bind (LOOPKIT_HOST, default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="HTTP port (LOOPKIT_HTTP_PORT, default 4318)")
    serve.add_argument("--grpc-port", type=int, help="OTLP/gRPC port (LOOPKIT_GRPC_PORT, default 4317)")
    serve.add_argument(
        "--database-url",
        help="postgresql+psycopg://user@host/db to keep everything in PostgreSQL (LOOPKIT_DATABASE_URL); "
        "default: SQLite files in --data-dir",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        help="largest request body after decompression (LOOPKIT_MAX_BODY_BYTES, default 64 MiB)",
    )
    serve.add_argument("--log-level", help="debug, info, warning or error (LOOPKIT_LOG_LEVEL, default info)")
    serve.set_defaults(handler=installation.serve)

    plugins = commands.add_parser(
        "plugins", help="list the plugins this installation loads (hooks, distribution, version); or start one"
    )
    add_json(plugins)
    plugins.set_defaults(handler=installation.plugins)
    new = plugins.add_subparsers(title="plugin commands").add_parser(
        "new", help="write a ready plugin package: pyproject with the entry point, the plugin, a passing test, a README"
    )
    new.add_argument("name", help="the plugin's name (its entry point): a-z, 0-9 and _, e.g. slow_checkout")
    new.add_argument("--kind", required=True, choices=scaffold.KINDS, help="which hook the plugin implements")
    new.add_argument("--directory", help="where to write it (default: ./loopkit-NAME, which must not exist)")
    new.set_defaults(handler=scaffold.new)

    _client_commands(commands.add_parser)

    demo = commands.add_parser(
        "demo",
        help="see the whole loop: a temporary LoopKit, a sample agent app, diagnose, hand off, approve, verify",
    )
    demo.add_argument("--http-port", type=int, default=0, help="HTTP port on 127.0.0.1 (default: a free one)")
    demo.add_argument("--grpc-port", type=int, default=0, help="OTLP/gRPC port on 127.0.0.1 (default: a free one)")
    demo.add_argument("--keep-serving", action="store_true", help="keep the server up after the demo, until Ctrl-C")
    demo.set_defaults(handler=installation.demo)

    mcp = commands.add_parser("mcp", help="serve MCP over stdio for an agent, through a running server's /mcp")
    mcp.add_argument("--url", help="the LoopKit server (default: LOOPKIT_URL)")
    mcp.add_argument("--key", help="agent key (default: LOOPKIT_AGENT_KEY)")
    mcp.set_defaults(handler=mcp_command.run)

    _project_commands(commands.add_parser)
    return parser


def _client_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    diagnose = add("diagnose", help="run a diagnosis on a running server (agent key)")
    add_server(diagnose)
    add_json(diagnose, "print the JSON answer")
    diagnose.add_argument("--since-minutes", type=float, default=60.0)
    diagnose.add_argument("--min-count", type=int, default=3)
    diagnose.add_argument("--max-issues", type=int, default=20)
    diagnose.set_defaults(handler=client.diagnose)

    telemetry = add("telemetry", help="read a bounded window of records (agent key)")
    telemetry.add_argument("--since-minutes", type=float, default=60.0)
    telemetry.add_argument("--limit", type=int, default=50, help="records per page (at most 1000)")
    telemetry.add_argument("--cursor", help="next_cursor of the previous page")
    for name in ("type", "name", "service", "trace-id", "session-id", "issue"):
        telemetry.add_argument(f"--{name}", help=f"only records with this {name.replace('-', '_')}")
    add_server(telemetry)
    add_json(telemetry, "print the JSON answer")
    telemetry.set_defaults(handler=client.telemetry)

    handoff = add("handoff", help="print a packet's handoff (agent key)")
    handoff.add_argument("packet_id")
    handoff.add_argument("--format", default="markdown", help="json, markdown, prompt or a plugin's format")
    add_server(handoff)
    add_json(handoff, "print the versioned JSON handoff (--format json)")
    handoff.set_defaults(handler=client.handoff)

    verify = add("verify", help="verify a packet's issues on the window after it (agent key)")
    verify.add_argument("packet_id")
    verify.add_argument("--since-minutes", type=float, help="verify the last N minutes instead")
    verify.add_argument("--release", help="the service.version carrying the fix: only it and later releases count")
    add_server(verify)
    add_json(verify, "print the JSON answer")
    verify.set_defaults(handler=client.verify)

    rules = add(
        "rules", help="show the project's fingerprint rules (agent or dashboard key); `rules set FILE` changes them"
    )
    add_server(rules)
    add_json(rules, "print the JSON answer")
    rules.set_defaults(handler=client.rules)
    set_rules = rules.add_subparsers(title="rules commands").add_parser(
        "set", help="replace the rules with those of a JSON file, - for stdin (dashboard key)"
    )
    set_rules.add_argument("file", help='{"rules": [...]} or a list of rules (docs/grouping.md)')
    set_rules.add_argument("--version", type=int, help="only if this version is still in force (else 409)")
    add_server(set_rules)
    add_json(set_rules, "print the JSON answer")
    set_rules.set_defaults(handler=client.set_rules)


def _project_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    group = add("projects", help="operator commands for projects and keys")
    add_project = group.add_subparsers(title="project commands").add_parser
    # (command, positional argument, help, handler); every one opens the store, all but delete take --json.
    for name, positional, text, handler in (
        ("create", "name", "create an uncapped project and print its keys once", projects.create),
        ("list", None, "list projects", projects.list_),
        ("show", "project_id", "show one project (keys are never shown again)", projects.show),
        ("promote", "project_id", "make a sandbox permanent: no quota, no expiry", projects.promote),
        ("rotate-keys", "project_id", "revoke every key and mint new ones (printed once)", projects.rotate_keys),
        ("delete", "project_id", "revoke a project's keys and delete its records", projects.delete),
    ):
        command = add_project(name, help=text)
        if positional:
            command.add_argument(positional)
        add_store(command)
        if name == "delete":
            command.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
        else:
            add_json(command)
        command.set_defaults(handler=handler)
    retention = add_project(
        "set-retention", help="keep a project's records DAYS days (0: forever; 'default': the server's setting)"
    )
    retention.add_argument("project_id")
    retention.add_argument("days", help="a number of days, 0 for forever, or 'default'")
    add_store(retention)
    add_json(retention)
    retention.set_defaults(handler=projects.set_retention)
