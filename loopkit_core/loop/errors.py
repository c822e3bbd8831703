"""LoopError: the one error the loop service raises; every front-end maps it to its own wire (HTTP, MCP, CLI)."""

from __future__ import annotations

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}


class LoopError(Exception):
    """A refused operation: an HTTP-style status, a stable code and a message that says what to do."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        retry_after: float | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")
        self.retry_after = retry_after
        # More fields of the error object beside code and message (e.g. which rule of a rule set, and why).
        self.details = details or {}
