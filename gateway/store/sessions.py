"""Live sessions: records, concurrency leases and replica heartbeats.

A lease is a member of ``{t:X}:leases`` (a sorted set) scored with its expiry on Redis' clock.
Acquiring drops expired members, counts, and adds, in one Lua script: exact across replicas.
Each replica renews the leases of its sessions from its heartbeat loop; when a replica dies its
leases simply expire within the lease TTL, with no reaper to run. The lease set is also the
tenant's live-session index, so a dead replica's sessions leave the live list by themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter
from redis.asyncio.cluster import RedisCluster

from gateway.store import keys
from gateway.store.connection import (
    LUA_HSET_IF_EXISTS,
    RedisClient,
    ScriptCall,
    run_pipelined,
    text,
    text_map,
    translated,
    with_now,
)

LIVE_RECORD_TTL_S = 7 * 86400  # a record whose replica died before ending it goes away at last
DEFAULT_RETENTION_S = 86400  # how long an ended session stays readable

# A Lua function (after the `now` prologue): take a slot in the lease set `key` for `session`
# unless `limit` (-1: none) are live. Returns granted (0|1) and the live count, including this
# session when granted. Shared with the token redeem that takes a lease (tokens.py).
LUA_ACQUIRE_LEASE = """
local function acquire_lease(key, session, limit, ttl)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local count = redis.call('ZCARD', key)
  if not redis.call('ZSCORE', key, session) then
    if limit >= 0 and count >= limit then return 0, count end
    count = count + 1
  end
  -- GT: re-acquiring never shortens a lease; the key lives as long as its longest lease.
  redis.call('ZADD', key, 'GT', now + ttl, session)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return 1, count
end
"""

# KEYS[1] leases; ARGV[1] session, ARGV[2] limit (-1: none), ARGV[3] ttl ms.
# Returns {granted 0|1, live count including this session when granted}.
ACQUIRE = with_now(
    LUA_ACQUIRE_LEASE
    + """
local granted, count = acquire_lease(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {granted, count}
"""
)

# KEYS[1] leases; ARGV[1] ttl ms, ARGV[2..] sessions. Extends the leases still present and
# returns the sessions whose lease is gone. A member that expired but was not yet dropped is
# renewed: no acquire ran since, so its slot was never given to anyone else.
_RENEW = with_now("""
local ttl = tonumber(ARGV[1])
local lost = {}
local kept = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    -- Sets, not extends: once a session runs, its lease follows the heartbeat (the longer
    -- hold taken during its admission ends here, so a dead replica's slots lapse in time).
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
    kept = kept + 1
  else
    table.insert(lost, ARGV[i])
  end
end
if kept > 0 and redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return lost
""")

# KEYS[1] a session record, KEYS[2] the pointer to its tenant; ARGV[1] ttl s, ARGV[2] tenant,
# then field/value pairs.
_START = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
return 1
"""

# KEYS[1] a zset of expiries. Drops expired members; returns the live ones.
_LIVE = with_now("""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
""")

# KEYS[1] replicas; ARGV[1] replica, ARGV[2] ttl ms.
_HEARTBEAT = with_now("""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
""")


class SessionRecord(BaseModel):
    session_id: str
    tenant_id: str
    replica_id: str
    upstream: str = ""
    credential: str = ""
    model: str = ""
    client_protocol: Literal["ga", "beta"] = "ga"
    upstream_protocol: Literal["ga", "beta"] = "ga"
    started_at: float
    ended_at: float | None = None
    client_close_code: int | None = None
    upstream_close_code: int | None = None
    close_reason: str | None = None
    client_to_upstream_events: int = 0
    upstream_to_client_events: int = 0
    client_to_upstream_bytes: int = 0
    upstream_to_client_bytes: int = 0
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    cost_micros: int = 0
    usage: dict[str, int] = {}


_IMMUTABLE = frozenset({"session_id", "tenant_id"})


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseGrant:
    granted: bool
    live: int  # sessions holding a lease, counting this one when granted


@functools.cache
def _adapter(field: str) -> TypeAdapter[Any]:
    annotation = SessionRecord.model_fields[field].annotation
    assert annotation is not None
    return TypeAdapter(annotation)


def _encode_value(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _encode(changes: Mapping[str, Any]) -> list[str]:
    """Field/value pairs for HSET, each value checked against the record's field type."""
    out: list[str] = []
    for name, value in changes.items():
        if name not in SessionRecord.model_fields or name in _IMMUTABLE:
            raise ValueError(f"not a mutable session field: {name}")
        value = _adapter(name).validate_python(value)
        if value is not None:  # None means "not set"; fields are never unset
            out += [name, _encode_value(value)]
    return out


def _decode(raw: dict[str, str]) -> SessionRecord:
    data: dict[str, Any] = dict(raw)
    if "usage" in data:
        data["usage"] = json.loads(data["usage"])
    return SessionRecord.model_validate(data)


class SessionStore:
    def __init__(
        self,
        client: RedisClient,
        *,
        lease_ttl_s: float,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._r = client
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._retention_s = int(retention_s)
        self._clock = clock
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._live = client.register_script(_LIVE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._hset_if_exists = client.register_script(LUA_HSET_IF_EXISTS)
        self._start = client.register_script(_START)
        # A Redis Cluster refuses a script whose keys live in two slots (the pointer is not
        # tagged by tenant: it is how a session is found without knowing its tenant).
        self._cluster = isinstance(client, RedisCluster)

    # --- leases --------------------------------------------------------------------------

    @translated
    async def acquire_lease(
        self, tenant_id: str, session_id: str, limit: int | None, ttl_s: float | None = None
    ) -> LeaseGrant:
        """Take a concurrency slot unless ``limit`` slots are live (None: no limit).

        Re-acquiring a lease the session already holds renews it and always succeeds.
        """
        keys.check_session_id(session_id)
        ttl_ms = self._ttl_ms(ttl_s)
        reply = await self._acquire(
            keys=[keys.leases(tenant_id)],
            args=[session_id, -1 if limit is None else limit, ttl_ms],
        )
        return LeaseGrant(granted=bool(reply[0]), live=int(reply[1]))

    @translated
    async def release_lease(self, tenant_id: str, session_id: str) -> None:
        await self._r.zrem(keys.leases(tenant_id), keys.check_session_id(session_id))

    @translated
    async def renew_leases(
        self,
        replica_id: str,
        leases: Iterable[tuple[str, str]],
        ttl_s: float | None = None,
    ) -> list[tuple[str, str]]:
        """Heartbeat of one replica: mark it alive and extend its sessions' leases.

        One round trip (a pipeline of one script per tenant). Returns the (tenant, session)
        pairs whose lease was gone (released elsewhere, or expired while this replica could
        not reach Redis): the caller decides whether to end or re-admit those sessions.
        """
        ttl_ms = self._ttl_ms(ttl_s)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant_id, session_id in leases:
            by_tenant[tenant_id].append(keys.check_session_id(session_id))
        tenants = list(by_tenant)
        calls: list[ScriptCall] = [(self._heartbeat, [keys.REPLICAS], [replica_id, ttl_ms])]
        calls += [(self._renew, [keys.leases(t)], [ttl_ms, *by_tenant[t]]) for t in tenants]
        results = await run_pipelined(self._r, calls)
        return [(t, s) for t, lost in zip(tenants, results[1:], strict=True) for s in lost]

    @translated
    async def live_count(self, tenant_id: str) -> int:
        return len(await self._live(keys=[keys.leases(tenant_id)]))

    # --- replicas ------------------------------------------------------------------------

    @translated
    async def live_replicas(self) -> list[str]:
        return sorted(await self._live(keys=[keys.REPLICAS]))

    @translated
    async def remove_replica(self, replica_id: str) -> None:
        """A replica that drained cleanly leaves the list at once."""
        await self._r.zrem(keys.REPLICAS, replica_id)

    # --- records -------------------------------------------------------------------------

    @translated
    async def start(self, record: SessionRecord) -> None:
        """Write the record of a session that holds its lease (the lease admits, not this).

        Runs for every session opened: one script call, and the fields encoded from the
        (already validated) record without validating each one again.
        """
        items = [
            part
            for name, value in record.model_dump(exclude_none=True).items()
            for part in (name, _encode_value(value))
        ]
        key = keys.session(record.tenant_id, record.session_id)
        pointer = keys.session_pointer(record.session_id)
        if not self._cluster:
            await self._start(
                keys=[key, pointer], args=[LIVE_RECORD_TTL_S, record.tenant_id, *items]
            )
            return
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(key, items=items)
        pipe.expire(key, LIVE_RECORD_TTL_S)
        pipe.set(pointer, record.tenant_id, ex=LIVE_RECORD_TTL_S)
        await pipe.execute()

    @translated
    async def update(self, tenant_id: str, session_id: str, changes: Mapping[str, Any]) -> bool:
        """Set fields (counters as absolute values, so a retry is harmless). False if gone."""
        args = _encode(changes)
        if not args:
            return True
        key = keys.session(tenant_id, session_id)
        return bool(await self._hset_if_exists(keys=[key], args=args))

    @translated
    async def end(
        self, tenant_id: str, session_id: str, changes: Mapping[str, Any] | None = None
    ) -> None:
        """Record the end (``ended_at`` defaults to now), release the lease, start retention."""
        final = {"ended_at": self._clock(), **(changes or {})}
        key = keys.session(tenant_id, session_id)
        await self._hset_if_exists(keys=[key], args=_encode(final))
        pipe = self._r.pipeline(transaction=False)
        pipe.zrem(keys.leases(tenant_id), session_id)
        pipe.expire(key, self._retention_s)
        pipe.expire(keys.session_pointer(session_id), self._retention_s)
        await pipe.execute()

    @translated
    async def get(self, tenant_id: str, session_id: str) -> SessionRecord | None:
        raw = text_map(await self._r.hgetall(keys.session(tenant_id, session_id)))
        return _decode(raw) if raw else None

    @translated
    async def find(self, session_id: str) -> SessionRecord | None:
        """A session by id alone (admin paths that do not know the tenant)."""
        tenant_id = await self._r.get(keys.session_pointer(session_id))
        return None if tenant_id is None else await self.get(text(tenant_id), session_id)

    @translated
    async def list_live(self, tenant_id: str | None = None) -> list[SessionRecord]:
        """Sessions holding a live lease, of one tenant or (``None``) of all tenants."""
        if tenant_id is None:
            tenant_ids = sorted(text(t) for t in await self._r.smembers(keys.TENANT_INDEX))
        else:
            tenant_ids = [tenant_id]
        calls: list[ScriptCall] = [(self._live, [keys.leases(t)], []) for t in tenant_ids]
        live = await run_pipelined(self._r, calls)
        pairs = [(t, s) for t, sessions in zip(tenant_ids, live, strict=True) for s in sessions]
        if not pairs:
            return []
        pipe = self._r.pipeline(transaction=False)
        for t, s in pairs:
            pipe.hgetall(keys.session(t, s))
        rows = await pipe.execute()
        return [_decode(text_map(raw)) for raw in rows if raw]

    def _ttl_ms(self, ttl_s: float | None) -> int:
        return self._lease_ttl_ms if ttl_s is None else max(1, int(ttl_s * 1000))
