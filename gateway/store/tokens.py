"""Ephemeral client secrets (``ek_...``): minted for one front end, redeemed at the WebSocket.

Stored under the HMAC of the secret. Expiry is judged on Redis' clock inside Lua, so replicas
with skewed clocks agree. The record outlives its expiry by a grace period so that a late or
replayed token is told "expired" or "already used" rather than "unknown".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from redis.asyncio.cluster import RedisCluster

from gateway.errors import InvalidValue, TokenAlreadyUsed, TokenExpired, Unauthenticated
from gateway.store import keys
from gateway.store.connection import RedisClient, translated, with_now
from gateway.store.hashing import CLIENT_SECRET_PREFIX, SecretHasher, new_client_secret
from gateway.store.sessions import ACQUIRE, LUA_ACQUIRE_LEASE, LeaseGrant

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

# A Lua function (after the `now` prologue): 'ok' when the token at `key` can be used now,
# else why not ('unknown', 'expired', 'used').
_LUA_USABLE = """
local function token_status(key)
  if redis.call('EXISTS', key) == 0 then return 'unknown' end
  if now >= tonumber(redis.call('HGET', key, 'expires_ms')) then return 'expired' end
  if tonumber(redis.call('HGET', key, 'uses_left')) <= 0 then return 'used' end
  return 'ok'
end
"""

# KEYS[1] token; ARGV[1] '1' to consume a use, '0' to only look.
# Returns {status} or {'ok', field, value, ...} (after the decrement).
_USE = with_now(
    _LUA_USABLE
    + """
local status = token_status(KEYS[1])
if status ~= 'ok' then return {status} end
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'uses_left', -1) end
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 'ok')
return out
"""
)

# KEYS[1] token, KEYS[2] the tenant's leases; ARGV[1] session, ARGV[2] limit (-1: none),
# ARGV[3] lease ttl ms. Both or neither: a use is consumed only with the lease granted.
# Returns {status, live}: 'ok', 'full' (no slot; nothing consumed), or the token's status.
_REDEEM_WITH_LEASE = with_now(
    _LUA_USABLE
    + LUA_ACQUIRE_LEASE
    + """
local status = token_status(KEYS[1])
if status ~= 'ok' then return {status, 0} end
local granted, live = acquire_lease(KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if granted == 0 then return {'full', live} end
redis.call('HINCRBY', KEYS[1], 'uses_left', -1)
return {'ok', live}
"""
)

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
        # A Redis Cluster refuses a script whose keys live in two slots (the token's key is
        # not tagged by tenant: it is looked up before the tenant is known).
        self._cluster = isinstance(client, RedisCluster)
        self._client = client
        self._redeem_with_lease = client.register_script(_REDEEM_WITH_LEASE)
        self._acquire = client.register_script(ACQUIRE)

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
    async def redeem_with_lease(
        self, secret: str, tenant_id: str, session_id: str, limit: int | None, ttl_s: float
    ) -> LeaseGrant:
        """Consume one use and take the session's concurrency lease (see SessionStore), both
        or neither: a refused lease consumes nothing; a token that cannot be used takes no
        lease and raises as ``redeem`` does. One round trip where opening a session would
        otherwise spend two; on Redis Cluster, two calls with the same outcome."""
        key = self._checked_key(secret)
        leases = keys.leases(tenant_id)
        args: list[str | int] = [keys.check_session_id(session_id)]
        args += [-1 if limit is None else limit, max(1, int(ttl_s * 1000))]
        if self._cluster:
            return await self._redeem_then_lease(key, leases, args)
        status, live = await self._redeem_with_lease(keys=[key, leases], args=args)
        if status not in ("ok", "full"):
            _refuse(status)
        return LeaseGrant(granted=status == "ok", live=int(live))

    async def _redeem_then_lease(self, key: str, leases: str, args: list[str | int]) -> LeaseGrant:
        granted, live = await self._acquire(keys=[leases], args=args)
        if granted:
            try:
                reply = await self._use(keys=[key], args=["1"])
                if reply[0] != "ok":
                    _refuse(reply[0])
            except BaseException:
                # If this fails too, the lease lapses with its ttl; the token's error matters.
                with contextlib.suppress(Exception):
                    await self._client.zrem(leases, args[0])
                raise
        return LeaseGrant(granted=bool(granted), live=int(live))

    @translated
    async def refund(self, secret: str) -> bool:
        """Give back the use a failed upstream connect consumed (not above max_uses)."""
        if not secret.startswith(CLIENT_SECRET_PREFIX):
            return False
        return bool(await self._refund(keys=[self._key(secret)]))

    async def _run(self, secret: str, *, consume: bool) -> TokenRecord:
        reply = await self._use(keys=[self._checked_key(secret)], args=["1" if consume else "0"])
        if reply[0] != "ok":
            _refuse(reply[0])
        return _decode(reply[1:])

    def _checked_key(self, secret: str) -> str:
        if not secret.startswith(CLIENT_SECRET_PREFIX) or len(secret) > 256:
            raise Unauthenticated("Invalid client secret.")
        return self._key(secret)

    def _key(self, secret: str) -> str:
        return keys.token(self._hasher.digest(_PURPOSE, secret))


def _refuse(status: str) -> NoReturn:
    """The error for a token the use script would not use."""
    if status == "expired":
        raise TokenExpired("The client secret has expired.")
    if status == "used":
        raise TokenAlreadyUsed("The client secret has already been used.")
    raise Unauthenticated("Invalid client secret.")
