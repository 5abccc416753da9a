"""A replica's budget snapshot: its own charges count at once, other replicas' within
``quota_cache_seconds``, a new minute window or day is read afresh, and a read that raced a
local charge is not kept."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings, TenantLimits
from gateway.store import Charge, Store, open_store

DAY0 = dt.datetime(2030, 1, 2, tzinfo=dt.UTC).timestamp()
LIMITS = TenantLimits(tokens_per_minute=1000, tokens_per_day=10_000)


class Ticks:
    """The snapshot's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[Store, Store, Ticks]]:
    """Two replicas' stores on one Redis; replica A's snapshot lives 5 s on a hand clock."""
    settings = Settings(redis_url=redis_url, hash_secret="p", quota_cache_seconds=5)
    a, b = await open_store(settings), await open_store(settings)
    ticks = Ticks()
    a.quota._monotonic = ticks  # the snapshot's age, without sleeping
    yield a, b, ticks
    await a.close()
    await b.close()


def _charge(at: float, tokens: int, tenant: str = "acme") -> Charge:
    return Charge(tenant, "gpt-realtime", at, tokens=tokens, audio_in_seconds=1.5, responses=1)


async def _used(store: Store, at: float, tenant: str = "acme") -> tuple[float, float]:
    status = await store.quota.check(tenant, LIMITS, now=at)
    minute, day = status.item("tokens_per_minute"), status.item("tokens_per_day")
    assert minute is not None
    assert day is not None
    return minute.used, day.used


async def test_own_charges_count_at_once_and_others_after_the_snapshot_ages(
    stores: tuple[Store, Store, Ticks],
) -> None:
    a, b, ticks = stores
    t = DAY0 + 600
    assert await _used(a, t) == (0, 0)
    # Replica A books a charge: its snapshot counts it before Redis is even asked again.
    own = _charge(t + 1, 70)
    a.quota.charged(own)
    await a.ledger.charge(own)
    assert await _used(a, t + 2) == (70, 70)
    usage = await a.quota.usage("acme", t + 2)
    assert (usage.audio_ms_day, usage.responses_day) == (1500, 1)
    # Replica B's charge is in Redis (B sees it) but not yet in A's snapshot ...
    await b.ledger.charge(_charge(t + 3, 200))
    assert await _used(b, t + 3) == (270, 270)
    assert await _used(a, t + 4) == (70, 70)
    # ... until the snapshot is older than quota_cache_seconds.
    ticks.now += 5
    assert await _used(a, t + 5) == (270, 270)


async def test_a_new_minute_window_is_read_afresh(stores: tuple[Store, Store, Ticks]) -> None:
    a, _, _ = stores
    t = DAY0 + 1200
    own = _charge(t + 10, 300)
    assert await _used(a, t) == (0, 0)
    a.quota.charged(own)
    await a.ledger.charge(own)
    assert await _used(a, t + 59) == (300, 300)
    # Same snapshot age, next window: the minute counter starts again, the day's does not.
    assert await _used(a, t + 60) == (0, 300)
    # A charge stamped in another window than the snapshot's drops the snapshot.
    late = _charge(t + 130, 5)
    a.quota.charged(late)
    await a.ledger.charge(late)
    assert await _used(a, t + 131) == (5, 305)


async def test_a_read_that_raced_a_local_charge_is_not_kept(
    stores: tuple[Store, Store, Ticks],
) -> None:
    a, _, _ = stores
    t = DAY0 + 1800
    read = asyncio.ensure_future(a.quota.usage("acme", t))
    await asyncio.sleep(0)  # the read is in flight
    own = _charge(t + 1, 40)
    a.quota.charged(own)
    await a.ledger.charge(own)
    await read  # it may or may not have seen the charge: it must not be the snapshot
    assert await _used(a, t + 2) == (40, 40)


async def test_no_cache_reads_redis_every_time(redis_url: str) -> None:
    a = await open_store(Settings(redis_url=redis_url, hash_secret="p", quota_cache_seconds=0))
    b = await open_store(Settings(redis_url=redis_url, hash_secret="p", quota_cache_seconds=0))
    try:
        t = DAY0 + 2400
        assert await _used(a, t, "solo") == (0, 0)
        await b.ledger.charge(_charge(t + 1, 9, "solo"))
        assert await _used(a, t + 2, "solo") == (9, 9)
    finally:
        await a.close()
        await b.close()
