"""The loop service: one method per operation of the loop, for every front-end (HTTP API, dashboard, CLI, MCP).

Each method takes the authenticated principal and typed arguments, checks the scope, bounds and validates,
and returns plain results; refusals are LoopError. Methods block (they read and write the database): async
front-ends call them through a thread (`starlette.concurrency.run_in_threadpool`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from loopkit_core import charts, diagnose, evals, merges, sessions, verify
from loopkit_core.identity import AuthError, Principal
from loopkit_core.ingest import prepare, sign
from loopkit_core.loop import journeys
from loopkit_core.loop.errors import LoopError
from loopkit_core.loop.funnel import funnel
from loopkit_core.loop.requests import (
    MAX_LOOPS,
    MAX_SINCE_MINUTES,
    GroupingRulesRequest,
    MergeRequest,
    TelemetryRequest,
    decision_note,
    is_lookup_key,
    stage_note,
    stage_url,
)
from loopkit_core.loop.timeline import timeline
from loopkit_core.model import Record, parse_rfc3339, rfc3339
from loopkit_core.plugins import Plugins, describe_loaded
from loopkit_core.projects import authenticate, get_project, require
from loopkit_core.ratelimit import RateLimiter
from loopkit_core.scopes import (
    APPROVALS_WRITE,
    DASHBOARD_READ,
    REPORTS_READ,
    RUNS_WRITE,
    TELEMETRY_READ,
    TELEMETRY_WRITE,
)
from loopkit_core.settings import Settings
from loopkit_core.sink import Ack, Sink
from loopkit_core.store import accepted, approvals, cursors, eval_runs, grouping_rules, issue_merges, stages
from loopkit_core.store import memory as memory_store
from loopkit_core.store import packets as packet_store
from loopkit_core.store import records as record_store
from loopkit_core.store.engines import Store

EVIDENCE_PER_ISSUE = 20  # evidence records fetched per issue for a handoff or a page
MAX_EVIDENCE_RECORDS = 500
MAX_ID = 40
DECISIONS = ("approved", "rejected")


@dataclass(frozen=True)
class Handoff:
    """A packet rendered by a renderer plugin."""

    text: str
    media_type: str
    format: str


@dataclass(frozen=True)
class PacketView:
    """Everything a page about one packet shows: the packet, its evidence records, charts, the Markdown handoff."""

    packet: dict[str, Any]
    records: dict[str, dict[str, Any]]
    series: dict[str, charts.Series | None]
    handoff: str | None
    handoff_error: str | None
    stages: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Loop:
    """The loop's operations over one store and one set of plugins."""

    def __init__(
        self, settings: Settings, store: Store, plugins: Plugins, sink: Sink, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.plugins = plugins
        self.renderers = plugins.renderers()
        self.sink = sink
        self.clock = clock
        self._diagnose_limiter = RateLimiter(settings.diagnose_per_minute, 60.0)

    # --- who is calling ------------------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, scope: str) -> Principal:
        """The caller behind an `authorization` header value if its key holds `scope`; LoopError 401/403."""
        try:
            return require(self.store.control, authorization, scope, self.clock())
        except AuthError as exc:
            raise LoopError(exc.status, exc.message, exc.code) from None

    def sign_in(self, key: str) -> Principal | None:
        """The principal of a bare key (the dashboard's sign-in form), or None when unknown or revoked."""
        return authenticate(self.store.control, key)

    def session(self, token: str) -> tuple[Principal, str] | None:
        """The principal and key hash behind a dashboard session token, or None when it no longer holds."""
        return sessions.resolve(self.store.control, token, self.clock())

    # --- capture -------------------------------------------------------------------------------------------------

    def ingest(self, principal: Principal, records: list[Record]) -> Future[Ack]:
        """Sign and commit decoded records for the principal's project; the future resolves once durable."""
        _need(principal, TELEMETRY_WRITE)
        return self.sink.consume(principal, prepare(records, self.plugins))

    def sign(self, records: list[Record]) -> list[dict[str, Any]]:
        """Set each failure's grouping signature (record_signature hook); the distinct ones described."""
        return sign(records, self.plugins)

    # --- reads ---------------------------------------------------------------------------------------------------

    def telemetry(self, principal: Principal, request: TelemetryRequest, spliced: bool = False) -> dict[str, Any]:
        """A page of the project's records in a bounded window, newest first, with the cursor of the next page.

        `spliced`: the records' stored JSON columns as orjson.Fragment, for a front-end that answers with orjson.
        """
        _need(principal, TELEMETRY_READ)
        engine = self.store.project(principal.project_id)
        cursor_key = self.store.cursor_key(principal.project_id)
        if request.cursor:
            try:
                start_ns, end_ns, after = cursors.decode_cursor(request.cursor, cursor_key)
            except ValueError:
                raise LoopError(400, "cursor is not valid: pass next_cursor from the previous page unchanged") from None
            query = record_store.WindowQuery(start_ns, end_ns, request.limit, request.filters, after)
        else:
            end_ns = request.until_ns or time.time_ns()
            start_ns = max(end_ns - int(min(request.since_minutes, MAX_SINCE_MINUTES) * 60e9), 0)
            query = record_store.WindowQuery(start_ns, end_ns, request.limit, request.filters)
        if request.issues:
            query = replace(query, selectors=tuple(self._issue_selector(engine, key) for key in request.issues))
        rows, after = record_store.read_window(engine, query, spliced)
        return {
            "records": rows,
            "next_cursor": cursors.encode_cursor(query, after, cursor_key) if after else None,
            "window": {"start": rfc3339(query.start_ns), "end": rfc3339(query.end_ns)},
        }

    def record(self, principal: Principal, record_id: str) -> dict[str, Any]:
        """One record of the project with its full provenance (agents, and people on the dashboard); 404 if none."""
        _need(principal, TELEMETRY_READ, DASHBOARD_READ)
        engine = self.store.project(principal.project_id)
        record = record_store.get_record(engine, record_id) if is_lookup_key(record_id) else None
        if record is None:
            raise LoopError(404, f"no record {record_id[:MAX_ID]!r} in this project")
        return record

    def sessions(self, principal: Principal, request: journeys.SessionsRequest) -> dict[str, Any]:
        """The window's most recently active sessions with their scorecards, sorted (bounded; see loop/journeys)."""
        _need(principal, TELEMETRY_READ, DASHBOARD_READ)
        return journeys.list_sessions(self.store.project(principal.project_id), request)

    def user_session(self, principal: Principal, session_id: str, limit: int = 200) -> dict[str, Any]:
        """One session: its scorecard and its records in time order (at most `limit`); 404 when it has none."""
        _need(principal, TELEMETRY_READ, DASHBOARD_READ)
        return journeys.session_detail(self.store.project(principal.project_id), session_id, limit)

    def trace(self, principal: Principal, trace_id: str, limit: int = journeys.MAX_TRACE_SPANS) -> dict[str, Any]:
        """One trace as a bounded span tree with its critical path; 404 when the project has no such trace."""
        _need(principal, TELEMETRY_READ, DASHBOARD_READ)
        return journeys.trace_detail(self.store.project(principal.project_id), trace_id, limit)

    def issue_index(self, principal: Principal, limit: int = 100) -> dict[str, Any]:
        """The project's issues across packets (one row per fingerprint), most recently seen first; bounded."""
        _need(principal, REPORTS_READ, DASHBOARD_READ)
        return journeys.issues_across_packets(self.store.project(principal.project_id), limit)

    def _issue_selector(self, engine: Any, key: str) -> dict[str, Any]:
        # An issue's own records and those of every issue merged into it.
        selector = merges.issue_selector(engine, key) if is_lookup_key(key, 80) else None
        if selector is None:
            hint = "use an issue_id or fingerprint from a packet"
            raise LoopError(404, f"no issue {key[:80]!r} in this project ({hint})")
        return selector

    def issue(self, principal: Principal, key: str) -> dict[str, Any]:
        """One tracked issue (fingerprint or issue_id) with its merge state and merge audit trail; 404 if none."""
        _need(principal, REPORTS_READ, DASHBOARD_READ)
        found = merges.describe(self.store.project(principal.project_id), key) if is_lookup_key(key) else None
        if found is None:
            raise LoopError(404, f"no issue {key[:MAX_ID]!r} in this project")
        return found

    def merge_issue(self, principal: Principal, key: str, request: MergeRequest) -> dict[str, Any]:
        """A person folds one issue into another (sticky, audited); the answer is the merged issue's state."""
        _need(principal, APPROVALS_WRITE)
        assert request.into is not None
        if not is_lookup_key(key):
            raise LoopError(404, f"no issue {key[:MAX_ID]!r} in this project")
        if not is_lookup_key(request.into):
            raise LoopError(404, f"no issue {request.into[:MAX_ID]!r} in this project to merge into")
        engine = self.store.project(principal.project_id)
        done = issue_merges.merge(engine, key, request.into, request.note, _actor(principal), self._now_ns())
        if isinstance(done, issue_merges.Refusal):
            _refused(done, key, request.into)
        return {"merge": done, "issue": merges.describe(engine, done["source"])}

    def unmerge_issue(self, principal: Principal, key: str, request: MergeRequest) -> dict[str, Any]:
        """A person sets a merged issue apart again (audited); from the next diagnosis it is its own issue."""
        _need(principal, APPROVALS_WRITE)
        if not is_lookup_key(key):
            raise LoopError(404, f"no issue {key[:MAX_ID]!r} in this project")
        engine = self.store.project(principal.project_id)
        done = issue_merges.unmerge(engine, key, request.note, _actor(principal), self._now_ns())
        if isinstance(done, issue_merges.Refusal):
            _refused(done, key, None)
        return {"merge": done, "issue": merges.describe(engine, done["source"])}

    # --- diagnose ------------------------------------------------------------------------------------------------

    def diagnosers(self) -> set[str]:
        """The names of the loaded diagnosers."""
        return {name for name, _ in self.plugins.implementations("diagnose")}

    def diagnose(self, principal: Principal, request: diagnose.DiagnoseRequest) -> dict[str, Any]:
        """Run the diagnosers over the window and store the packet: `{"memory": ..., "packet": ...}` (rate-limited).

        `memory` comes first: what the project already knows (issues verified, regressed, approved and in
        flight) and how many of this packet's issues were never seen before.
        """
        _need(principal, RUNS_WRITE)
        retry_after = self._diagnose_limiter.hit(principal.project_id)
        if retry_after is not None:
            message = f"at most {self.settings.diagnose_per_minute} diagnoses a minute per project; retry later"
            raise LoopError(429, message, retry_after=retry_after)
        packet = diagnose.run(
            self.store,
            self.plugins,
            principal.project_id,
            request,
            self._now_ns(),
            self.settings.negative_signals(),
        )
        recalled = memory_store.recall(self.store.project(principal.project_id), packet["packet_id"])
        return {"memory": recalled, "packet": packet}

    def memory(self, principal: Principal) -> dict[str, Any]:
        """What the project already knows: issues verified, regressed (with evidence), in flight; the newest's new."""
        _need(principal, REPORTS_READ, DASHBOARD_READ)
        return memory_store.recall(self.store.project(principal.project_id), None)

    # --- grouping rules ------------------------------------------------------------------------------------------

    def grouping_rules(self, principal: Principal) -> dict[str, Any]:
        """The project's fingerprint rules in force: version (0 when none), rules, updated_at, updated_by."""
        _need(principal, DASHBOARD_READ)
        return grouping_rules.current(self.store.project(principal.project_id))

    def set_grouping_rules(self, principal: Principal, request: GroupingRulesRequest) -> dict[str, Any]:
        """Save a new version of the project's fingerprint rules (a person's decision: the dashboard key); the next
        diagnosis applies it. LoopError 409 when `expected_version` is not the version in force."""
        _need(principal, APPROVALS_WRITE)
        engine = self.store.project(principal.project_id)
        actor = f"{principal.key_kind} key {principal.key_display}"
        saved = grouping_rules.save(engine, request.rules, actor, self._now_ns(), request.expected_version)
        if isinstance(saved, str):
            version = grouping_rules.current(engine)["version"]
            message = f"the rules in force are version {version}, not {request.expected_version}: read them and retry"
            if request.expected_version is None:
                message = "another change to the rules was saved at the same time: read them and retry"
            raise LoopError(409, message, "version_conflict", details={"version": version})
        return saved

    # --- packets -------------------------------------------------------------------------------------------------

    def packets(self, principal: Principal, limit: int = 20) -> list[dict[str, Any]]:
        """The newest packets (summaries), newest first."""
        _need(principal, REPORTS_READ, DASHBOARD_READ)
        return packet_store.list_packets(self.store.project(principal.project_id), limit)

    def packet(self, principal: Principal, packet_id: str) -> dict[str, Any]:
        """One packet of the project, whole; LoopError 404 when there is none."""
        _need(principal, REPORTS_READ, DASHBOARD_READ)
        return self._packet(principal, packet_id)

    def _packet(self, principal: Principal, packet_id: str) -> dict[str, Any]:
        engine = self.store.project(principal.project_id)
        packet = packet_store.get_packet(engine, packet_id) if is_lookup_key(packet_id) else None
        if packet is None:
            raise LoopError(404, f"no packet {packet_id[:MAX_ID]!r} in this project")
        return packet

    def handoff(self, principal: Principal, packet_id: str, format: str = "json") -> Handoff:
        """The packet rendered by a renderer plugin; LoopError 400 for an unknown format, 422 if the renderer fails."""
        _need(principal, REPORTS_READ)
        renderer = self.renderers.get(format)
        if renderer is None:
            available = ", ".join(sorted(self.renderers))
            raise LoopError(400, f"unknown format {format[:40]!r}; available: {available}")
        packet = self._packet(principal, packet_id)
        records = self._evidence(principal, packet)
        try:
            text = renderer.render(packet, self._render_context(records))
        except Exception as exc:  # a broken renderer plugin answers without a 500, with its name
            message = f"renderer {format!r} failed: {type(exc).__name__}: {exc}"[:500]
            raise LoopError(422, message, "renderer_failed") from None
        return Handoff(text, renderer.media_type, format)

    def evals(self, principal: Principal, packet_id: str, format: str = "json") -> Handoff:
        """The packet's eval specs as JSON, a JSONL dataset or a pytest module; LoopError 400 for another format."""
        _need(principal, REPORTS_READ)
        if format not in evals.FORMATS:
            raise LoopError(400, f"unknown format {format[:40]!r}; available: {', '.join(evals.FORMATS)}")
        packet = self._packet(principal, packet_id)
        records = evals.evidence_records(self.store.project(principal.project_id), packet)
        document = evals.spec(packet, records, self._now_ns())
        return Handoff(evals.render(document, format), evals.FORMATS[format], format)

    def decide(self, principal: Principal, packet_id: str, decision: str, note: object) -> dict[str, Any]:
        """Record a person's decision (approved or rejected) with a note; nothing external happens."""
        _need(principal, APPROVALS_WRITE)
        if decision not in DECISIONS:
            raise LoopError(400, f"decision must be one of {', '.join(DECISIONS)}")
        text = decision_note(note)
        engine = self.store.project(principal.project_id)
        actor = f"{principal.key_kind} key {principal.key_display}"
        decided = None
        if is_lookup_key(packet_id):
            decided = approvals.decide(engine, packet_id, decision, text, actor, self._now_ns())
        if decided is None:
            raise LoopError(404, f"no packet {packet_id[:MAX_ID]!r} in this project")
        packet = packet_store.get_packet(engine, packet_id)
        assert packet is not None
        return {"packet_id": packet_id, "status": decision, "approval": packet["approval"]}

    # --- loop bookkeeping ----------------------------------------------------------------------------------------

    def record_stage(
        self,
        principal: Principal,
        packet_id: str,
        stage: str,
        url: str | None,
        note: str | None,
        issue_id: str | None = None,
    ) -> dict[str, Any]:
        """Record a loop stage done outside LoopKit (after a person approved the packet); append-only."""
        _need(principal, RUNS_WRITE)
        if stage not in stages.STAGES:
            raise LoopError(400, f"stage must be one of {', '.join(stages.STAGES)}")
        url = stage_url(url)
        note = stage_note(note)
        if issue_id is not None and not isinstance(issue_id, str):
            raise LoopError(400, "issue_id must be the issue_id of one of the packet's issues")
        if not is_lookup_key(packet_id):
            raise LoopError(404, f"no packet {packet_id[:MAX_ID]!r} in this project")
        if issue_id is not None and not is_lookup_key(issue_id):
            raise LoopError(404, f"no issue {issue_id[:MAX_ID]!r} in packet {packet_id!r}")
        engine = self.store.project(principal.project_id)
        actor = f"{principal.key_kind} key {principal.key_display}"
        done = stages.record(engine, packet_id, stage, url, note, issue_id, actor, self._now_ns())
        if isinstance(done, stages.Refusal):
            if done.reason == "no_packet":
                raise LoopError(404, f"no packet {packet_id!r} in this project")
            if done.reason == "no_issue":
                raise LoopError(404, f"no issue {issue_id!r} in packet {packet_id!r}")
            if done.reason == "pending":
                message = "a person must approve this packet on the dashboard before a loop stage is recorded"
                raise LoopError(409, message, "approval_required")
            raise LoopError(409, "this packet was rejected: no loop stage can be recorded on it", "packet_rejected")
        return _public_stage(done)

    def record_eval(self, principal: Principal, run: eval_runs.EvalRun) -> dict[str, Any]:
        """Record an eval run an agent reported for one of a packet's issues; append-only, nothing else happens."""
        _need(principal, RUNS_WRITE)
        engine = self.store.project(principal.project_id)
        actor = f"{principal.key_kind} key {principal.key_display}"
        done = eval_runs.record(engine, run, actor, self._now_ns())
        if done == "no_packet":
            raise LoopError(404, f"no packet {run.packet_id!r} in this project")
        if isinstance(done, str):
            where = f"issue {run.issue_id!r}" if run.issue_id else "issue"
            raise LoopError(404, f"no {where} with eval {run.eval_candidate[:80]!r} in packet {run.packet_id!r}")
        return done

    def loops(self, principal: Principal, limit: int = 20) -> dict[str, Any]:
        """The recorded loops (packets with a decision or a stage), newest first, with stages and the funnel."""
        _need(principal, REPORTS_READ, DASHBOARD_READ)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LOOPS:
            raise LoopError(400, f"limit must be an integer from 1 to {MAX_LOOPS}")
        engine = self.store.project(principal.project_id)
        found = stages.loops(engine, limit)
        m = stages.milestones(engine)
        return {"loops": found, "funnel": funnel(m.diagnosed, m.approved, m.merged, m.held)}

    # --- verify --------------------------------------------------------------------------------------------------

    def verify(self, principal: Principal, request: verify.VerifyRequest) -> dict[str, Any]:
        """Verdicts for a packet's issues on the window after it; LoopError 404 when the packet does not exist."""
        _need(principal, RUNS_WRITE)
        if not is_lookup_key(request.packet_id):
            raise LoopError(404, f"no packet {request.packet_id!r} in this project")
        verification = verify.run(self.store, self.plugins, principal.project_id, request, self._now_ns())
        if verification is None:
            raise LoopError(404, f"no packet {request.packet_id!r} in this project")
        return verification

    # --- what people see -----------------------------------------------------------------------------------------

    def project(self, principal: Principal) -> dict[str, Any]:
        """The principal's project: name, kind, quota, expiry (RFC 3339) and the records accepted so far."""
        _need(principal, DASHBOARD_READ, REPORTS_READ)
        project = get_project(self.store.control, principal.project_id)
        if project is None:  # deleted between the key check and now
            raise LoopError(401, "this project no longer exists")
        engine = self.store.project(principal.project_id)
        return {
            "project_id": project["project_id"],
            "project_name": project.get("project_name") or project.get("name"),
            "kind": project.get("kind"),
            "quota_spans": project.get("quota_spans"),
            # RFC 3339, as signup answers it (the control store keeps unix seconds).
            "expires_at": rfc3339(project["expires_at"] * 10**9) if project.get("expires_at") else None,
            "records_accepted": accepted.accepted_count(engine),
        }

    def packet_view(self, principal: Principal, packet_id: str) -> PacketView:
        """A packet with its evidence records, its issues' occurrences up to now, and its Markdown handoff."""
        _need(principal, DASHBOARD_READ, REPORTS_READ)
        packet = self._packet(principal, packet_id)
        records = self._evidence(principal, packet)
        series = self._series(principal, packet)
        engine = self.store.project(principal.project_id)
        recorded = [_public_stage(s) for s in stages.for_packets(engine, [packet_id])[packet_id]]
        view = PacketView(packet, records, series, None, None, recorded, timeline(packet, recorded))
        renderer = self.renderers.get("markdown")
        if renderer is None:
            return replace(view, handoff_error="no markdown renderer is loaded on this server")
        try:
            text = renderer.render(packet, self._render_context(records))
        except Exception as exc:  # a broken renderer plugin must not take the page down
            return replace(view, handoff_error=f"the markdown renderer failed: {_error(exc)}"[:500])
        return replace(view, handoff=text)

    def plugins_loaded(self) -> dict[str, Any]:
        """The loaded plugins, diagnosers, verifiers and renderers, and what failed to load."""
        return describe_loaded(self.plugins)

    # --- helpers -------------------------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return int(self.clock() * 1e9)

    def _render_context(self, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"records": records, "base_url": self.settings.base_url()}

    def _evidence(self, principal: Principal, packet: dict[str, Any]) -> dict[str, dict[str, Any]]:
        issues = packet.get("issues") or []
        ids = [rid for issue in issues for rid in (issue.get("evidence") or [])[:EVIDENCE_PER_ISSUE]]
        return record_store.get_records(self.store.project(principal.project_id), ids[:MAX_EVIDENCE_RECORDS])

    def _series(self, principal: Principal, packet: dict[str, Any]) -> dict[str, charts.Series | None]:
        # Over the packet's window and on up to now, so the chart also shows what happened after the fix.
        window = packet.get("window_ns") or {}
        try:
            start = int(window.get("start") or parse_rfc3339(packet["window"]["start"]))
            end = int(window.get("end") or parse_rfc3339(packet["window"]["end"]))
        except (KeyError, TypeError, ValueError):
            return {}
        engine = self.store.project(principal.project_id)
        now_ns = self._now_ns()
        out: dict[str, charts.Series | None] = {}
        for issue in packet.get("issues") or []:
            try:
                out[issue["issue_id"]] = charts.occurrences(engine, issue.get("selector"), start, max(end, now_ns), end)
            except (KeyError, TypeError, ValueError, AttributeError):  # a plugin's issue without a usable selector
                out[issue.get("issue_id", "")] = None
        return out


def _need(principal: Principal, *scopes: str) -> None:
    # The front-end authenticated the key already; this keeps every operation safe on its own.
    if not any(scope in principal.scopes for scope in scopes):
        raise LoopError(403, f"the {principal.key_kind} key of this project does not have the {scopes[-1]} scope")


def _actor(principal: Principal) -> str:
    # Who did it, as the approvals trail names it: the key's kind and display prefix.
    return f"{principal.key_kind} key {principal.key_display}"


def _refused(refusal: issue_merges.Refusal, key: str, into: str | None) -> NoReturn:
    """Raise the LoopError of a refused merge or unmerge."""
    match refusal.reason:
        case "no_source":
            raise LoopError(404, f"no issue {key!r} in this project")
        case "no_target":
            raise LoopError(404, f"no issue {into!r} in this project to merge into")
        case "self":
            raise LoopError(400, "an issue cannot be merged into itself", "merge_into_itself")
        case "already_merged":
            message = f"issue {key!r} is already merged into {refusal.fingerprint!r}: unmerge it first"
            raise LoopError(409, message, "already_merged")
        case "cycle":
            message = f"issue {into!r} is merged into {key!r}: merging back would make a cycle (unmerge it first)"
            raise LoopError(409, message, "merge_cycle")
    raise LoopError(409, f"issue {key!r} is not merged into another issue", "not_merged")


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _public_stage(stage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stage.items() if k != "created_ns"}
