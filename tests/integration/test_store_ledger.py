"""Usage ledger, idempotent charges and quota windows (injected time, no sleeping)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings, TenantLimits
from gateway.store import Charge, Store, open_store

# 2030-01-02 00:00:00 UTC, a minute boundary and a day boundary.
DAY0 = dt.datetime(2030, 1, 2, tzinfo=dt.UTC).timestamp()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    # Charges here go straight to the ledger, as another replica's would: read them at once
    # (the replica's budget snapshot has its own tests in test_quota_cache.py).
    store = await open_store(Settings(redis_url=redis_url, hash_secret="p", quota_cache_seconds=0))
    yield store
    await store.close()


def _charge(at: float, tokens: int, model: str = "gpt-realtime", **extra: object) -> Charge:
    return Charge(
        tenant_id="acme",
        model=model,
        at=at,
        tokens=tokens,
        usage={"input_text": tokens // 4, "output_audio": tokens - tokens // 4},
        responses=1,
        **extra,  # type: ignore[arg-type]
    )


async def test_sums_per_day_and_per_model(store: Store) -> None:
    charges = [
        _charge(DAY0 + 10, 100, cost_micros=1_500, audio_in_seconds=1.1),
        _charge(DAY0 + 20, 40, model="gpt-realtime-mini", cost_micros=7),
        _charge(DAY0 + 86400 + 5, 8, cost_micros=3, audio_out_seconds=0.3333),
        Charge("acme", "gpt-realtime", DAY0 + 30, sessions=1),
    ]
    for c in charges:
        assert await store.ledger.charge(c)
    days = await store.ledger.read("acme", dt.date(2030, 1, 1), dt.date(2030, 1, 4))
    assert [d.day for d in days] == ["2030-01-02", "2030-01-03"]
    first, second = days
    assert first.totals.tokens == 140
    assert first.totals.usage == {"input_text": 25 + 10, "output_audio": 75 + 30}
    assert first.totals.cost_micros == 1_507
    assert first.totals.responses == 2
    assert first.totals.sessions == 1
    assert first.totals.audio_in_seconds == 1.1
    assert set(first.by_model) == {"gpt-realtime", "gpt-realtime-mini"}
    assert first.by_model["gpt-realtime-mini"].tokens == 40
    assert first.by_model["gpt-realtime"].cost_micros == 1_500
    assert second.totals.audio_out_seconds == 0.333  # whole milliseconds, exact sums
    assert await store.ledger.read("other", dt.date(2030, 1, 1), dt.date(2030, 1, 4)) == []


async def test_many_concurrent_charges_sum_exactly(store: Store) -> None:
    charges = [_charge(DAY0 + i % 50, 3, cost_micros=333) for i in range(300)]
    await asyncio.gather(*(store.ledger.charge(c) for c in charges))
    (day,) = await store.ledger.read("acme", dt.date(2030, 1, 2), dt.date(2030, 1, 2))
    assert day.totals.tokens == 900
    assert day.totals.cost_micros == 99_900
    assert day.totals.responses == 300


async def test_a_retried_charge_is_counted_once(store: Store) -> None:
    charge = _charge(DAY0 + 1, 50, cost_micros=10)
    assert await store.ledger.charge(charge) is True
    # The reply was lost (timeout after Redis ran the script): the buffer retries the same id.
    assert await store.ledger.charge(charge) is False
    assert await store.charges.charge(charge) is True  # applied-or-duplicate: nothing to keep
    (day,) = await store.ledger.read("acme", dt.date(2030, 1, 2), dt.date(2030, 1, 2))
    assert day.totals.tokens == 50
    assert day.totals.cost_micros == 10
    status = await store.quota.check("acme", TenantLimits(tokens_per_minute=1000), now=DAY0 + 2)
    item = status.item("tokens_per_minute")
    assert item is not None
    assert item.used == 50


async def test_bad_usage_names_are_refused_before_redis(store: Store) -> None:
    with pytest.raises(ValueError, match="usage field"):
        await store.charges.charge(Charge("acme", "m", DAY0, usage={"tokens": 5}))
    with pytest.raises(ValueError, match="usage field"):
        await store.ledger.charge(Charge("acme", "m", DAY0, usage={"a|b": 5}))
    assert store.charges.pending == 0


async def test_tokens_per_minute_window_rollover(store: Store) -> None:
    limits = TenantLimits(tokens_per_minute=100)
    t = DAY0 + 600  # start of a minute window
    assert (await store.quota.check("acme", limits, now=t)).allowed
    await store.ledger.charge(_charge(t + 5, 60))
    status = await store.quota.check("acme", limits, now=t + 10)
    assert status.allowed
    item = status.item("tokens_per_minute")
    assert item is not None
    assert item.remaining == 40
    assert item.reset_seconds == 50
    await store.ledger.charge(_charge(t + 20, 45))  # overshoots: budgets are checked, not held
    status = await store.quota.check("acme", limits, now=t + 30)
    assert not status.allowed
    assert status.retry_after_s == 30
    item = status.item("tokens_per_minute")
    assert item is not None
    assert item.remaining == 0
    assert item.exhausted
    assert (await store.quota.check("acme", limits, now=t + 59.9)).allowed is False
    status = await store.quota.check("acme", limits, now=t + 60)  # next window
    assert status.allowed
    assert status.retry_after_s is None


async def test_daily_budgets_and_the_longest_wait_wins(store: Store) -> None:
    limits = TenantLimits(tokens_per_minute=1000, tokens_per_day=300, audio_seconds_per_day=10)
    t = DAY0 + 3600
    await store.ledger.charge(_charge(t, 200, audio_in_seconds=4))
    await store.ledger.charge(_charge(t + 120, 100, audio_out_seconds=5.5))
    status = await store.quota.check("acme", limits, now=t + 130)
    assert not status.allowed
    day_item = status.item("tokens_per_day")
    audio = status.item("audio_seconds_per_day")
    assert day_item is not None
    assert day_item.exhausted
    assert audio is not None
    assert audio.used == 9.5
    assert not audio.exhausted
    assert status.retry_after_s == 86400 - 3600 - 130  # until 00:00 UTC
    assert (await store.quota.check("acme", limits, now=DAY0 + 86400)).allowed


async def test_no_limits_needs_no_redis_call(store: Store) -> None:
    status = await store.quota.check("acme", TenantLimits(), now=DAY0)
    assert status.allowed
    assert status.items == ()
