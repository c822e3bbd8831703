"""The signup answer: a project, its keys when freshly minted, and where to send things."""

from __future__ import annotations

from typing import Any

from loopkit_core.model import rfc3339
from loopkit_core.settings import Settings


def signup_shape(settings: Settings, project: dict[str, Any]) -> dict[str, Any]:
    """The signup shape: the project, its keys when freshly minted, and where to send things."""
    base = settings.base_url()
    expires_at = project.get("expires_at")
    out = {"ok": True, **project}
    out["expires_at"] = rfc3339(expires_at * 1_000_000_000) if expires_at else None
    out.pop("created_at", None)
    out.update(
        ingest_url=f"{base}/v1/traces",
        otlp_grpc_endpoint=settings.grpc_endpoint(),
        diagnose_url=f"{base}/v1/runs/diagnose",
        # With a fresh dashboard key, the URL signs in by itself: the fragment never reaches a server or a Referer,
        # and the page drops it from the address bar and history at once (docs/dashboard.md).
        dashboard_url=f"{base}/v1/dashboard" + (f"#key={key}" if (key := project.get("dashboard_key")) else ""),
        quickstart_url=f"{base}/quickstart.md",
    )
    return out
