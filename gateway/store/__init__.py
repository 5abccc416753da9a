"""The state store: the only part of the gateway that imports redis.

``open_store(settings)`` returns a ``Store`` bundling one client shared by the parts below.
Every public coroutine raises ``StoreUnavailable`` (never a redis exception) when Redis cannot
be reached.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from gateway.config import Settings
from gateway.store.buffer import ChargeBuffer
from gateway.store.connection import (
    RedisClient,
    close_client,
    is_embedded,
    make_client,
    translated,
)
from gateway.store.hashing import SecretHasher
from gateway.store.ledger import Charge, DayUsage, Ledger, UsageTotals
from gateway.store.pubsub import ControlChannel, ControlCommand, ControlSubscription
from gateway.store.quota import QuotaItem, QuotaStatus, QuotaStore
from gateway.store.ratelimits import RateLimitEntry, RateLimitStore
from gateway.store.sessions import LeaseGrant, SessionRecord, SessionStore
from gateway.store.tenants import TenantPolicy, TenantRecord, TenantStore, default_limits
from gateway.store.tokens import TokenRecord, TokenStore

__all__ = [
    "Charge",
    "ChargeBuffer",
    "ControlChannel",
    "ControlCommand",
    "ControlSubscription",
    "DayUsage",
    "LeaseGrant",
    "Ledger",
    "QuotaItem",
    "QuotaStatus",
    "QuotaStore",
    "RateLimitEntry",
    "RateLimitStore",
    "SessionRecord",
    "SessionStore",
    "Store",
    "TenantPolicy",
    "TenantRecord",
    "TenantStore",
    "TokenRecord",
    "TokenStore",
    "UsageTotals",
    "open_store",
]


@dataclasses.dataclass(eq=False)
class Store:
    client: RedisClient
    tenants: TenantStore
    tokens: TokenStore
    sessions: SessionStore
    ledger: Ledger
    charges: ChargeBuffer  # book usage through this: it survives Redis outages
    quota: QuotaStore
    ratelimits: RateLimitStore
    control: ControlChannel

    @property
    def embedded(self) -> bool:
        """True for the in-process store (one replica only)."""
        return is_embedded(self.client)

    @translated
    async def ping(self) -> None:
        await self.client.ping()

    async def close(self, flush_within_s: float = 5.0) -> int:
        """Flush buffered charges (within ``flush_within_s``), then disconnect.

        Returns the number of charges that could not be written.
        """
        left = await self.charges.stop(flush_within_s)
        await close_client(self.client)
        return left


async def open_store(settings: Settings, *, clock: Callable[[], float] = time.time) -> Store:
    """Build the store; does not wait for Redis (``ping`` does), so a replica can start while
    Redis is still coming up. ``clock`` (epoch seconds) drives ledger days, quota windows and
    rate-limit resets; leases and tokens use Redis' own clock."""
    client = make_client(settings)
    hasher = SecretHasher.from_settings(settings)
    ledger = Ledger(client)
    store = Store(
        client=client,
        tenants=TenantStore(
            client,
            hasher,
            defaults=default_limits(settings),
            default_models=list(settings.default_models),
            clock=clock,
            cache_seconds=settings.tenant_cache_seconds,
        ),
        tokens=TokenStore(client, hasher),
        sessions=SessionStore(client, lease_ttl_s=settings.heartbeat_ttl_seconds, clock=clock),
        ledger=ledger,
        charges=ChargeBuffer(ledger),
        quota=QuotaStore(client, clock=clock, cache_seconds=settings.quota_cache_seconds),
        ratelimits=RateLimitStore(client, clock=clock),
        control=ControlChannel(client),
    )
    store.charges.start()
    return store
