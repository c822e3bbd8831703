"""Provisioning consent: who may mint a permanent project with `POST /v1/provision` on this server."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from loopkit_core.identity import AuthError
from loopkit_core.projects import hash_secret
from loopkit_core.settings import Settings

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}
REFUSED_CODE = "provision_requires_operator"


def is_loopback(host: str | None) -> bool:
    """Whether a host name or address only ever means this machine."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reachable_by_others(settings: Settings) -> bool:
    """Whether clients other than this machine's can reach the HTTP API (bind address, proxy or public URL)."""
    if not is_loopback(settings.host):
        return True
    # A loopback server behind a proxy (forwarded_allow_ips) or announced at another host serves others too.
    if settings.forwarded_allow_ips:
        return True
    return bool(settings.public_url) and not is_loopback(urlsplit(settings.public_url).hostname)


def provisioning_open(settings: Settings) -> bool:
    """Whether anyone may mint a permanent project: an explicit setting, else only on a loopback-only server."""
    if settings.open_provisioning is not None:
        return settings.open_provisioning
    return not reachable_by_others(settings)


@dataclass(frozen=True)
class Policy:
    """The provisioning rule of one server, with the operator token's digest (never the token)."""

    open: bool
    token_digest: str | None

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        """The policy the settings describe."""
        token = settings.provision_token
        digest = token.removeprefix("sha256:") if token and token.startswith("sha256:") else None
        if token and digest is None:
            digest = hash_secret(token)
        return cls(provisioning_open(settings), digest)

    def consents(self, bearer: str | None) -> bool:
        """Whether a call may mint: provisioning is open, or it carries the operator's token."""
        if self.open:
            return True
        if self.token_digest is None or not bearer:
            return False
        return hmac.compare_digest(hash_secret(bearer), self.token_digest)

    def refusal(self) -> AuthError:
        """The 403 a call without consent gets, saying how to get it."""
        how = (
            "send the operator's provision token as `authorization: Bearer <token>`"
            if self.token_digest
            else "the operator has not set a provision token (LOOPKIT_PROVISION_TOKEN)"
        )
        return AuthError(
            403,
            "minting a permanent project on this server needs the operator's consent: "
            f"{how}; ask the operator (see /contact.json), or use POST /v1/signup for a sandbox",
            REFUSED_CODE,
        )

    def as_json(self) -> dict[str, object]:
        """How provisioning works here, for /contact.json."""
        if self.open:
            how = "POST /v1/provision mints a permanent project for any caller on this server"
        else:
            how = (
                "POST /v1/provision mints a permanent project only with the operator's provision token, sent as "
                "authorization: Bearer <token>: ask the operator for it (production.text, production.email)"
            )
        return {
            "open": self.open,
            "requires": None if self.open else "operator token",
            "how": how + "; later calls resume the project with one of its own keys",
        }
