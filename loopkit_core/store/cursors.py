"""Keyset cursors: the window and last position of a page, signed per project so no client can edit or move one."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson

from loopkit_core.model import MAX_NS
from loopkit_core.store.records import WindowQuery


def cursor_key(secret: bytes, project_id: str) -> bytes:
    """The key that signs one project's cursors: a cursor made for one project is refused by every other."""
    return hmac.new(secret, b"loopkit cursor v2\x00" + project_id.encode(), hashlib.sha256).digest()


def encode_cursor(query: WindowQuery, after: tuple[int, str], key: bytes) -> str:
    """An opaque cursor that pins the window, so later pages read the same bounded window; signed with `key`."""
    payload = orjson.dumps({"s": query.start_ns, "e": query.end_ns, "t": after[0], "r": after[1]})
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_cursor_mac(key, body)}"


def decode_cursor(cursor: str, key: bytes) -> tuple[int, int, tuple[int, str]]:
    """(start_ns, end_ns, after) from a cursor signed with `key`; ValueError when it is not one of ours."""
    body, _, mac = cursor.partition(".")
    # An edited (or another project's, or another server's) cursor is refused before anything in it is read.
    if not cursor.isascii() or not hmac.compare_digest(mac, _cursor_mac(key, body)):
        raise ValueError("invalid cursor")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        data = orjson.loads(raw)
        start, end, ts, rid = data["s"], data["e"], data["t"], data["r"]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_NS for v in (start, end, ts)):
        raise ValueError("invalid cursor")
    if start > end:
        raise ValueError("invalid cursor")
    if not isinstance(rid, str) or len(rid) > 40:
        raise ValueError("invalid cursor")
    return start, end, (ts, rid)


def _cursor_mac(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()[:16]  # 128 bits: unforgeable, and short
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
