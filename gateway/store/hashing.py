"""Secrets are never stored in clear: only their HMAC-SHA256 under a server-side pepper.

A plain hash of a 256-bit random secret would already resist guessing; the pepper additionally
makes a leaked Redis dump useless for testing candidate keys offline without the gateway's
``hash_secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable

from gateway.config import Settings

log = logging.getLogger(__name__)

# Used only when no hash_secret is configured (the embedded quick start); logged loudly.
_FALLBACK_PEPPER = b"rgw-fallback-pepper:set-GATEWAY_HASH_SECRET"

TENANT_KEY_PREFIX = "rgw_sk_"
CLIENT_SECRET_PREFIX = "ek_"  # noqa: S105  (a prefix; browser clients check for it)


class SecretHasher:
    def __init__(self, pepper: bytes) -> None:
        if not pepper:
            raise ValueError("the pepper must not be empty")
        self._pepper = pepper

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretHasher:
        if settings.hash_secret is None:
            log.warning(
                "GATEWAY_HASH_SECRET is not set: secrets are hashed with a built-in pepper. "
                "Set a random value, the same on every replica."
            )
            return cls(_FALLBACK_PEPPER)
        return cls(settings.hash_secret.get_secret_value().encode())

    def digest(self, purpose: str, secret: str) -> str:
        """Hex HMAC of ``secret``; ``purpose`` separates domains (a key is never a token)."""
        message = purpose.encode() + b"\x00" + secret.encode()
        return hmac.new(self._pepper, message, hashlib.sha256).hexdigest()


def new_tenant_key() -> str:
    return TENANT_KEY_PREFIX + secrets.token_urlsafe(32)  # 43 url-safe chars, 256 bits


def new_client_secret() -> str:
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def matches_any(candidate: str, known: Iterable[str]) -> bool:
    """Constant-time membership: every entry is compared, without an early exit."""
    found = False
    for item in known:
        found |= hmac.compare_digest(candidate.encode(), item.encode())
    return found
