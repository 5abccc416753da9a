"""No-loss charging across a Redis restart (a real redis-server stopped and started again)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator

import pytest

from gateway.config import Settings
from gateway.errors import StoreUnavailable
from gateway.store import Charge, open_store
from tests.support.servers import RedisServer, free_port

AT = dt.datetime(2030, 5, 6, 12, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    # appendonly: what was written before the stop must survive the restart, so that the
    # test can count everything; the server restarts on the same fixed port.
    server = RedisServer(port=free_port(), extra_args=["--appendonly", "yes"])
    with server.running():
        yield server


def _charge(i: int) -> Charge:
    return Charge("acme", "gpt-realtime", AT + i, tokens=10, cost_micros=7, responses=1)


async def _total_tokens(url: str) -> int:
    store = await open_store(Settings(redis_url=url, hash_secret="p"))
    try:
        days = await store.ledger.read("acme", dt.date(2030, 5, 6), dt.date(2030, 5, 6))
        return days[0].totals.tokens if days else 0
    finally:
        await store.close()


async def test_charges_survive_a_redis_restart(own_redis: RedisServer) -> None:
    settings = Settings(redis_url=own_redis.url, hash_secret="p", redis_timeout_seconds=0.5)
    store = await open_store(settings)
    try:
        for i in range(5):
            assert await store.charges.charge(_charge(i)) is True
        own_redis.stop()
        started = time.monotonic()
        for i in range(5, 12):
            assert await store.charges.charge(_charge(i)) is False  # kept, not raised
        assert time.monotonic() - started < 5  # an outage does not stall the caller
        assert store.charges.pending == 7
        with pytest.raises(StoreUnavailable):
            await store.ping()
        own_redis.start()
        # The background task notices by itself (no flush() call here).
        for _ in range(100):
            if store.charges.pending == 0:
                break
            await asyncio.sleep(0.05)
        assert store.charges.pending == 0
        assert await store.charges.charge(_charge(12)) is True
    finally:
        assert await store.close() == 0
    assert await _total_tokens(own_redis.url) == 13 * 10


async def test_close_flushes_what_is_pending(own_redis: RedisServer) -> None:
    settings = Settings(redis_url=own_redis.url, hash_secret="p", redis_timeout_seconds=0.5)
    store = await open_store(settings)
    await store.charges.stop()  # no background task: only close() may write them
    own_redis.stop()
    for i in range(3):
        await store.charges.charge(_charge(i))
    assert store.charges.pending == 3
    own_redis.start()
    assert await store.close() == 0
    assert await _total_tokens(own_redis.url) == 30


async def test_charges_left_when_redis_never_returns_are_reported(
    own_redis: RedisServer,
) -> None:
    settings = Settings(redis_url=own_redis.url, hash_secret="p", redis_timeout_seconds=0.3)
    store = await open_store(settings)
    own_redis.stop()
    await store.charges.charge(_charge(0))
    assert await store.close(flush_within_s=1.0) == 1
    own_redis.start()
