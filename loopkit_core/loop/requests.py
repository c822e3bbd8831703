"""The loop's typed requests, and their validation in one place: every front-end's input arrives here as text or JSON.

Query-string values are ASCII only: `limit=٥`, `until=١٢٣`, `limit=²` and `since_minutes=1_0` are refused,
as Python's int() and float() would accept (or crash on) them.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loopkit_core.diagnose import MAX_ISSUES, DiagnoseRequest
from loopkit_core.fingerprint_rules import FingerprintRule, RuleError, parse_rules
from loopkit_core.loop.errors import LoopError
from loopkit_core.model import MAX_NS, parse_rfc3339
from loopkit_core.releases import MAX_RELEASE
from loopkit_core.store.eval_runs import EvalRun
from loopkit_core.verify import VerifyRequest

MAX_SINCE_MINUTES = 10 * 366 * 24 * 60
MAX_PAGE = 1000  # records in one telemetry page
MAX_PACKETS = 100  # packets in one list
MAX_NOTE = 4000  # characters in a decision note
MAX_FILTER_VALUES = 50
MAX_FILTER_LENGTH = 1024
MAX_ISSUE_KEYS = 50
MAX_URL = 2048  # characters in a stage's url
MAX_LOOPS = 100  # loops in one GET /v1/loops
STAGE_FIELDS = {"stage", "url", "note", "issue_id"}
MERGE_FIELDS = {"into", "note"}
UNMERGE_FIELDS = {"note"}
# Query parameter -> record column. `issue` (an issue_id or fingerprint) is resolved to its selector.
FILTERS = {
    "type": "type",
    "name": "name",
    "service": "service",
    "record_id": "record_id",
    "trace_id": "trace_id",
    "session_id": "session_id",
}
LOWERCASE = {"trace_id"}  # case-insensitive hex IDs are stored lowercase
TELEMETRY_PARAMS = {"since_minutes", "until", "limit", "cursor", "issue", *FILTERS}
DIAGNOSE_FIELDS = {"since_minutes", "until", "diagnosers", "min_count", "max_issues"}
VERIFY_FIELDS = {"packet_id", "since_minutes", "release"}
GROUPING_RULES_FIELDS = {"rules", "version"}
EVAL_RUN_FIELDS = {
    *("packet_id", "eval_candidate", "issue_id"),
    *("passed", "failed", "skipped", "commit", "version", "note"),
}
MAX_EXAMPLES_RUN = 10**9  # passed, failed or skipped in one eval run
MAX_COMMIT = 100  # characters of a commit SHA or ref
# Every ID LoopKit mints (rec_, pkt_, iss_, hex fingerprints) fits this; anything else cannot exist, so it is a 404
# before it reaches the database (PostgreSQL, for one, refuses NUL bytes in text with an error, not a miss).
_LOOKUP_KEY = re.compile(r"[A-Za-z0-9_.:-]+")
UNTIL_REASON = "until must be RFC 3339 (e.g. 2026-01-02T03:04:05Z) or unix nanoseconds"


@dataclass(frozen=True)
class TelemetryRequest:
    """A bounded read of records: a window (or a cursor that carries one), filters, issues, a page size."""

    since_minutes: float = 60.0
    until_ns: int | None = None
    limit: int = 100
    cursor: str | None = None
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (record column, accepted values)
    issues: tuple[str, ...] = ()  # issue_ids or fingerprints


def is_lookup_key(text: str, max_length: int = 40) -> bool:
    """Whether `text` could be a stored ID or fingerprint (worth a database lookup at all)."""
    return 0 < len(text) <= max_length and _LOOKUP_KEY.fullmatch(text) is not None


def ascii_int(value: str, name: str) -> int:
    """An integer written in ASCII digits (an optional sign); LoopError 400 otherwise."""
    text = value.strip() if value.isascii() else ""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit():
        raise LoopError(400, f"{name} must be an integer")
    return int(text)


def ascii_number(value: str, name: str) -> float:
    """A finite decimal number written in ASCII (no `_` separators); LoopError 400 otherwise."""
    if not value.isascii() or "_" in value:
        raise LoopError(400, f"{name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise LoopError(400, f"{name} must be a number") from None
    if not math.isfinite(number):
        raise LoopError(400, f"{name} must be a finite number")
    return number


def parse_instant(value: str) -> int:
    """RFC 3339 or unix nanoseconds (1970-2262) as unix ns; LoopError 400 otherwise."""
    if value.isascii() and value.isdigit() and len(value) <= 19:
        ns = int(value)
    else:
        try:
            ns = parse_rfc3339(value)
        except (ValueError, OverflowError):
            raise LoopError(400, UNTIL_REASON) from None
    if not 0 < ns <= MAX_NS:
        # The store keeps 64-bit unix nanoseconds: 1970 to 2262.
        raise LoopError(400, UNTIL_REASON + ", between 1970 and 2262")
    return ns


def refuse_unknown(params: Mapping[str, Sequence[str]], allowed: set[str]) -> None:
    """LoopError 400 naming the query parameters that are not in `allowed` (and listing those that are)."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise LoopError(400, f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def first(params: Mapping[str, Sequence[str]], name: str, default: str | None) -> str | None:
    """A query parameter's first value (an empty value is a value, to be refused by its parser), else `default`."""
    values = params.get(name) or ()
    return values[0] if values else default


def telemetry_request(params: Mapping[str, Sequence[str]]) -> TelemetryRequest:
    """A TelemetryRequest from query parameters (each name with its values); LoopError 400 with the reason."""
    refuse_unknown(params, TELEMETRY_PARAMS)

    def one(name: str, default: str | None) -> str | None:
        return first(params, name, default)

    limit = ascii_int(one("limit", "100") or "", "limit")
    if not 1 <= limit <= MAX_PAGE:
        raise LoopError(400, f"limit must be between 1 and {MAX_PAGE}")
    filters = []
    for param, column in FILTERS.items():
        values = list(params.get(param) or ())
        if values:
            if any(len(v) > MAX_FILTER_LENGTH for v in values) or len(values) > MAX_FILTER_VALUES:
                raise LoopError(
                    400, f"{param}: at most {MAX_FILTER_VALUES} values of at most {MAX_FILTER_LENGTH} characters"
                )
            if any("\x00" in v for v in values):
                raise LoopError(400, f"{param}: values must not contain NUL characters")
            filters.append((column, tuple(v.lower() for v in values) if param in LOWERCASE else tuple(values)))
    issues = tuple((params.get("issue") or ())[:MAX_ISSUE_KEYS])
    cursor = one("cursor", None)
    if cursor:
        return TelemetryRequest(limit=limit, cursor=cursor, filters=tuple(filters), issues=issues)
    since = ascii_number(one("since_minutes", "60") or "", "since_minutes")
    check_since(since)
    until = one("until", None)
    until_ns = parse_instant(until) if until else None
    return TelemetryRequest(since, until_ns, limit, None, tuple(filters), issues)


def check_since(since: float) -> None:
    """LoopError 400 unless 0 < since_minutes <= MAX_SINCE_MINUTES."""
    if not 0 < since <= MAX_SINCE_MINUTES:
        raise LoopError(400, f"since_minutes must be greater than 0 and at most {MAX_SINCE_MINUTES}")


def packet_limit(raw: str | None, default: int = 20, maximum: int = MAX_PACKETS) -> int:
    """The `limit` of a packet (or loop) list: ASCII digits, 1 to `maximum`; LoopError 400 otherwise."""
    text = str(default) if raw is None else raw
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= maximum:
        raise LoopError(400, f"limit must be an integer from 1 to {maximum}")
    return int(text)


def diagnose_request(body: Mapping[str, Any], known: set[str]) -> DiagnoseRequest:
    """A DiagnoseRequest from a JSON object (`known`: the loaded diagnosers); LoopError 400 naming the field."""
    unknown = sorted(set(body) - DIAGNOSE_FIELDS)
    if unknown:
        raise LoopError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(DIAGNOSE_FIELDS))}")
    since = body.get("since_minutes", 60)
    if isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since):
        raise LoopError(400, "since_minutes must be a number")
    check_since(since)
    until = body.get("until")
    until_ns = None
    if until is not None:
        if not isinstance(until, str | int) or isinstance(until, bool):
            raise LoopError(400, "until must be RFC 3339 or unix nanoseconds")
        until_ns = parse_instant(str(until))
    diagnosers = body.get("diagnosers")
    if diagnosers is not None:
        if not isinstance(diagnosers, list) or not all(isinstance(d, str) for d in diagnosers):
            raise LoopError(400, "diagnosers must be a list of diagnoser names")
        missing = sorted(set(diagnosers) - known)
        if missing:
            raise LoopError(400, f"unknown diagnoser(s) {', '.join(missing)}; loaded: {', '.join(sorted(known))}")
        diagnosers = tuple(diagnosers)
    min_count = _int_field(body.get("min_count", 3), "min_count", 1, 1_000_000_000)
    max_issues = _int_field(body.get("max_issues", 20), "max_issues", 1, MAX_ISSUES)
    return DiagnoseRequest(float(since), until_ns, diagnosers, min_count, max_issues)


def verify_request(body: Mapping[str, Any]) -> VerifyRequest:
    """A VerifyRequest from a JSON object; LoopError 400 (or 404 for an ID that cannot exist)."""
    unknown = sorted(set(body) - VERIFY_FIELDS)
    if unknown:
        raise LoopError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(VERIFY_FIELDS))}")
    packet_id = body.get("packet_id")
    if not isinstance(packet_id, str) or not packet_id or len(packet_id) > 40:
        raise LoopError(400, "packet_id is required: the packet_id of a stored packet")
    since = body.get("since_minutes")
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int | float) or not 0 < since <= MAX_SINCE_MINUTES
    ):
        raise LoopError(400, f"since_minutes must be a number greater than 0 and at most {MAX_SINCE_MINUTES}")
    release = body.get("release")
    if release is not None and (
        not isinstance(release, str)
        or not release.strip()
        or len(release) > MAX_RELEASE
        or any(ch < " " or ch == "\x7f" for ch in release)
    ):
        raise LoopError(
            400, f"release must be the service.version carrying the fix: 1 to {MAX_RELEASE} characters, no controls"
        )
    return VerifyRequest(packet_id, float(since) if since is not None else None, release)


@dataclass(frozen=True)
class GroupingRulesRequest:
    """A validated PUT /v1/grouping/rules: the new rules and, optionally, the version they replace."""

    rules: list[FingerprintRule]
    expected_version: int | None = None


def grouping_rules_request(body: Mapping[str, Any], if_match: str | None = None) -> GroupingRulesRequest:
    """The rules of a PUT body `{"rules": [...], "version"?: N}` (or an If-Match header with N); LoopError 400
    with `rule` (the index, or null for the set) and `reason` when a rule is refused."""
    unknown = sorted(set(body) - GROUPING_RULES_FIELDS)
    if unknown:
        raise LoopError(
            400,
            f"unknown field(s) {', '.join(u[:60] for u in unknown)}; allowed: rules, version",
            "invalid_rules",
            details={"rule": None, "reason": "unknown_field"},
        )
    if "rules" not in body:
        raise LoopError(
            400,
            'rules is required: {"rules": [...]}',
            "invalid_rules",
            details={"rule": None, "reason": "missing_field"},
        )
    try:
        rules = parse_rules(body["rules"])
    except RuleError as exc:
        raise LoopError(400, str(exc), "invalid_rules", details={"rule": exc.index, "reason": exc.reason}) from None
    version = body.get("version")
    if version is not None:
        version = _int_field(version, "version", 0, 2**62)
    if if_match is not None and if_match.strip() != "*":  # `*`: any version in force (no precondition)
        tag = if_match.strip().removeprefix("W/").strip('"')
        if not tag.isascii() or not tag.isdigit() or len(tag) > 18:
            raise LoopError(400, 'If-Match must be the version in force, e.g. If-Match: "3"')
        if version is not None and int(tag) != version:
            raise LoopError(400, "If-Match and version name different versions; send one")
        version = int(tag)
    return GroupingRulesRequest(rules, version)


def eval_run_request(body: Mapping[str, Any]) -> EvalRun:
    """An EvalRun from a POST /v1/evals body; LoopError 400 (or 404 for an ID that cannot exist)."""
    unknown = sorted(set(body) - EVAL_RUN_FIELDS)
    if unknown:
        raise LoopError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(EVAL_RUN_FIELDS))}")
    packet_id, candidate, issue_id = body.get("packet_id"), body.get("eval_candidate"), body.get("issue_id")
    if not isinstance(packet_id, str) or not packet_id or len(packet_id) > 40:
        raise LoopError(400, "packet_id is required: the packet_id of a stored packet")
    if not isinstance(candidate, str) or not candidate or len(candidate) > 200:
        raise LoopError(400, "eval_candidate is required: the eval_candidate of one of the packet's issues")
    if issue_id is not None and (not isinstance(issue_id, str) or not issue_id or len(issue_id) > 40):
        raise LoopError(400, "issue_id must be the issue_id of one of the packet's issues")
    if not is_lookup_key(packet_id):
        raise LoopError(404, f"no packet {packet_id[:40]!r} in this project")
    if issue_id is not None and not is_lookup_key(issue_id):
        raise LoopError(404, f"no issue {issue_id[:40]!r} with eval {candidate[:80]!r} in packet {packet_id!r}")
    passed = _int_field(body.get("passed"), "passed", 0, MAX_EXAMPLES_RUN)
    failed = _int_field(body.get("failed"), "failed", 0, MAX_EXAMPLES_RUN)
    skipped = _int_field(body.get("skipped", 0), "skipped", 0, MAX_EXAMPLES_RUN)
    if passed + failed + skipped == 0:
        raise LoopError(400, "an eval run counts at least one example: passed, failed or skipped")
    commit, version = body.get("commit"), body.get("version")
    if commit is not None and (
        not isinstance(commit, str)
        or not 0 < len(commit) <= MAX_COMMIT
        or any(ch <= " " or ch == "\x7f" for ch in commit)
    ):
        raise LoopError(400, f"commit must be a commit SHA or ref: 1 to {MAX_COMMIT} characters, no spaces")
    if version is not None and (
        not isinstance(version, str)
        or not version.strip()
        or len(version) > MAX_RELEASE
        or any(ch < " " or ch == "\x7f" for ch in version)
    ):
        raise LoopError(400, f"version must be a release (service.version): 1 to {MAX_RELEASE} characters, no controls")
    if commit is None and version is None:
        raise LoopError(400, "commit or version is required: the code the eval ran on")
    note = stage_note(body.get("note"))
    return EvalRun(packet_id, candidate, issue_id, passed, failed, skipped, commit, version, note)


def decision_note(note: object) -> str:
    """A decision's note, stripped; LoopError 400 when missing or too long."""
    if not isinstance(note, str) or not note.strip():
        raise LoopError(400, "note is required: say why, in a few words")
    if len(note) > MAX_NOTE:
        raise LoopError(400, f"note must be at most {MAX_NOTE} characters")
    return note.strip()


def _int_field(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LoopError(400, f"{name} must be an integer from {low} to {high}")
    return value


def stage_url(url: object) -> str | None:
    """A stage's url: absent, or an absolute http(s) URL of at most MAX_URL characters; LoopError 400 otherwise.

    LoopKit never opens it: it is stored and shown as a link, so only schemes a browser navigates safely pass
    (no javascript:, data:, file:, ftp:).
    """
    if url is None:
        return None
    if not isinstance(url, str) or not url:
        raise LoopError(400, "url must be an http(s) URL")
    if len(url) > MAX_URL:
        raise LoopError(400, f"url must be at most {MAX_URL} characters")
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise LoopError(400, "url must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number from 0 to 65535)
    except ValueError:
        raise LoopError(400, "url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise LoopError(400, "url must be an absolute http:// or https:// URL (it is stored, never opened)")
    return url


def stage_note(note: object) -> str | None:
    """A stage's optional note, stripped (empty: None); LoopError 400 when not text or too long."""
    if note is None:
        return None
    if not isinstance(note, str):
        raise LoopError(400, "note must be a string")
    if len(note) > MAX_NOTE:
        raise LoopError(400, f"note must be at most {MAX_NOTE} characters")
    return note.strip() or None


def loops_limit(raw: str | None, default: int = 20) -> int:
    """The `limit` of GET /v1/loops: ASCII digits, 1 to MAX_LOOPS; LoopError 400 otherwise."""
    return packet_limit(raw, default, MAX_LOOPS)


@dataclass(frozen=True)
class MergeRequest:
    """A validated POST /v1/issues/{fingerprint}/merge (into set) or .../unmerge (into None) body."""

    into: str | None
    note: str | None


def merge_request(body: Mapping[str, Any]) -> MergeRequest:
    """A merge body: `into` (the fingerprint or issue_id to merge into) and an optional note; LoopError 400."""
    _refuse_fields(body, MERGE_FIELDS)
    into = body.get("into")
    if not isinstance(into, str) or not into:
        raise LoopError(400, "into is required: the fingerprint (or issue_id) of the issue to merge into")
    return MergeRequest(into, stage_note(body.get("note")))


def unmerge_request(body: Mapping[str, Any]) -> MergeRequest:
    """An unmerge body: an optional note; LoopError 400 for anything else."""
    _refuse_fields(body, UNMERGE_FIELDS)
    return MergeRequest(None, stage_note(body.get("note")))


def _refuse_fields(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise LoopError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
