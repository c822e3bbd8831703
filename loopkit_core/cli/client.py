"""The client commands: diagnose, telemetry, handoff, verify and rules against a running server (--url, --key)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loopkit_core.cli.output import print_json, table
from loopkit_core.client import ClientError, call


def diagnose(args: argparse.Namespace) -> int:
    """`loopkit diagnose`: POST /v1/runs/diagnose; the packet and its issues."""
    body = {"since_minutes": args.since_minutes, "min_count": args.min_count, "max_issues": args.max_issues}
    packet = call("POST", "/v1/runs/diagnose", url=args.url, key=args.key, body=body)["packet"]
    if args.json:
        print_json(packet)
        return 0
    print(
        f"{packet['packet_id']}  {packet['status']}  window {packet['window']['start']} → {packet['window']['end']}"
        f"  records {packet['telemetry_read']}  failures {packet['failures']}"
    )
    if packet["issues"]:
        table(
            [{**i, "title": i["title"][:70]} for i in packet["issues"]],
            ("issue_id", "count", "severity", "signal_type", "status", "title"),
        )
    for note in packet.get("diagnoser_notes", []):
        where = f" {note['where']}:" if note.get("where") else ""
        needs = f" (needs {note['needs']})" if note.get("needs") else ""
        print(f"note {note['diagnoser']}:{where} {note['reason']}{needs}")
    for error in packet["diagnoser_errors"]:
        print(f"diagnoser {error['diagnoser']} failed: {error['error']}", file=sys.stderr)
    return 0


def telemetry(args: argparse.Namespace) -> int:
    """`loopkit telemetry`: one page of GET /v1/telemetry."""
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
        print_json(page)
        return 0
    rows = [
        {**r, "message": (r["message"] or "")[:60], "duration_ms": f"{r['duration_ms']:.1f}"} for r in page["records"]
    ]
    if rows:
        table(rows, ("record_id", "timestamp", "type", "status", "duration_ms", "name", "message"))
    print(
        f"{len(rows)} record(s) in {page['window']['start']} → {page['window']['end']}"
        + (f"; next page: --cursor {page['next_cursor']}" if page["next_cursor"] else "")
    )
    return 0


def handoff(args: argparse.Namespace) -> int:
    """`loopkit handoff PACKET_ID`: GET /v1/packets/{id}/handoff, as it comes."""
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


def verify(args: argparse.Namespace) -> int:
    """`loopkit verify PACKET_ID`: POST /v1/runs/verify; a verdict per issue."""
    body: dict[str, Any] = {"packet_id": args.packet_id}
    if args.since_minutes is not None:
        body["since_minutes"] = args.since_minutes
    if args.release is not None:
        body["release"] = args.release
    verification = call("POST", "/v1/runs/verify", url=args.url, key=args.key, body=body)["verification"]
    if args.json:
        print_json(verification)
        return 0
    after = verification["window_after"]
    print(
        f"{verification['verification_id']}  packet {verification['packet_id']}  "
        f"after {after['start']} → {after['end']}"
    )
    if not verification["verdicts"]:
        print("the packet has no issues: nothing to verify")
        return 0
    table([{**v, "title": v["title"][:60]} for v in verification["verdicts"]], ("issue_id", "verdict", "title"))
    for v in verification["verdicts"]:
        print(f"- {v['issue_id']}: {v['reason']}")
    if verification.get("new_releases"):
        print(f"new releases since the packet: {', '.join(verification['new_releases'])}")
    for v in (verification.get("release_aware") or {}).get("verdicts", []):
        print(f"- counting only {verification['release_aware']['release']} and later: {v['issue_id']} {v['verdict']}")
    return 0


def rules(args: argparse.Namespace) -> int:
    """`loopkit rules`: GET /v1/grouping/rules; the fingerprint rules in force."""
    answer = call("GET", "/v1/grouping/rules", url=args.url, key=args.key)
    return _print_rules(answer, args.json)


def set_rules(args: argparse.Namespace) -> int:
    """`loopkit rules set FILE`: PUT /v1/grouping/rules with the rules of a JSON file (- for stdin; dashboard key)."""
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        document = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ClientError(f"cannot read rules from {args.file}: {exc}") from None
    # The file holds the body ({"rules": [...]}) or just the list of rules.
    body: dict[str, Any] = document if isinstance(document, dict) else {"rules": document}
    if args.version is not None:
        body["version"] = args.version
    answer = call("PUT", "/v1/grouping/rules", url=args.url, key=args.key, body=body)
    return _print_rules(answer, args.json)


def _print_rules(answer: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(answer)
        return 0
    when = f", saved {answer['updated_at']} by {answer['updated_by']}" if answer["version"] else ""
    print(f"version {answer['version']}: {len(answer['rules'])} rule(s){when}")
    rows = [
        {
            "rule": i,
            "match": json.dumps(rule["match"], ensure_ascii=False)[:60],
            "fingerprint": rule["fingerprint"][:50],
            "title": (rule.get("title") or "")[:40],
        }
        for i, rule in enumerate(answer["rules"])
    ]
    if rows:
        table(rows, ("rule", "match", "fingerprint", "title"))
    return 0
