"""A small HTTP client for the CLI's commands and `loopkit demo` against a running LoopKit (stdlib only)."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:4318"


class ClientError(Exception):
    """The server answered with an error, or could not be reached."""


def call(
    method: str,
    path: str,
    *,
    url: str | None,
    key: str | None,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    raw: bool = False,
) -> Any:
    """Call the API with a bearer key; the decoded JSON answer (or text with raw=True)."""
    base = url or os.environ.get("LOOPKIT_URL") or DEFAULT_URL
    key = key or os.environ.get("LOOPKIT_KEY")
    if not key:
        raise ClientError("no key: pass --key or set LOOPKIT_KEY")
    return send(method, base, path, key=key, body=body, params=params, raw=raw)


def send(
    method: str,
    base: str,
    path: str,
    *,
    key: str | None,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    raw: bool = False,
    expect: int | None = None,
    timeout: float = 120.0,
) -> Any:
    """Call the API at `base` exactly as given (no LOOPKIT_* defaults; no key, no authorization header).

    The decoded JSON answer, or text with raw=True. ClientError when the server answers an error, cannot be
    reached, or (with `expect`) answers a status other than `expect`.
    """
    base = base.rstrip("/")
    query = "?" + urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None}) if params else ""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(base + path + query, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the operator's own URL)
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]["message"]
        raise ClientError(f"{exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {base}: {exc.reason}") from None
    if expect is not None and status != expect:
        raise ClientError(f"{status} where {expect} was expected: {text[:500]}")
    return text if raw else json.loads(text)
