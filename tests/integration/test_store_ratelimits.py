"""Upstream rate-limit snapshots per credential."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import Settings
from gateway.store import Store, open_store
from gateway.store.ratelimits import LatestFigures, RateLimitStore

T0 = 1_900_000_000.0


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    store = await open_store(Settings(redis_url=redis_url, hash_secret="p"))
    yield store
    await store.close()


async def test_entries_expire_at_their_own_reset(store: Store) -> None:
    await store.ratelimits.record(
        "openai/key-a",
        [
            {"name": "requests", "limit": 100, "remaining": 40, "reset_seconds": 51030.103},
            {"name": "tokens", "limit": 20000, "remaining": 14080, "reset_seconds": 17.76},
        ],
        now=T0,
    )
    snap = await store.ratelimits.read(["openai/key-a", "openai/key-b"], now=T0 + 1)
    assert snap["openai/key-b"] == {}
    tokens = snap["openai/key-a"]["tokens"]
    assert (tokens.limit, tokens.remaining) == (20000, 14080)
    assert tokens.reset_at == pytest.approx(T0 + 17.76)
    assert tokens.reset_seconds(T0 + 1) == pytest.approx(16.76)
    later = await store.ratelimits.read(["openai/key-a"], now=T0 + 18)
    assert set(later["openai/key-a"]) == {"requests"}
    # The key lives as long as its longest entry.
    assert 51000 < await store.client.ttl("rgw:ratelimits:openai/key-a") <= 51031


async def test_a_new_snapshot_replaces_by_name_and_keeps_the_others(store: Store) -> None:
    cred = "azure/eastus"
    await store.ratelimits.record(
        cred, [{"name": "input_tokens", "remaining": 5, "reset_seconds": 30}], now=T0
    )
    await store.ratelimits.record(
        cred, [{"name": "tokens", "limit": 10, "remaining": 9, "reset_seconds": 2}], now=T0 + 1
    )
    await store.ratelimits.record(
        cred, [{"name": "tokens", "limit": 10, "remaining": 3, "reset_seconds": 2}], now=T0 + 2
    )
    snap = (await store.ratelimits.read([cred], now=T0 + 3))[cred]
    assert snap["tokens"].remaining == 3
    assert snap["input_tokens"].remaining == 5
    assert snap["input_tokens"].limit is None
    # A short snapshot did not shorten the key's life below the longer entry's.
    assert await store.client.ttl(f"rgw:ratelimits:{cred}") > 20


async def test_odd_payloads_are_tolerated(store: Store) -> None:
    await store.ratelimits.record(
        "c",
        [
            {"limit": 5},  # no name: ignored
            {"name": "requests"},  # no figures: kept, default reset
            {"name": "tokens", "remaining": "many", "reset_seconds": float("nan")},
            "not an object",  # type: ignore[list-item]
        ],
        now=T0,
    )
    snap = (await store.ratelimits.read(["c"], now=T0 + 1))["c"]
    assert set(snap) == {"requests", "tokens"}
    assert snap["tokens"].remaining is None
    assert snap["tokens"].reset_at == T0 + 60
    await store.ratelimits.record("c", [], now=T0)


async def test_the_key_expires_on_redis_at_the_reset(store: Store) -> None:
    await store.ratelimits.record("c", [{"name": "tokens", "remaining": 1, "reset_seconds": 0.2}])
    assert await store.client.exists("rgw:ratelimits:c")
    await asyncio.sleep(0.3)
    assert not await store.client.exists("rgw:ratelimits:c")
    assert await store.ratelimits.read(["c"]) == {"c": {}}


class CountingStore(RateLimitStore):
    """The real store, counting its writes."""

    def __init__(self, inner: RateLimitStore) -> None:
        self.inner, self.writes = inner, 0

    async def record(self, credential: str, rate_limits: Any, now: float | None = None) -> None:
        self.writes += 1
        await self.inner.record(credential, rate_limits, now=now)


def _figures(remaining: int) -> list[dict[str, Any]]:
    return [{"name": "tokens", "limit": 1000, "remaining": remaining, "reset_seconds": 30}]


async def _remaining(store: Store, credential: str) -> int | None:
    return (await store.ratelimits.read([credential]))[credential]["tokens"].remaining


async def test_figures_are_written_at_once_then_coalesced_latest_wins(store: Store) -> None:
    counting = CountingStore(store.ratelimits)
    figures = LatestFigures(counting, interval=0.2)
    figures.note("up/a", _figures(900))
    await asyncio.sleep(0.02)  # the first after a quiet spell goes at once
    assert counting.writes == 1
    assert await _remaining(store, "up/a") == 900
    for remaining in (800, 700, 600):  # a burst inside the interval: one write, the last
        figures.note("up/a", _figures(remaining))
    figures.note("up/b", _figures(50))  # another credential has its own interval
    await asyncio.sleep(0.02)
    assert counting.writes == 2
    assert await _remaining(store, "up/a") == 900
    assert await _remaining(store, "up/b") == 50
    await asyncio.sleep(0.25)
    assert counting.writes == 3
    assert await _remaining(store, "up/a") == 600


async def test_flush_writes_what_is_waiting(store: Store) -> None:
    counting = CountingStore(store.ratelimits)
    figures = LatestFigures(counting, interval=60)
    figures.note("up/c", _figures(10))
    await asyncio.sleep(0.02)
    figures.note("up/c", _figures(5))  # due in a minute
    await figures.flush()
    assert counting.writes == 2
    assert await _remaining(store, "up/c") == 5
