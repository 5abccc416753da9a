"""Ephemeral client secrets against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings
from gateway.errors import TokenAlreadyUsed, TokenExpired, Unauthenticated
from gateway.store import Store, open_store

CONFIG = {"model": "gpt-realtime", "instructions": "Be brief.", "voice": "marin"}


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    store = await open_store(Settings(redis_url=redis_url, hash_secret="test-pepper"))
    yield store
    await store.close()


async def test_mint_peek_redeem_replay(store: Store) -> None:
    secret, expires_at = await store.tokens.mint(
        "acme", CONFIG, protocol="beta", ttl_s=60, allowed_origins=["https://a.example"]
    )
    assert secret.startswith("ek_")
    assert len(secret) > 40
    assert abs(expires_at - (time.time() + 60)) < 5
    peeked = await store.tokens.peek(secret)
    assert peeked.uses_left == 1
    assert peeked.max_uses == 1
    assert (await store.tokens.peek(secret)).uses_left == 1  # peeking consumes nothing
    redeemed = await store.tokens.redeem(secret)
    assert redeemed.tenant_id == "acme"
    assert redeemed.session_config == CONFIG
    assert redeemed.protocol == "beta"
    assert redeemed.allowed_origins == ["https://a.example"]
    assert redeemed.expires_at == expires_at
    assert redeemed.uses_left == 0
    with pytest.raises(TokenAlreadyUsed):
        await store.tokens.redeem(secret)
    with pytest.raises(TokenAlreadyUsed):
        await store.tokens.peek(secret)


async def test_unknown_and_malformed(store: Store) -> None:
    for bad in ["ek_doesnotexist", "", "sk-live-123", "ek_" + "x" * 500]:
        with pytest.raises(Unauthenticated) as info:
            await store.tokens.redeem(bad)
        assert type(info.value) is Unauthenticated


async def test_expiry_on_redis_clock(store: Store) -> None:
    secret, _ = await store.tokens.mint("acme", CONFIG, ttl_s=0.3)
    assert (await store.tokens.peek(secret)).uses_left == 1
    await asyncio.sleep(0.35)
    with pytest.raises(TokenExpired):
        await store.tokens.redeem(secret)
    with pytest.raises(TokenExpired):
        await store.tokens.peek(secret)
    # The record outlives the expiry (grace) so that the answer stays "expired", not "unknown".
    ttls = [await store.client.pttl(k) async for k in store.client.scan_iter("rgw:token:*")]
    assert len(ttls) == 1
    assert ttls[0] > 60_000


async def test_max_uses(store: Store) -> None:
    secret, _ = await store.tokens.mint("acme", CONFIG, max_uses=3)
    assert [(await store.tokens.redeem(secret)).uses_left for _ in range(3)] == [2, 1, 0]
    with pytest.raises(TokenAlreadyUsed):
        await store.tokens.redeem(secret)


async def test_refund_gives_a_use_back_but_never_more(store: Store) -> None:
    secret, _ = await store.tokens.mint("acme", CONFIG, max_uses=1)
    assert await store.tokens.refund(secret) is False  # nothing used yet
    await store.tokens.redeem(secret)
    assert await store.tokens.refund(secret) is True
    assert (await store.tokens.redeem(secret)).uses_left == 0
    with pytest.raises(TokenAlreadyUsed):
        await store.tokens.redeem(secret)
    assert await store.tokens.refund("ek_unknown") is False


async def test_fifty_concurrent_redeems_of_a_single_use_token(store: Store) -> None:
    secret, _ = await store.tokens.mint("acme", CONFIG)
    results = await asyncio.gather(
        *(store.tokens.redeem(secret) for _ in range(50)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 49
    assert all(isinstance(e, TokenAlreadyUsed) for e in losers)


async def test_concurrent_redeems_from_two_replicas_respect_max_uses(
    store: Store, redis_url: str
) -> None:
    other = await open_store(Settings(redis_url=redis_url, hash_secret="test-pepper"))
    try:
        secret, _ = await store.tokens.mint("acme", CONFIG, max_uses=7)
        calls = [s.tokens.redeem(secret) for s in (store, other) for _ in range(25)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 7
    finally:
        await other.close()
