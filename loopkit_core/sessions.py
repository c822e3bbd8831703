"""Dashboard sessions: a signed, expiring cookie token bound to one live key, and its CSRF token.

The cookie never holds the key. It holds `v1.<key id>.<expires>.<mac>`, where the key id is the first
characters of the key's stored SHA-256 digest and the MAC is keyed by a value derived from the whole digest,
which never leaves the server. So a session is stateless (any LoopKit process sharing the control store can
check it), cannot be extended or forged from the cookie alone, and ends the moment its key is revoked
(`rotate-keys`, `/v1/recover`, project deletion): every request looks the key up again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from sqlalchemy import Engine

from loopkit_core.projects import Principal, hash_secret, live_keys, principal_of
from loopkit_core.store.schema import api_keys

COOKIE = "loopkit_dashboard"
COOKIE_PATH = "/v1/dashboard"
TTL_SECONDS = 12 * 3600
VERSION = "v1"
# 80 of the digest's 256 bits identify the key; the MAC key is derived from all of them.
KEY_ID_HEX = 20
MAX_TOKEN_LENGTH = 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac_key(key_hash: str) -> bytes:
    return hmac.new(bytes.fromhex(key_hash), b"loopkit dashboard session v1", hashlib.sha256).digest()


def _sign(key_hash: str, message: str) -> str:
    return _b64(hmac.new(_mac_key(key_hash), message.encode(), hashlib.sha256).digest())


def issue(key: str, now: float | None = None, ttl: int = TTL_SECONDS) -> str:
    """A session token for a (valid) key, expiring `ttl` seconds from now."""
    key_hash = hash_secret(key)
    expires = int(time.time() if now is None else now) + ttl
    body = f"{VERSION}.{key_hash[:KEY_ID_HEX]}.{expires}"
    return f"{body}.{_sign(key_hash, body)}"


def csrf_token(token: str, key_hash: str) -> str:
    """The CSRF token that forms of this session must carry (derived, so nothing is stored)."""
    return _sign(key_hash, "csrf." + token)


def resolve(control: Engine, token: str | None, now: float | None = None) -> tuple[Principal, str] | None:
    """The principal of a session token and its key's digest; None when malformed, forged, expired or revoked."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        return None
    _, key_id, expires, mac = parts
    if len(key_id) != KEY_ID_HEX or any(c not in "0123456789abcdef" for c in key_id) or not expires.isdigit():
        return None
    if int(expires) <= (time.time() if now is None else now):
        return None
    # A prefix match written as a range, so the primary-key index answers it on every database.
    stmt = live_keys().where(api_keys.c.key_hash >= key_id, api_keys.c.key_hash < key_id + "g")
    with control.connect() as conn:
        rows = conn.execute(stmt).all()
    body = f"{VERSION}.{key_id}.{expires}"
    for row in rows:
        if hmac.compare_digest(_sign(row.key_hash, body), mac):
            return principal_of(row), row.key_hash
    return None
