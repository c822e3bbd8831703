"""The `loopkit` command: serve, and the operator's project commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from loopkit_core import __version__
from loopkit_core.client import ClientError
from loopkit_core.mcp import command as mcp_command
from loopkit_core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `loopkit` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ValueError as exc:
        print(f"loopkit: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"loopkit: error: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"loopkit: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopkit", description="LoopKit: telemetry in, diagnosis packets out.")
    parser.add_argument("--version", action="version", version=f"loopkit {__version__}")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="serve OTLP/HTTP, OTLP/gRPC and the API")
    _data_dir(serve)
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
    serve.set_defaults(handler=_serve)

    plugins = commands.add_parser("plugins", help="list the plugins this installation loads, and their hooks")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(handler=_plugins)

    diagnose = commands.add_parser("diagnose", help="run a diagnosis on a running server (agent key)")
    _client(diagnose)
    diagnose.add_argument("--since-minutes", type=float, default=60.0)
    diagnose.add_argument("--min-count", type=int, default=3)
    diagnose.add_argument("--max-issues", type=int, default=20)
    diagnose.set_defaults(handler=_diagnose)
    telemetry = commands.add_parser("telemetry", help="read a bounded window of records (agent key)")
    telemetry.add_argument("--since-minutes", type=float, default=60.0)
    telemetry.add_argument("--limit", type=int, default=50, help="records per page (at most 1000)")
    telemetry.add_argument("--cursor", help="next_cursor of the previous page")
    for name in ("type", "name", "service", "trace-id", "session-id", "issue"):
        telemetry.add_argument(f"--{name}", help=f"only records with this {name.replace('-', '_')}")
    _client(telemetry)
    telemetry.set_defaults(handler=_telemetry)
    handoff = commands.add_parser("handoff", help="print a packet's handoff (agent key)")
    handoff.add_argument("packet_id")
    handoff.add_argument("--format", default="markdown", help="json, markdown, prompt or a plugin's format")
    _client(handoff)
    handoff.set_defaults(handler=_handoff)
    verify = commands.add_parser("verify", help="verify a packet's issues on the window after it (agent key)")
    verify.add_argument("packet_id")
    verify.add_argument("--since-minutes", type=float, help="verify the last N minutes instead")
    _client(verify)
    verify.set_defaults(handler=_verify)

    mcp = commands.add_parser("mcp", help="serve MCP over stdio for an agent, through a running server's /mcp")
    mcp.add_argument("--url", help="the LoopKit server (default: LOOPKIT_URL)")
    mcp.add_argument("--key", help="agent key (default: LOOPKIT_AGENT_KEY)")
    mcp.set_defaults(handler=mcp_command.run)

    demo = commands.add_parser(
        "demo",
        help="see the whole loop: a temporary LoopKit, a sample agent app, diagnose, hand off, approve, verify",
    )
    demo.add_argument("--http-port", type=int, default=0, help="HTTP port on 127.0.0.1 (default: a free one)")
    demo.add_argument("--grpc-port", type=int, default=0, help="OTLP/gRPC port on 127.0.0.1 (default: a free one)")
    demo.add_argument("--keep-serving", action="store_true", help="keep the server up after the demo, until Ctrl-C")
    demo.set_defaults(handler=_demo)

    projects = commands.add_parser("projects", help="operator commands for projects and keys")
    project_commands = projects.add_subparsers(title="project commands")
    # (command, positional argument, help, handler); every one takes --data-dir, all but delete --json.
    for name, positional, text, handler in (
        ("create", "name", "create an uncapped project and print its keys once", _projects_create),
        ("list", None, "list projects", _projects_list),
        ("show", "project_id", "show one project (keys are never shown again)", _projects_show),
        ("promote", "project_id", "make a sandbox permanent: no quota, no expiry", _projects_promote),
        ("rotate-keys", "project_id", "revoke every key and mint new ones (printed once)", _projects_rotate),
        ("delete", "project_id", "revoke a project's keys and delete its records", _projects_delete),
    ):
        command = project_commands.add_parser(name, help=text)
        if positional:
            command.add_argument(positional)
        _data_dir(command)
        command.add_argument("--database-url", help="PostgreSQL URL (LOOPKIT_DATABASE_URL), as given to serve")
        if name == "delete":
            command.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
        else:
            command.add_argument("--json", action="store_true", help="print JSON")
        command.set_defaults(handler=handler)
    retention = project_commands.add_parser(
        "set-retention", help="keep a project's records DAYS days (0: forever; 'default': the server's setting)"
    )
    retention.add_argument("project_id")
    retention.add_argument("days", help="a number of days, 0 for forever, or 'default'")
    _data_dir(retention)
    retention.add_argument("--database-url", help="PostgreSQL URL (LOOPKIT_DATABASE_URL), as given to serve")
    retention.add_argument("--json", action="store_true", help="print JSON")
    retention.set_defaults(handler=_projects_set_retention)
    return parser


def _client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server base URL (LOOPKIT_URL, default http://127.0.0.1:4318)")
    parser.add_argument("--key", help="API key (LOOPKIT_KEY)")
    if not any(a.dest == "json" for a in parser._actions):
        parser.add_argument("--json", action="store_true", help="print the JSON answer")


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (LOOPKIT_DATA_DIR, default ./loopkit-data)")


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in ("data_dir", "host", "http_port", "grpc_port", "database_url", "max_body_bytes", "log_level")
    }
    return Settings.from_env(**flags)


def _serve(args: argparse.Namespace) -> int:
    from loopkit_core.server import serve

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from loopkit_core.demo import run

    return run(http_port=args.http_port, grpc_port=args.grpc_port, keep_serving=args.keep_serving)


def _control(args: argparse.Namespace):  # noqa: ANN202
    from loopkit_core.store.engines import Store

    return Store(_settings(args))


def _projects_create(args: argparse.Namespace) -> int:
    from loopkit_core.api.projects import signup_shape
    from loopkit_core.projects import create_project

    store = _control(args)
    try:
        created = signup_shape(store.settings, create_project(store.control, args.name))
    finally:
        store.close()
    _print_keys(f"Created project {created['project_id']} ({created['project_name']}).", created, args.json)
    return 0


def _projects_list(args: argparse.Namespace) -> int:
    from loopkit_core.projects import list_projects

    store = _control(args)
    try:
        rows = [_readable(p) for p in list_projects(store.control)]
    finally:
        store.close()
    if args.json:
        print(json.dumps({"ok": True, "projects": rows}, indent=2))
        return 0
    if not rows:
        print("no projects")
        return 0
    _table(rows, ("project_id", "project_name", "kind", "quota_spans", "expires_at"))
    return 0


def _projects_show(args: argparse.Namespace) -> int:
    from loopkit_core.projects import get_project
    from loopkit_core.retention import overrides

    store = _control(args)
    try:
        project = get_project(store.control, args.project_id)
        custom = overrides(store.control).get(args.project_id)
    finally:
        store.close()
    project = _readable(project) if project else None
    if project is not None:
        project["retention_days"] = store.settings.retention_days if custom is None else custom
        project["retention_source"] = "server default" if custom is None else "project"
    if project is None:
        print(f"loopkit: error: no project {args.project_id!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, "project": project}, indent=2))
        return 0
    for key in ("project_id", "project_name", "kind", "created_at", "quota_spans", "expires_at"):
        print(f"{key:14} {project[key]}")
    kept = "forever" if project["retention_days"] == 0 else f"{project['retention_days']:g} days"
    print(f"{'retention':14} {kept} ({project['retention_source']})")
    for key in project["keys"]:
        print(f"{key['kind'] + ' key':14} {key['display']}  ({' '.join(key['scopes'])})")
    return 0


def _projects_set_retention(args: argparse.Namespace) -> int:
    from loopkit_core.retention import retention_days, set_retention

    days: float | None = None
    if args.days != "default":
        try:
            days = float(args.days)
        except ValueError:
            print(f"loopkit: error: DAYS must be a number or 'default', got {args.days!r}", file=sys.stderr)
            return 2
    store = _control(args)
    try:
        set_retention(store.control, args.project_id, days)
        effective = retention_days(store.control, args.project_id, store.settings.retention_days)
    except (LookupError, ValueError) as exc:
        print(f"loopkit: error: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        store.close()
    source = "server default" if days is None else "project"
    if args.json:
        print(json.dumps({"ok": True, "project_id": args.project_id, "retention_days": effective, "source": source}))
    else:
        kept = "forever" if effective == 0 else f"{effective:g} days"
        print(f"Project {args.project_id} keeps its records {kept} ({source}); a running server applies it next pass.")
    return 0


def _projects_promote(args: argparse.Namespace) -> int:
    from loopkit_core.projects import promote

    store = _control(args)
    try:
        project = promote(store.control, args.project_id)
    except LookupError as exc:
        print(f"loopkit: error: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps({"ok": True, "project": _readable(project)}, indent=2))
    else:
        print(f"Project {project['project_id']} is permanent now: no quota, no expiry. Its keys are unchanged.")
    return 0


def _projects_rotate(args: argparse.Namespace) -> int:
    from loopkit_core.api.projects import signup_shape
    from loopkit_core.projects import rotate_keys

    store = _control(args)
    try:
        rotated = rotate_keys(store.control, args.project_id)
    except LookupError as exc:
        print(f"loopkit: error: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        store.close()
    rotated = signup_shape(store.settings, rotated)
    _print_keys(f"Rotated the keys of {rotated['project_id']}; the old keys no longer work.", rotated, args.json)
    return 0


def _projects_delete(args: argparse.Namespace) -> int:
    from loopkit_core.purge import delete_project

    if not args.yes:
        print("loopkit: error: deleting a project removes its records for good; add --yes to confirm", file=sys.stderr)
        return 2
    store = _control(args)
    try:
        found = delete_project(store, args.project_id)
    finally:
        store.close()
    if not found:
        print(f"loopkit: error: no project {args.project_id!r}", file=sys.stderr)
        return 1
    print(f"Deleted project {args.project_id}: keys revoked, records removed.")
    return 0


def _print_keys(headline: str, project: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(project, indent=2))
        return
    print(headline)
    print("These keys are shown once; LoopKit stores only their hashes.\n")
    for label, field in (
        ("producer key (ingest)", "producer_key"),
        ("agent key (read, diagnose)", "agent_key"),
        ("dashboard key (approve)", "dashboard_key"),
        ("recovery code", "recovery_code"),
    ):
        print(f"  {label:28} {project[field]}")


def _plugins(args: argparse.Namespace) -> int:
    from loopkit_core.plugins import describe_plugins, get_plugins

    answer = describe_plugins(get_plugins(Settings.from_env().blocked_plugins_list()))
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    rows = [
        {**p, "hooks": ", ".join(p["hooks"]), "builtin": "yes" if p["builtin"] else "no"} for p in answer["plugins"]
    ]
    _table(rows, ("name", "builtin", "hooks", "module"))
    for error in answer["load_errors"]:
        print(f"failed to load {error['plugin']}: {error['error']}", file=sys.stderr)
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from loopkit_core.client import call

    body = {"since_minutes": args.since_minutes, "min_count": args.min_count, "max_issues": args.max_issues}
    packet = call("POST", "/v1/runs/diagnose", url=args.url, key=args.key, body=body)["packet"]
    if args.json:
        print(json.dumps(packet, indent=2))
        return 0
    print(
        f"{packet['packet_id']}  {packet['status']}  window {packet['window']['start']} → {packet['window']['end']}"
        f"  records {packet['telemetry_read']}  failures {packet['failures']}"
    )
    if packet["issues"]:
        _table(
            [{**i, "title": i["title"][:70]} for i in packet["issues"]],
            ("issue_id", "count", "severity", "signal_type", "status", "title"),
        )
    for error in packet["diagnoser_errors"]:
        print(f"diagnoser {error['diagnoser']} failed: {error['error']}", file=sys.stderr)
    return 0


def _telemetry(args: argparse.Namespace) -> int:
    from loopkit_core.client import call

    params = {
        "since_minutes": args.since_minutes,
        "limit": args.limit,
        "cursor": args.cursor,
        "type": args.type,
        "name": args.name,
        "service": args.service,
        "trace_id": args.trace_id,
        "session_id": args.session_id,
        "issue": args.issue,
    }
    page = call("GET", "/v1/telemetry", url=args.url, key=args.key, params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = [
        {**r, "message": (r["message"] or "")[:60], "duration_ms": f"{r['duration_ms']:.1f}"} for r in page["records"]
    ]
    if rows:
        _table(rows, ("record_id", "timestamp", "type", "status", "duration_ms", "name", "message"))
    print(
        f"{len(rows)} record(s) in {page['window']['start']} → {page['window']['end']}"
        + (f"; next page: --cursor {page['next_cursor']}" if page["next_cursor"] else "")
    )
    return 0


def _handoff(args: argparse.Namespace) -> int:
    from loopkit_core.client import call

    text = call(
        "GET",
        f"/v1/packets/{args.packet_id}/handoff",
        url=args.url,
        key=args.key,
        params={"format": "json" if args.json else args.format},  # --json: the versioned JSON handoff
        raw=True,
    )
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from loopkit_core.client import call

    body: dict[str, Any] = {"packet_id": args.packet_id}
    if args.since_minutes is not None:
        body["since_minutes"] = args.since_minutes
    verification = call("POST", "/v1/runs/verify", url=args.url, key=args.key, body=body)["verification"]
    if args.json:
        print(json.dumps(verification, indent=2))
        return 0
    after = verification["window_after"]
    print(
        f"{verification['verification_id']}  packet {verification['packet_id']}  "
        f"after {after['start']} → {after['end']}"
    )
    if not verification["verdicts"]:
        print("the packet has no issues: nothing to verify")
        return 0
    _table([{**v, "title": v["title"][:60]} for v in verification["verdicts"]], ("issue_id", "verdict", "title"))
    for v in verification["verdicts"]:
        print(f"- {v['issue_id']}: {v['reason']}")
    return 0


def _readable(project: dict[str, Any]) -> dict[str, Any]:
    """Unix-second times as RFC 3339, as the HTTP API shows them."""
    from loopkit_core.model import rfc3339

    times = {k: rfc3339(project[k] * 1_000_000_000) for k in ("created_at", "expires_at") if project.get(k)}
    keys = [{**k, "created_at": rfc3339(k["created_at"] * 1_000_000_000)} for k in project.get("keys", [])]
    return {**project, **times, **({"keys": keys} if "keys" in project else {})}


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


if __name__ == "__main__":
    sys.exit(main())
