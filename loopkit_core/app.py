"""create_app(settings): the composition root. It wires the store, the writer, the sink, the decode pool, the
receivers, the loop service and the HTTP routes; nothing else builds these objects."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopkit_core.api import (
    context,
    dashboard,
    discovery,
    evals,
    grouping,
    issue_page,
    issues,
    journeys,
    loops,
    packets,
    plugins,
    projects,
    runs,
    signin,
    telemetry,
)
from loopkit_core.api.errors import error_response
from loopkit_core.decode_pool import DecodePool
from loopkit_core.ingest import StoreSink
from loopkit_core.loop import Loop, LoopError
from loopkit_core.mcp.endpoint import McpEndpoint
from loopkit_core.plugins import get_plugins
from loopkit_core.purge import Purger
from loopkit_core.ratelimit import RateLimiter
from loopkit_core.settings import Settings
from loopkit_core.store.engines import Store
from loopkit_core.store.writer import Writer
from loopkit_receivers import otlp_http
from loopkit_receivers.intake import Intake
from loopkit_receivers.limits import Limits

ROUTES = [
    Route("/healthz", discovery.healthz, methods=["GET"]),
    Route("/llms.txt", discovery.llms_txt, methods=["GET"]),
    Route("/openapi.json", discovery.openapi_json, methods=["GET"]),
    Route("/quickstart.md", discovery.quickstart_md, methods=["GET"]),
    Route("/agents.md", discovery.agents_md, methods=["GET"]),
    Route("/README.md", discovery.readme_md, methods=["GET"]),
    Route("/docs/{name}.md", discovery.doc_md, methods=["GET"]),
    Route("/contact.json", projects.contact, methods=["GET"]),
    Route("/v1/signup", projects.signup, methods=["POST"]),
    Route("/v1/provision", projects.provision, methods=["POST"]),
    Route("/v1/recover", projects.recover, methods=["POST"]),
    Route("/v1/traces", otlp_http.export_traces, methods=["POST"]),
    Route("/v1/logs", otlp_http.export_logs, methods=["POST"]),
    Route("/v1/metrics", otlp_http.refuse_metrics, methods=["POST"]),
    Route("/v1/telemetry", telemetry.list_telemetry, methods=["GET"]),
    Route("/v1/records/{record_id}", telemetry.get_record, methods=["GET"]),
    Route("/v1/sessions", journeys.list_sessions, methods=["GET"]),
    Route("/v1/sessions/{session_id}", journeys.get_session, methods=["GET"]),
    Route("/v1/traces/{trace_id}", journeys.get_trace, methods=["GET"]),
    Route("/v1/runs/diagnose", runs.run_diagnose, methods=["POST"]),
    Route("/v1/packets", packets.list_packets, methods=["GET"]),
    Route("/v1/packets/{packet_id}", packets.get_packet, methods=["GET"]),
    Route("/v1/packets/{packet_id}/handoff", packets.handoff, methods=["GET"]),
    Route("/v1/packets/{packet_id}/evals", packets.evals, methods=["GET"]),
    Route("/v1/packets/{packet_id}/approve", packets.approve, methods=["POST"]),
    Route("/v1/packets/{packet_id}/reject", packets.reject, methods=["POST"]),
    Route("/v1/packets/{packet_id}/stages", loops.record_stage, methods=["POST"]),
    Route("/v1/loops", loops.list_loops, methods=["GET"]),
    Route("/v1/evals", evals.record_eval, methods=["POST"]),
    Route("/v1/issues/{fingerprint}", issues.get_issue, methods=["GET"]),
    Route("/v1/issues/{fingerprint}/merge", issues.merge, methods=["POST"]),
    Route("/v1/issues/{fingerprint}/unmerge", issues.unmerge, methods=["POST"]),
    Route("/v1/runs/verify", runs.run_verify, methods=["POST"]),
    Route("/v1/plugins", plugins.list_plugins, methods=["GET"]),
    Route("/v1/grouping/rules", grouping.rules, methods=["GET", "PUT"]),
    Route("/v1/dashboard", dashboard.index, methods=["GET"]),
    Route("/v1/dashboard/login", signin.login, methods=["POST"]),
    Route("/v1/dashboard/logout", signin.logout, methods=["POST"]),
    Route("/v1/dashboard/packets/{packet_id}", dashboard.packet_page, methods=["GET"]),
    Route("/v1/dashboard/packets/{packet_id}/approve", dashboard.approve, methods=["POST"]),
    Route("/v1/dashboard/packets/{packet_id}/reject", dashboard.reject, methods=["POST"]),
    Route("/v1/dashboard/records/{record_id}", dashboard.record_page, methods=["GET"]),
    Route("/v1/dashboard/issues", context.issues_page, methods=["GET"]),
    Route("/v1/dashboard/issues/{fingerprint}", issue_page.issue_page, methods=["GET"]),
    Route("/v1/dashboard/issues/{fingerprint}/merge", issue_page.merge, methods=["POST"]),
    Route("/v1/dashboard/issues/{fingerprint}/unmerge", issue_page.unmerge, methods=["POST"]),
    Route("/v1/dashboard/sessions", context.sessions_page, methods=["GET"]),
    Route("/v1/dashboard/sessions/{session_id}", context.session_page, methods=["GET"]),
    Route("/v1/dashboard/traces/{trace_id}", context.trace_page, methods=["GET"]),
    Route("/schema/packet.json", discovery.packet_schema, methods=["GET"]),
    Route("/schema/eval-example.json", discovery.eval_example_schema, methods=["GET"]),
]


class LoopKit:
    """One LoopKit instance: its settings, store, writer, ingest path, loop service and HTTP app."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time, decode_workers: int = 0) -> None:
        self.settings = settings
        self.clock = clock  # injectable so expiry can be tested without waiting
        self.plugins = get_plugins(settings.blocked_plugins_list())
        self.store = Store(settings)
        self.writer = Writer(self.store, settings.writer_threads, settings.writer_max_pending_rows)
        self.sink = StoreSink(self.store, self.writer, clock)
        # Decoding on threads of this process, or (decode_workers > 0) in worker processes beside it.
        self.decoder = DecodePool(
            decode_workers, self.plugins, settings.blocked_plugins_list(), Limits.from_settings(settings)
        )
        self.intake = Intake(self.sink, self.decoder, settings.max_body_bytes, settings.request_body_timeout_seconds)
        self.loop = Loop(settings, self.store, self.plugins, self.sink, clock)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_hour, 3600.0)
        self.purger = Purger(self.store, clock, settings.purge_interval_seconds, settings.sandbox_grace_days * 86400)
        # MCP over streamable HTTP (docs/mcp.md): outside ROUTES, which /openapi.json documents route for route.
        self.mcp = McpEndpoint(self.loop)
        self.http = Starlette(
            routes=[*ROUTES, Route("/mcp", self.mcp, methods=["GET", "POST", "DELETE"])],
            exception_handlers={LoopError: _loop_error, HTTPException: _http_error, Exception: _unexpected},
        )
        self.http.state.loopkit = self
        self.http.state.loop = self.loop
        self.http.state.intake = self.intake

    def use_settings(self, settings: Settings) -> None:
        """Adopt settings that differ only in what the server learnt binding (ports the OS chose)."""
        self.settings = self.loop.settings = settings

    def start(self) -> None:
        """Start background work (the purge of expired sandboxes)."""
        self.purger.start()

    def close(self) -> None:
        """Commit everything acknowledged-to-be, then release the decode workers and the databases."""
        self.purger.stop()
        self.decoder.close()
        self.writer.close(timeout=self.settings.shutdown_grace_seconds + 30)
        self.store.close()


def create_app(settings: Settings, clock: Callable[[], float] = time.time, decode_workers: int = 0) -> LoopKit:
    """Build a LoopKit instance; nothing is global, so tests can run several side by side."""
    return LoopKit(settings, clock, decode_workers)


async def _loop_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoopError)
    return error_response(exc.status, exc.message, exc.code, exc.retry_after, exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, exc.detail if isinstance(exc.detail, str) else "error")
    response.headers.update(exc.headers or {})  # e.g. Allow on 405
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged by Starlette's ServerErrorMiddleware; the client gets the API's error shape.
    return error_response(500, "internal error")
