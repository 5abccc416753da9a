"""Tenants: record, API keys (stored as HMACs only), limits and policy.

The record is a Redis hash (one field per part) so that an update of one part is a single
atomic HSET with no read-modify-write race between admins or replicas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.config import BootstrapTenant, Settings, TenantLimits
from gateway.errors import (
    InvalidValue,
    NotFound,
    TenantDisabled,
    Unauthenticated,
)
from gateway.store import keys
from gateway.store.connection import LUA_HSET_IF_EXISTS, RedisClient, text, text_map, translated
from gateway.store.hashing import SecretHasher, matches_any, new_id, new_tenant_key

_KEY_PURPOSE = "tenant-key"
_BAD_KEY = "Incorrect API key provided."

# KEYS[1] record; ARGV field/value pairs. Creates the record only if the id is free.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS[1] record; ARGV[1] new key-hash list (JSON). Swaps the list and returns the old one, so
# the caller can delete the old pointers; the swap alone already invalidates the old key.
_SWAP_KEYS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local old = redis.call('HGET', KEYS[1], 'key_hashes')
redis.call('HSET', KEYS[1], 'key_hashes', ARGV[1])
return old
"""


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Browser origins allowed to use this tenant's tokens; empty: any (a token may narrow it).
    allowed_origins: list[str] = Field(default_factory=list)
    # Client event types allowed through; None: all.
    allowed_client_events: list[str] | None = None
    # A client session.update touching a locked field: refuse it, or strip the field.
    locked_fields_mode: Literal["refuse", "strip"] = "refuse"
    # Pass the upstream's rate_limits.updated through instead of the tenant's own figures.
    rate_limits_passthrough: bool = False
    # May clients add conversation items with role "system" (browsers usually should not).
    allow_system_items: bool = True


class TenantRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str = ""
    disabled: bool = False
    created_at: float
    models: list[str] = Field(default_factory=list)  # empty: any model
    limits: TenantLimits
    policy: TenantPolicy = Field(default_factory=TenantPolicy)
    # HMACs of the valid API keys; not secret, but never shown to clients either.
    key_hashes: list[str] = Field(default_factory=list, repr=False)


def default_limits(settings: Settings) -> TenantLimits:
    return TenantLimits(
        max_concurrent_sessions=settings.default_max_concurrent_sessions,
        tokens_per_minute=settings.default_tokens_per_minute,
        tokens_per_day=settings.default_tokens_per_day,
        requests_per_day=settings.default_requests_per_day,
        audio_seconds_per_day=settings.default_audio_seconds_per_day,
        max_session_seconds=settings.default_max_session_seconds,
        idle_timeout_seconds=settings.default_idle_timeout_seconds,
    )


def _encode(record: TenantRecord) -> list[str]:
    return [
        "id", record.id,
        "name", record.name,
        "disabled", "1" if record.disabled else "0",
        "created_at", repr(record.created_at),
        "models", json.dumps(record.models),
        "limits", record.limits.model_dump_json(),
        "policy", record.policy.model_dump_json(),
        "key_hashes", json.dumps(record.key_hashes),
    ]  # fmt: skip


def _decode(raw: dict[str, str]) -> TenantRecord:
    return TenantRecord(
        id=raw["id"],
        name=raw.get("name", ""),
        disabled=raw.get("disabled") == "1",
        created_at=float(raw["created_at"]),
        models=json.loads(raw.get("models", "[]")),
        limits=TenantLimits.model_validate_json(raw["limits"]),
        policy=_policy(raw.get("policy", "{}")),
        key_hashes=json.loads(raw.get("key_hashes", "[]")),
    )


def _policy(stored: str) -> TenantPolicy:
    # extra="forbid" catches typos in admin input; a record written by a newer replica (a
    # rolling upgrade) may carry fields this one does not know, and must still load.
    data = json.loads(stored)
    return TenantPolicy.model_validate(
        {k: v for k, v in data.items() if k in TenantPolicy.model_fields}
    )


class TenantStore:
    def __init__(
        self,
        client: RedisClient,
        hasher: SecretHasher,
        *,
        defaults: TenantLimits,
        default_models: list[str],
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 0.0,
    ) -> None:
        self._r = client
        self._cache = _RecordCache(cache_seconds)
        self._hasher = hasher
        self._defaults = defaults
        self._default_models = default_models
        self._clock = clock
        self._create = client.register_script(_CREATE)
        self._swap_keys = client.register_script(_SWAP_KEYS)
        self._hset_if_exists = client.register_script(LUA_HSET_IF_EXISTS)

    @translated
    async def create(
        self,
        name: str = "",
        *,
        tenant_id: str | None = None,
        models: list[str] | None = None,
        limits: TenantLimits | None = None,
        policy: TenantPolicy | None = None,
        api_key: str | None = None,
    ) -> tuple[TenantRecord, str]:
        """Create a tenant; returns the record and its API key in clear (shown once only).

        Fields left unset in ``limits`` take the configured defaults.
        """
        tenant_id = keys.check_tenant_id(tenant_id or new_id("t_"))
        key = api_key or new_tenant_key()
        key_hash = self._hasher.digest(_KEY_PURPOSE, key)
        record = TenantRecord(
            id=tenant_id,
            name=name,
            created_at=self._clock(),
            models=list(self._default_models if models is None else models),
            limits=self._merge_limits(limits),
            policy=policy or TenantPolicy(),
            key_hashes=[key_hash],
        )
        if not await self._create(keys=[keys.tenant(tenant_id)], args=_encode(record)):
            raise InvalidValue(f"Tenant {tenant_id!r} already exists.", param="id")
        # The pointer must not hijack a key another tenant uses (possible only with given keys).
        if not await self._r.set(keys.tenant_key(key_hash), tenant_id, nx=True):
            owner = await self._r.get(keys.tenant_key(key_hash))
            if owner != tenant_id:
                await self._r.delete(keys.tenant(tenant_id))
                raise InvalidValue("That API key is already in use.", param="api_key")
        await self._r.sadd(keys.TENANT_INDEX, tenant_id)
        return record, key

    @translated
    async def get(self, tenant_id: str) -> TenantRecord:
        cached = self._cache.by_id(tenant_id)
        if cached is not None:
            return cached
        raw = text_map(await self._r.hgetall(keys.tenant(tenant_id)))
        if not raw:
            raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
        record = _decode(raw)
        self._cache.put(record)
        return record

    @translated
    async def list_tenants(self) -> list[TenantRecord]:
        ids = sorted(text(i) for i in await self._r.smembers(keys.TENANT_INDEX))
        pipe = self._r.pipeline(transaction=False)
        for tenant_id in ids:
            pipe.hgetall(keys.tenant(tenant_id))
        rows = await pipe.execute() if ids else []
        return [_decode(text_map(raw)) for raw in rows if raw]

    @translated
    async def authenticate(self, api_key: str) -> TenantRecord:
        """The tenant an API key belongs to; Unauthenticated or TenantDisabled otherwise."""
        if not api_key or len(api_key) > 256:
            raise Unauthenticated(_BAD_KEY)
        key_hash = self._hasher.digest(_KEY_PURPOSE, api_key)
        cached = self._cache.by_key(key_hash)
        if cached is not None:
            if cached.disabled:
                raise TenantDisabled("This tenant is disabled.")
            return cached
        tenant_id = await self._r.get(keys.tenant_key(key_hash))
        if tenant_id is None:
            raise Unauthenticated(_BAD_KEY)
        raw = text_map(await self._r.hgetall(keys.tenant(text(tenant_id))))
        # The record's own list is the authority: a pointer left behind by a rotation (or a
        # crash half way through one) never authenticates.
        if not raw:
            raise Unauthenticated(_BAD_KEY)
        record = _decode(raw)
        if not matches_any(key_hash, record.key_hashes):
            raise Unauthenticated(_BAD_KEY)
        self._cache.put(record, key_hash)
        if record.disabled:
            raise TenantDisabled("This tenant is disabled.")
        return record

    def invalidate(self, tenant_id: str) -> None:
        """Forget what this replica cached of a tenant (it changed here or elsewhere)."""
        self._cache.drop(tenant_id)

    @translated
    async def rotate_key(self, tenant_id: str) -> str:
        """A new API key (returned once); every previous key stops working at once."""
        key = new_tenant_key()
        key_hash = self._hasher.digest(_KEY_PURPOSE, key)
        self._cache.drop(tenant_id)
        await self._r.set(keys.tenant_key(key_hash), tenant_id)
        old = await self._swap_keys(keys=[keys.tenant(tenant_id)], args=[json.dumps([key_hash])])
        if old is None:
            await self._r.delete(keys.tenant_key(key_hash))
            raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
        stale = [keys.tenant_key(h) for h in json.loads(old) if h != key_hash]
        if stale:
            # One DEL per key: in a cluster they live in different slots.
            pipe = self._r.pipeline(transaction=False)
            for name in stale:
                pipe.delete(name)
            await pipe.execute()
        return key

    async def disable(self, tenant_id: str) -> TenantRecord:
        return await self._set(tenant_id, disabled="1")

    async def enable(self, tenant_id: str) -> TenantRecord:
        return await self._set(tenant_id, disabled="0")

    async def update(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        models: list[str] | None = None,
        limits: TenantLimits | None = None,
        policy: TenantPolicy | None = None,
    ) -> TenantRecord:
        """Replace the given parts (limits and policy as whole objects)."""
        fields: dict[str, str] = {}
        if name is not None:
            fields["name"] = name
        if models is not None:
            fields["models"] = json.dumps(models)
        if limits is not None:
            fields["limits"] = limits.model_dump_json()
        if policy is not None:
            fields["policy"] = policy.model_dump_json()
        return await self._set(tenant_id, **fields)

    @translated
    async def ensure_bootstrap(self, tenant: BootstrapTenant) -> bool:
        """Create a configured tenant unless it exists (an existing one is left as it is)."""
        if await self._r.exists(keys.tenant(tenant.id)):
            return False
        try:
            await self.create(
                tenant.name,
                tenant_id=tenant.id,
                models=tenant.models,
                limits=tenant.limits,
                api_key=tenant.api_key.get_secret_value(),
            )
        except InvalidValue:
            # Another replica created it between our EXISTS and CREATE: fine, unless the key
            # clashes with another tenant's, which create() already reported.
            if not await self._r.exists(keys.tenant(tenant.id)):
                raise
            return False
        return True

    @translated
    async def _set(self, tenant_id: str, **fields: str) -> TenantRecord:
        self._cache.drop(tenant_id)
        return await self._write(tenant_id, **fields)

    async def _write(self, tenant_id: str, **fields: str) -> TenantRecord:
        if fields:
            args = [part for item in fields.items() for part in item]
            if not await self._hset_if_exists(keys=[keys.tenant(tenant_id)], args=args):
                raise NotFound(f"No tenant {tenant_id!r}.", param="tenant_id")
        return await self.get(tenant_id)

    def _merge_limits(self, limits: TenantLimits | None) -> TenantLimits:
        if limits is None:
            return self._defaults
        return self._defaults.model_copy(update=limits.model_dump(exclude_unset=True))


class _RecordCache:
    """Tenant records this replica read in the last ``ttl`` seconds (by key hash and by id).

    Minting and admission read the tenant on every call; the cache saves those Redis round
    trips. A change made on this replica drops the entry at once, one made on another replica
    arrives through the control channel (``tenant_changed``), and the TTL bounds what a lost
    message can leave behind: a disabled tenant or a rotated key stops working everywhere
    within ``ttl`` seconds at most. A TTL of 0 turns the cache off.
    """

    _MAX = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._by_key: dict[str, tuple[float, TenantRecord]] = {}
        self._by_id: dict[str, tuple[float, TenantRecord]] = {}

    def by_key(self, key_hash: str) -> TenantRecord | None:
        return self._fresh(self._by_key, key_hash)

    def by_id(self, tenant_id: str) -> TenantRecord | None:
        return self._fresh(self._by_id, tenant_id)

    def put(self, record: TenantRecord, key_hash: str | None = None) -> None:
        if self._ttl <= 0:
            return
        if len(self._by_key) + len(self._by_id) > self._MAX:
            self._by_key.clear()
            self._by_id.clear()
        entry = (self._clock() + self._ttl, record)
        self._by_id[record.id] = entry
        if key_hash is not None:
            self._by_key[key_hash] = entry

    def drop(self, tenant_id: str) -> None:
        self._by_id.pop(tenant_id, None)
        for key_hash in [h for h, (_, r) in self._by_key.items() if r.id == tenant_id]:
            del self._by_key[key_hash]

    def _fresh(self, table: dict[str, tuple[float, TenantRecord]], key: str) -> TenantRecord | None:
        entry = table.get(key)
        if entry is None:
            return None
        if entry[0] < self._clock():
            del table[key]
            return None
        return entry[1]
