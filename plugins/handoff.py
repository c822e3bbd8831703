"""Built-in handoff renderers: `json` (the versioned packet), `markdown` (an issue body) and `prompt`.

Each renders a stored packet as it stands (approval state included) with the evidence records'
short excerpts from `context["records"]`. Rendering is pure: nothing is posted anywhere.
"""

from __future__ import annotations

from typing import Any

import orjson

from loopkit_core.evidence import excerpt
from loopkit_core.hookspecs import hookimpl
from loopkit_core.model import Renderer

HANDOFF_VERSION = "1"
BOUNDARY = (
    "Do not post issues, open or merge pull requests, deploy or ship anything without the recorded human "
    "approval of this packet. LoopKit never does any of these itself."
)


@hookimpl(trylast=True)
def register_handoff_renderers() -> list[Renderer]:
    """The three built-in formats."""
    return [
        Renderer("json", "application/json", "the versioned packet as JSON (schema: /schema/packet.json)", render_json),
        Renderer("markdown", "text/markdown; charset=utf-8", "an issue body a person can paste", render_markdown),
        Renderer(
            "prompt", "text/plain; charset=utf-8", "a prompt for a coding agent, with its boundary", render_prompt
        ),
    ]


def render_json(packet: dict[str, Any], context: dict[str, Any]) -> str:
    """The packet with the handoff version, the boundary and the evidence records' excerpts."""
    records = context.get("records", {})
    document = {
        **packet,
        "handoff_version": HANDOFF_VERSION,
        "schema": context.get("base_url", "") + "/schema/packet.json",
        "boundary": BOUNDARY,
        # In evidence order (stable output), one line per record of the packet's evidence.
        "evidence_excerpts": {
            rid: _record_line(records[rid])
            for rid in dict.fromkeys(rid for issue in packet["issues"] for rid in issue["evidence"])
            if rid in records
        },
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def render_markdown(packet: dict[str, Any], context: dict[str, Any]) -> str:
    """A Markdown issue body: summary, counts, evidence table, eval, patch plan and approval state."""
    records = context.get("records", {})
    approval = packet.get("approval") or {"state": "pending"}
    lines = [
        f"# LoopKit diagnosis {packet['packet_id']}",
        "",
        f"**Project** {packet['project_id']} · **window** {packet['window']['start']} → {packet['window']['end']} · "
        f"**records read** {packet['telemetry_read']} · **failures** {packet['failures']} · "
        f"**status** {packet['status']}",
        "",
        f"**Approval:** {_approval_line(approval)}",
        "",
        f"> {BOUNDARY}",
        "",
    ]
    if not packet["issues"]:
        lines += ["No issue crossed the bar in this window (status `observe_more`).", ""]
    else:
        lines += [f"**Summary:** {len(packet['issues'])} issue(s) in this window:", ""]
        for n, issue in enumerate(packet["issues"], 1):
            lines.append(
                f"{n}. {_md(issue['title'])}: {issue['count']} {issue['signal_type']} record(s), "
                f"severity {issue['severity']}, {issue.get('status', 'new')}"
            )
        lines.append("")
    for n, issue in enumerate(packet["issues"], 1):
        lines += [
            f"## {n}. {_md(issue['title'])}",
            "",
            "| count | severity | signal | status | first seen | last seen | fingerprint |",
            "|---|---|---|---|---|---|---|",
            f"| {issue['count']} | {issue['severity']} | {issue['signal_type']} | {issue.get('status', 'new')} | "
            f"{issue['first_seen']} | {issue['last_seen']} | `{issue['fingerprint']}` |",
            "",
            f"### Evidence ({len(issue['evidence'])} of {issue['count']} records)",
            "",
            "| record | time | service | operation | excerpt |",
            "|---|---|---|---|---|",
        ]
        for record_id in issue["evidence"]:
            record = records.get(record_id, {})
            lines.append(
                f"| `{record_id}` | {record.get('timestamp', '')} | {_cell(record.get('service'))} | "
                f"{_cell(record.get('name'))} | {_cell(_summary(record))} |"
            )
        lines += [
            "",
            f"All records: `GET {issue['records_url']}`",
            "",
            f"### Eval candidate `{issue['eval_candidate']}`",
            "",
        ]
        lines += [
            "```json",
            orjson.dumps(issue["eval"], option=orjson.OPT_INDENT_2).decode(),
            "```",
            "",
            "### Patch plan",
            "",
        ]
        for step in issue["patch_plan"]:
            lines.append(f"{step.get('step', '-')}. **{step.get('kind', 'step')}**: {_md(step.get('text', ''))}")
        lines += ["", f"**Next action:** {_md(issue['next_action'])}", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_prompt(packet: dict[str, Any], context: dict[str, Any]) -> str:
    """A coding-agent prompt: the task, the evidence, the eval to make pass, and the boundary."""
    records = context.get("records", {})
    approval = packet.get("approval") or {"state": "pending"}
    approved = approval.get("state") == "approved"
    lines = [
        "You are a coding agent working on the service described by this LoopKit diagnosis packet "
        f"({packet['packet_id']}, project {packet['project_id']}).",
        "",
        "BOUNDARY: " + BOUNDARY,
        f"APPROVAL: {_approval_line(approval)}."
        + (
            ""
            if approved
            else " Until it is approved, only investigate and prepare a patch locally; change nothing shared."
        ),
        "",
        f"WINDOW: {packet['window']['start']} to {packet['window']['end']} ({packet['telemetry_read']} records read).",
        "",
    ]
    if not packet["issues"]:
        lines.append("TASK: nothing to fix; no recurring problem crossed the bar in this window.")
    for n, issue in enumerate(packet["issues"], 1):
        lines += [
            f"TASK {n}: {issue['title']}",
            f"- {issue['count']} {issue['signal_type']} record(s), severity {issue['severity']}, "
            f"first seen {issue['first_seen']}, last seen {issue['last_seen']} (fingerprint {issue['fingerprint']}).",
            "- Evidence (record IDs; read one with GET /v1/records/{id}):",
        ]
        for record_id in issue["evidence"]:
            lines.append(f"  - {record_id}: {_record_line(records.get(record_id, {}))}")
        lines.append(f"- Eval to make pass ({issue['eval_candidate']}): " + orjson.dumps(issue["eval"]).decode())
        lines.append("- Plan:")
        for step in issue["patch_plan"]:
            lines.append(f"  {step.get('step', '-')}. [{step.get('kind', 'step')}] {step.get('text', '')}")
        lines += [
            f"- Done when: the eval passes locally; after the approved fix ships, POST /v1/runs/verify "
            f'{{"packet_id": "{packet["packet_id"]}"}} says held.',
            "",
        ]
    lines.append("Report what you changed and why, then stop. " + BOUNDARY)
    return "\n".join(lines).rstrip() + "\n"


def _approval_line(approval: dict[str, Any]) -> str:
    if approval.get("state") in ("approved", "rejected"):
        note = f' — "{approval["note"]}"' if approval.get("note") else ""
        return f"{approval['state']} by {approval.get('decided_by')} at {approval.get('decided_at')}{note}"
    return "pending: no human has approved this packet yet"


def _summary(record: dict[str, Any]) -> str:
    return excerpt(record.get("message") or record.get("exception_type") or f"{record.get('duration_ms', '')} ms", 120)


def _record_line(record: dict[str, Any]) -> str:
    if not record:
        return "(record not in the window any more)"
    return (
        f"{record.get('timestamp')} {record.get('service')} {record.get('name')} [{record.get('status')}] "
        + _summary(record)
    )


def _md(text: Any) -> str:
    # Outside `code spans`, "<" would open an HTML tag (a masked template's <NUM> would vanish when pasted).
    parts = str(text or "").split("`")
    return "`".join(p if i % 2 else p.replace("<", "\\<") for i, p in enumerate(parts))


def _cell(text: Any) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")
