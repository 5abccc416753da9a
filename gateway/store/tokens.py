"""Ephemeral client secrets (``ek_...``): minted for one front end, redeemed at the WebSocket.

Stored under the HMAC of the secret. Expiry is judged on Redis' clock inside Lua, so replicas
with skewed clocks agree. The record outlives its expiry by a grace period so that a late or
replayed token is told "expired" or "already used" rather than "unknown".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Literal

from gateway.errors import InvalidValue, TokenAlreadyUsed, TokenExpired, Unauthenticated
from gateway.store import keys
from gateway.store.connection import RedisClient, translated, with_now
from gateway.store.hashing import CLIENT_SECRET_PREFIX, SecretHasher, new_client_secret

_PURPOSE = "client-secret"
GRACE_MS = 10 * 60 * 1000

Protocol = Literal["ga", "beta"]

# KEYS[1] token; ARGV[1] ttl ms, ARGV[2] grace ms, then field/value pairs. Returns expiry ms.
_MINT = with_now("""
local expires = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'expires_ms', expires, 'created_ms', now, unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]))
return expires
""")

# KEYS[1] token; ARGV[1] '1' to consume a use, '0' to only look.
# Returns {status} or {'ok', field, value, ...} (after the decrement).
_USE = with_now("""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
if now >= tonumber(redis.call('HGET', KEYS[1], 'expires_ms')) then return {'expired'} end
if tonumber(redis.call('HGET', KEYS[1], 'uses_left')) <= 0 then return {'used'} end
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'uses_left', -1) end
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 'ok')
return out
""")

# KEYS[1] token. Gives one use back (never above max_uses). Returns 1 if given back.
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local left = tonumber(redis.call('HGET', KEYS[1], 'uses_left'))
if left >= tonumber(redis.call('HGET', KEYS[1], 'max_uses')) then return 0 end
redis.call('HINCRBY', KEYS[1], 'uses_left', 1)
return 1
"""


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRecord:
    tenant_id: str
    protocol: Protocol
    session_config: dict[str, Any]
    allowed_origins: list[str]
    max_uses: int
    uses_left: int
    expires_at: float  # epoch seconds (Redis clock)
    created_at: float


def _decode(flat: Sequence[str]) -> TokenRecord:
    raw = dict(zip(flat[::2], flat[1::2], strict=True))
    protocol: Protocol = "beta" if raw["protocol"] == "beta" else "ga"
    return TokenRecord(
        tenant_id=raw["tenant"],
        protocol=protocol,
        session_config=json.loads(raw["config"]),
        allowed_origins=json.loads(raw["origins"]),
        max_uses=int(raw["max_uses"]),
        uses_left=int(raw["uses_left"]),
        expires_at=int(raw["expires_ms"]) / 1000,
        created_at=int(raw["created_ms"]) / 1000,
    )


class TokenStore:
    def __init__(self, client: RedisClient, hasher: SecretHasher) -> None:
        self._hasher = hasher
        self._mint = client.register_script(_MINT)
        self._use = client.register_script(_USE)
        self._refund = client.register_script(_REFUND)

    @translated
    async def mint(
        self,
        tenant_id: str,
        session_config: dict[str, Any],
        *,
        protocol: Protocol = "ga",
        ttl_s: float = 60.0,
        max_uses: int = 1,
        allowed_origins: Sequence[str] = (),
    ) -> tuple[str, float]:
        """A new secret (returned once, stored hashed) and its expiry (epoch seconds).

        Range checks against the tenant's maximum belong to the caller; this only refuses
        values that cannot work at all.
        """
        if ttl_s <= 0 or max_uses < 1:
            raise InvalidValue("ttl and max_uses must be positive.", param="expires_after")
        keys.check_tenant_id(tenant_id)
        secret = new_client_secret()
        fields = [
            "tenant", tenant_id,
            "protocol", protocol,
            "config", json.dumps(session_config, separators=(",", ":")),
            "origins", json.dumps(list(allowed_origins)),
            "max_uses", str(max_uses),
            "uses_left", str(max_uses),
        ]  # fmt: skip
        expires_ms = await self._mint(
            keys=[self._key(secret)], args=[int(ttl_s * 1000), GRACE_MS, *fields]
        )
        return secret, int(expires_ms) / 1000

    @translated
    async def peek(self, secret: str) -> TokenRecord:
        """Validate without consuming a use (same refusals as ``redeem``)."""
        return await self._run(secret, consume=False)

    @translated
    async def redeem(self, secret: str) -> TokenRecord:
        """Consume one use atomically; exactly ``max_uses`` concurrent redeems succeed."""
        return await self._run(secret, consume=True)

    @translated
    async def refund(self, secret: str) -> bool:
        """Give back the use a failed upstream connect consumed (not above max_uses)."""
        if not secret.startswith(CLIENT_SECRET_PREFIX):
            return False
        return bool(await self._refund(keys=[self._key(secret)]))

    async def _run(self, secret: str, *, consume: bool) -> TokenRecord:
        if not secret.startswith(CLIENT_SECRET_PREFIX) or len(secret) > 256:
            raise Unauthenticated("Invalid client secret.")
        reply = await self._use(keys=[self._key(secret)], args=["1" if consume else "0"])
        status = reply[0]
        if status == "ok":
            return _decode(reply[1:])
        if status == "expired":
            raise TokenExpired("The client secret has expired.")
        if status == "used":
            raise TokenAlreadyUsed("The client secret has already been used.")
        raise Unauthenticated("Invalid client secret.")

    def _key(self, secret: str) -> str:
        return keys.token(self._hasher.digest(_PURPOSE, secret))
