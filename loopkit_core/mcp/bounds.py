"""Bounds on what one MCP answer carries: an agent's context is small, so every answer is cut, with a marker
that says how to get the rest (docs/mcp.md, docs/reliability.md)."""

from __future__ import annotations

from typing import Any

import orjson

MAX_ANSWER_CHARS = 100_000  # the JSON of one tool answer's structured content
DEFAULT_RECORDS = 20  # records in one loopkit_telemetry page unless `limit` says otherwise (REST: 100)
DEFAULT_ISSUES = 10  # issues of a packet shown unless `issue_limit` says otherwise
MAX_ISSUES_SHOWN = 100
DEFAULT_HANDOFF_CHARS = 20_000
MAX_HANDOFF_CHARS = MAX_ANSWER_CHARS


def size(value: Any) -> int:
    """Characters of a value's JSON (bytes, which is never fewer)."""
    return len(orjson.dumps(value))


def records_that_fit(records: list[dict[str, Any]], budget: int = MAX_ANSWER_CHARS) -> int:
    """How many of the first records fit in `budget` characters of JSON (at least one, so a page moves on)."""
    used = 0
    for count, record in enumerate(records):
        used += size(record) + 1
        if used > budget:
            return max(count, 1)
    return len(records)


def packet_page(packet: dict[str, Any], offset: int, limit: int) -> dict[str, Any]:
    """The packet with its issues [offset, offset + limit), shrunk to MAX_ANSWER_CHARS, and a marker when cut."""
    issues = list(packet.get("issues") or [])
    shown = issues[offset : offset + limit]
    page = dict(packet, issues=shown)
    while len(shown) > 1 and size(page) > MAX_ANSWER_CHARS:
        shown = shown[: len(shown) // 2]
        page = dict(packet, issues=shown)
    if offset or offset + len(shown) < len(issues):
        rest = (
            f"call loopkit_packet with packet_id={packet.get('packet_id')!r} and issue_offset={offset + len(shown)}"
            if offset + len(shown) < len(issues)
            else "this is the last page of issues"
        )
        page["issues_cut"] = {
            "issues_total": len(issues),
            "issue_offset": offset,
            "issues_returned": len(shown),
            "rest": rest,
        }
    return page


def text_page(text: str, offset: int, max_chars: int) -> tuple[str, int | None]:
    """Characters [offset, offset + max_chars) of a text, and the offset of the rest (None when there is none)."""
    piece = text[offset : offset + max_chars]
    end = offset + len(piece)
    return piece, (end if end < len(text) else None)
