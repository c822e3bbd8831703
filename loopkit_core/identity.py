"""Who is calling: the principal a key resolves to, its scopes, and the error when a key does not do."""

from __future__ import annotations

from dataclasses import dataclass

# The scopes a key can hold (docs/scopes.md); KEY_KINDS in projects.py gives each kind of key its set.
TELEMETRY_WRITE = "telemetry:write"
TELEMETRY_READ = "telemetry:read"
RUNS_WRITE = "runs:write"
REPORTS_READ = "reports:read"
DASHBOARD_READ = "dashboard:read"
APPROVALS_WRITE = "approvals:write"
PRODUCER_SCOPES = (TELEMETRY_WRITE,)
AGENT_SCOPES = (RUNS_WRITE, TELEMETRY_READ, REPORTS_READ, DASHBOARD_READ)
DASHBOARD_SCOPES = (DASHBOARD_READ, APPROVALS_WRITE)


@dataclass(frozen=True)
class Principal:
    """Who is calling: always derived from the key, never from a payload field."""

    project_id: str
    key_kind: str
    scopes: frozenset[str]
    key_display: str
    quota_spans: int | None
    expires_at: int | None


class AuthError(Exception):
    """A request without a usable key (status 401), or without the needed scope or project (403)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
