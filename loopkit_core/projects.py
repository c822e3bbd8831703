"""Projects and their keys: minting, hashing, scopes, and resolving a bearer key to a principal."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from typing import Any

from sqlalchemy import Engine, Row, Select, insert, select, update
from sqlalchemy.exc import IntegrityError

from loopkit_core.identity import AuthError, Principal
from loopkit_core.scopes import AGENT_SCOPES, DASHBOARD_SCOPES, PRODUCER_SCOPES
from loopkit_core.store.schema import api_keys, projects

__all__ = ["AuthError", "Principal"]  # re-exported: identity.py defines them, for modules that must not reach here

# Key kind -> (prefix, scopes). The prefix makes a leaked key recognisable to secret scanners.
KEY_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "producer": ("lk_ingest_", PRODUCER_SCOPES),
    "agent": ("lk_agent_", AGENT_SCOPES),
    "dashboard": ("lk_dash_", DASHBOARD_SCOPES),
}
KEY_FIELDS = {"producer": "producer_key", "agent": "agent_key", "dashboard": "dashboard_key"}
MAX_KEY_LENGTH = 200
# Characters that reorder or break the text around a name wherever it is shown (a log line, a terminal, a page):
# the bidirectional embeddings, overrides, isolates and marks, and the Unicode line and paragraph separators.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
LINE_SEPARATORS = frozenset("\u2028\u2029")


def hash_secret(secret: str) -> str:
    """SHA-256 of a high-entropy secret; only this digest is ever stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def slugify(name: str) -> str:
    """A project name as a lowercase slug of letters, digits and dashes (never a path)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60].strip("-") or "project"


def validate_name(name: object) -> str:
    """A project name as given by an operator or a client; ValueError when unusable."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("project name must be a non-empty string")
    if len(name) > 200:
        raise ValueError("project name must be at most 200 characters")
    for position, ch in enumerate(name):
        # Cc is C0, DEL and C1 (which includes U+0085, NEXT LINE).
        if unicodedata.category(ch) == "Cc":
            what = "control characters"
        elif ch in LINE_SEPARATORS:
            what = "line or paragraph separators"
        elif ch in BIDI_CONTROLS:
            what = "bidirectional control characters"
        else:
            continue
        raise ValueError(f"project name must not contain {what} (U+{ord(ch):04X} at position {position})")
    return name.strip()


def create_project(
    control: Engine,
    name: str,
    kind: str = "permanent",
    quota_spans: int | None = None,
    expires_at: int | None = None,
    operator: str | None = None,
    provision_key: str | None = None,
) -> dict[str, Any]:
    """Create a project with three fresh keys and a recovery code; the secrets are returned once."""
    name = validate_name(name)
    now = int(time.time())
    project_id = f"{slugify(name)}-{secrets.token_hex(4)}"
    recovery_code = "lk_recover_" + secrets.token_urlsafe(24)
    keys = {kind_: _new_key(kind_) for kind_ in KEY_KINDS}
    with control.begin() as conn:
        conn.execute(
            insert(projects).values(
                project_id=project_id,
                name=name,
                kind=kind,
                operator=operator,
                created_at=now,
                quota_spans=quota_spans,
                expires_at=expires_at,
                recovery_hash=hash_secret(recovery_code),
                provision_key=provision_key,
            )
        )
        conn.execute(insert(api_keys), [_key_row(project_id, k, key, now) for k, key in keys.items()])
    result: dict[str, Any] = {
        "project_id": project_id,
        "project_name": name,
        "kind": kind,
        **{KEY_FIELDS[k]: key for k, key in keys.items()},
        "recovery_code": recovery_code,
        "quota_spans": quota_spans,
        "expires_at": expires_at,
    }
    return result


def authenticate(control: Engine, token: str) -> Principal | None:
    """The principal behind a bearer key, or None when the key is unknown, revoked or malformed."""
    if not token or len(token) > MAX_KEY_LENGTH or not token.isascii():
        return None
    digest = hash_secret(token)
    with control.connect() as conn:
        row = conn.execute(live_keys().where(api_keys.c.key_hash == digest)).first()
    # The lookup is by digest; the explicit comparison keeps the check constant-time regardless.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return principal_of(row)


def live_keys() -> Select:
    """Unrevoked keys of undeleted projects, with their project's row (narrow it with `.where`)."""
    return (
        select(api_keys.c.key_hash, api_keys.c.kind, api_keys.c.scopes, api_keys.c.display, projects)
        .join(projects, projects.c.project_id == api_keys.c.project_id)
        .where(api_keys.c.revoked_at.is_(None), projects.c.deleted_at.is_(None))
    )


def principal_of(row: Row) -> Principal:
    """The principal of one row of `live_keys()`."""
    return Principal(
        project_id=row.project_id,
        key_kind=row.kind,
        scopes=frozenset(row.scopes.split()),
        key_display=row.display,
        quota_spans=row.quota_spans,
        expires_at=row.expires_at,
    )


class Conflict(Exception):
    """A concurrent request changed the same project first."""


def bearer_token(header: str | None) -> str | None:
    """The key from an `authorization: Bearer <key>` header value."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def require(control: Engine, authorization: str | None, scope: str, now: float | None = None) -> Principal:
    """The principal behind an authorization header if it holds `scope` and has not expired."""
    token = bearer_token(authorization)
    if token is None:
        raise AuthError(401, "missing key: send `authorization: Bearer <key>`")
    principal = authenticate(control, token)
    if principal is None:
        raise AuthError(401, "unknown or revoked key")
    if scope not in principal.scopes:
        raise AuthError(403, f"the {principal.key_kind} key of this project does not have the {scope} scope")
    now = time.time() if now is None else now
    if principal.expires_at is not None and now >= principal.expires_at:
        raise AuthError(
            403,
            f"sandbox project {principal.project_id} expired at {_iso(principal.expires_at)}; "
            "its data is purged after a grace period (see /contact.json to keep it)",
            "project_expired",
        )
    return principal


def provision(
    control: Engine, name: object, operator: object, token: str | None, refusal: AuthError | None = None
) -> tuple[dict[str, Any], bool]:
    """Mint a permanent project for (operator, name) once; later calls must carry one of its keys.

    Returns (project, created). Concurrent first calls converge: one creates, the others get Conflict.
    `refusal` (the caller lacks the operator's consent) is raised instead of minting; resuming is unaffected.
    """
    name = validate_name(name)
    if operator is not None and (not isinstance(operator, str) or len(operator) > 200):
        raise ValueError("operator must be a string of at most 200 characters")
    # Length-prefixed, so distinct pairs never collide (a naive "a/b" + "c" would equal "a" + "b/c").
    provision_key = f"{len(operator or '')}:{operator or ''}/{name}"
    with control.connect() as conn:
        existing = conn.execute(
            select(projects).where(projects.c.provision_key == provision_key, projects.c.deleted_at.is_(None))
        ).first()
    if existing is not None:
        principal = authenticate(control, token) if token else None
        if principal is None:
            raise AuthError(401, f"project {name!r} exists: send one of its keys to resume it")
        if principal.project_id != existing.project_id:
            raise AuthError(403, "this key belongs to another project")
        return _project_json(existing), False
    if refusal is not None:
        raise refusal
    try:
        return create_project(control, name, "permanent", operator=operator, provision_key=provision_key), True
    except IntegrityError:
        raise Conflict(f"project {name!r} was provisioned by a concurrent request: resume it with its key") from None


def recover(control: Engine, project_id: object, recovery_code: object) -> dict[str, Any]:
    """Rotate every key and the recovery code of a project, given its current recovery code."""
    if not isinstance(project_id, str) or not isinstance(recovery_code, str) or len(recovery_code) > MAX_KEY_LENGTH:
        raise AuthError(401, "project_id and recovery_code must be strings")
    with control.connect() as conn:
        stored = conn.execute(
            select(projects.c.recovery_hash).where(projects.c.project_id == project_id, projects.c.deleted_at.is_(None))
        ).scalar()
    # The same comparison runs for unknown projects, so timing does not reveal which IDs exist.
    if not hmac.compare_digest(stored or "0" * 64, hash_secret(recovery_code)) or stored is None:
        raise AuthError(401, "unknown project or wrong recovery code")
    return rotate_keys(control, project_id)


def rotate_keys(control: Engine, project_id: str) -> dict[str, Any]:
    """Revoke a project's keys and recovery code and mint new ones; the old ones stop working at once."""
    now = int(time.time())
    keys = {kind: _new_key(kind) for kind in KEY_KINDS}
    recovery_code = "lk_recover_" + secrets.token_urlsafe(24)
    with control.begin() as conn:
        found = conn.execute(
            update(projects)
            .where(projects.c.project_id == project_id, projects.c.deleted_at.is_(None))
            .values(recovery_hash=hash_secret(recovery_code))
        ).rowcount
        if not found:
            raise LookupError(f"no project {project_id!r}")
        conn.execute(
            update(api_keys)
            .where(api_keys.c.project_id == project_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        conn.execute(insert(api_keys), [_key_row(project_id, k, key, now) for k, key in keys.items()])
    project = get_project(control, project_id)
    assert project is not None
    project.pop("keys", None)
    return {**project, **{KEY_FIELDS[k]: key for k, key in keys.items()}, "recovery_code": recovery_code}


def promote(control: Engine, project_id: str) -> dict[str, Any]:
    """Make a project permanent: no quota, no expiry; its data and keys stay."""
    with control.begin() as conn:
        found = conn.execute(
            update(projects)
            .where(projects.c.project_id == project_id, projects.c.deleted_at.is_(None))
            .values(kind="permanent", quota_spans=None, expires_at=None)
        ).rowcount
    if not found:
        raise LookupError(f"no project {project_id!r}")
    project = get_project(control, project_id)
    assert project is not None
    return project


def mark_deleted(control: Engine, project_id: str, now: float | None = None) -> bool:
    """Revoke a project's keys and mark it deleted (its name can be provisioned again)."""
    now_s = int(time.time() if now is None else now)
    with control.begin() as conn:
        found = conn.execute(
            update(projects)
            .where(projects.c.project_id == project_id, projects.c.deleted_at.is_(None))
            .values(deleted_at=now_s, provision_key=None, recovery_hash=None)
        ).rowcount
        conn.execute(
            update(api_keys)
            .where(api_keys.c.project_id == project_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now_s)
        )
    return bool(found)


def expired_before(control: Engine, cutoff: float) -> list[str]:
    """Live sandbox projects whose expiry is at or before `cutoff`."""
    with control.connect() as conn:
        rows = conn.execute(
            select(projects.c.project_id).where(
                projects.c.deleted_at.is_(None), projects.c.expires_at.is_not(None), projects.c.expires_at <= cutoff
            )
        ).all()
    return [r.project_id for r in rows]


def list_projects(control: Engine) -> list[dict[str, Any]]:
    """Every live project, oldest first, without secrets."""
    with control.connect() as conn:
        rows = conn.execute(
            select(projects).where(projects.c.deleted_at.is_(None)).order_by(projects.c.created_at)
        ).all()
    return [_project_json(r) for r in rows]


def get_project(control: Engine, project_id: str) -> dict[str, Any] | None:
    """One live project with its keys' display prefixes (never the keys), or None."""
    with control.connect() as conn:
        row = conn.execute(
            select(projects).where(projects.c.project_id == project_id, projects.c.deleted_at.is_(None))
        ).first()
        if row is None:
            return None
        keys = conn.execute(
            select(api_keys.c.kind, api_keys.c.display, api_keys.c.scopes, api_keys.c.created_at).where(
                api_keys.c.project_id == project_id, api_keys.c.revoked_at.is_(None)
            )
        ).all()
    result = _project_json(row)
    result["keys"] = [
        {"kind": k.kind, "display": k.display, "scopes": k.scopes.split(), "created_at": k.created_at} for k in keys
    ]
    return result


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _new_key(kind: str) -> str:
    return KEY_KINDS[kind][0] + secrets.token_urlsafe(32)


def _key_row(project_id: str, kind: str, key: str, now: int) -> dict[str, Any]:
    prefix, scopes = KEY_KINDS[kind]
    return {
        "key_hash": hash_secret(key),
        "project_id": project_id,
        "kind": kind,
        "scopes": " ".join(scopes),
        "display": key[: len(prefix) + 4] + "…",
        "created_at": now,
    }


def _project_json(row: Any) -> dict[str, Any]:
    return {
        "project_id": row.project_id,
        "project_name": row.name,
        "kind": row.kind,
        "operator": row.operator,
        "created_at": row.created_at,
        "quota_spans": row.quota_spans,
        "expires_at": row.expires_at,
    }
