"""The scopes a key can carry, each defined once: what a route requires and what a key kind holds (docs/scopes.md)."""

from __future__ import annotations

TELEMETRY_WRITE = "telemetry:write"  # send records (POST /v1/traces, OTLP/gRPC)
TELEMETRY_READ = "telemetry:read"  # read records and the plugin list
RUNS_WRITE = "runs:write"  # run a diagnosis or a verification
REPORTS_READ = "reports:read"  # read packets and their handoffs
DASHBOARD_READ = "dashboard:read"  # read packets and records on the dashboard
APPROVALS_WRITE = "approvals:write"  # approve or reject a packet
# What each kind of key holds (projects.KEY_KINDS).
PRODUCER_SCOPES = (TELEMETRY_WRITE,)
AGENT_SCOPES = (RUNS_WRITE, TELEMETRY_READ, REPORTS_READ, DASHBOARD_READ)
DASHBOARD_SCOPES = (DASHBOARD_READ, APPROVALS_WRITE)
ALL = (TELEMETRY_WRITE, TELEMETRY_READ, RUNS_WRITE, REPORTS_READ, DASHBOARD_READ, APPROVALS_WRITE)
