"""`loopkit projects ...`: the operator's commands, on the store named by --data-dir / --database-url."""

from __future__ import annotations

import argparse
from typing import Any

from loopkit_core.cli.errors import UsageError
from loopkit_core.cli.options import settings_of
from loopkit_core.cli.output import print_json, table

# Each handler imports loopkit_core.operator when it runs: the other commands never load the store's modules.


def create(args: argparse.Namespace) -> int:
    """`projects create NAME`: an uncapped project; its keys are printed once."""
    from loopkit_core import operator

    created = operator.create_project(settings_of(args), args.name)
    _print_keys(f"Created project {created['project_id']} ({created['project_name']}).", created, args.json)
    return 0


def list_(args: argparse.Namespace) -> int:
    """`projects list`."""
    from loopkit_core import operator

    rows = operator.list_projects(settings_of(args))
    if args.json:
        print_json({"ok": True, "projects": rows})
    elif not rows:
        print("no projects")
    else:
        table(rows, ("project_id", "project_name", "kind", "quota_spans", "expires_at"))
    return 0


def show(args: argparse.Namespace) -> int:
    """`projects show PROJECT_ID`: the project, its effective retention and its keys' prefixes (never the keys)."""
    from loopkit_core import operator

    project = operator.show_project(settings_of(args), args.project_id)
    if args.json:
        print_json({"ok": True, "project": project})
        return 0
    for key in ("project_id", "project_name", "kind", "created_at", "quota_spans", "expires_at"):
        print(f"{key:14} {project[key]}")
    print(f"{'retention':14} {_kept(project['retention_days'])} ({project['retention_source']})")
    for key in project["keys"]:
        print(f"{key['kind'] + ' key':14} {key['display']}  ({' '.join(key['scopes'])})")
    return 0


def set_retention(args: argparse.Namespace) -> int:
    """`projects set-retention PROJECT_ID DAYS`: a number of days, 0 for forever, or 'default'."""
    from loopkit_core import operator

    days: float | None = None
    if args.days != "default":
        try:
            days = float(args.days)
        except ValueError:
            raise UsageError(f"DAYS must be a number or 'default', got {args.days!r}") from None
    answer = operator.set_retention(settings_of(args), args.project_id, days)
    if args.json:
        print_json(answer, indent=None)
    else:
        print(
            f"Project {args.project_id} keeps its records {_kept(answer['retention_days'])} ({answer['source']}); "
            "a running server applies it next pass."
        )
    return 0


def promote(args: argparse.Namespace) -> int:
    """`projects promote PROJECT_ID`: no quota, no expiry."""
    from loopkit_core import operator

    project = operator.promote(settings_of(args), args.project_id)
    if args.json:
        print_json({"ok": True, "project": project})
    else:
        print(f"Project {project['project_id']} is permanent now: no quota, no expiry. Its keys are unchanged.")
    return 0


def rotate_keys(args: argparse.Namespace) -> int:
    """`projects rotate-keys PROJECT_ID`: new keys, printed once; the old ones stop working."""
    from loopkit_core import operator

    rotated = operator.rotate_keys(settings_of(args), args.project_id)
    _print_keys(f"Rotated the keys of {rotated['project_id']}; the old keys no longer work.", rotated, args.json)
    return 0


def delete(args: argparse.Namespace) -> int:
    """`projects delete PROJECT_ID --yes`."""
    from loopkit_core import operator

    if not args.yes:
        raise UsageError("deleting a project removes its records for good; add --yes to confirm")
    operator.delete_project(settings_of(args), args.project_id)
    print(f"Deleted project {args.project_id}: keys revoked, records removed.")
    return 0


def _kept(days: float) -> str:
    return "forever" if days == 0 else f"{days:g} days"


def _print_keys(headline: str, project: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(project)
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
