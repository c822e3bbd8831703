"""Who is calling: the principal a key resolves to, its scopes, and the error when a key does not do."""

from __future__ import annotations

from dataclasses import dataclass


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
