"""No tenant key, client secret or upstream credential is ever stored in clear."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from gateway.config import BootstrapTenant, Settings
from gateway.store import Charge, SessionRecord, Store, open_store


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    store = await open_store(Settings(redis_url=redis_url, hash_secret="pepper-for-tests"))
    yield store
    await store.close()


async def _everything(store: Store) -> str:
    """Every key name and every value in Redis, as one text."""
    r = store.client
    parts: list[str] = []
    async for key in r.scan_iter("*"):
        parts.append(key)
        kind = await r.type(key)
        if kind == "string":
            parts.append(await r.get(key))
        elif kind == "hash":
            parts += [f"{k}={v}" for k, v in (await r.hgetall(key)).items()]
        elif kind == "set":
            parts += list(await r.smembers(key))
        elif kind == "zset":
            parts += [m for m, _ in await r.zrange(key, 0, -1, withscores=True)]
        else:
            raise AssertionError(f"unexpected key type {kind} for {key}")
    return "\n".join(parts)


async def test_secrets_appear_nowhere_in_redis(store: Store) -> None:
    record, key = await store.tenants.create("Acme")
    rotated = await store.tenants.rotate_key(record.id)
    await store.tenants.ensure_bootstrap(
        BootstrapTenant(id="boot", api_key=SecretStr("bootstrap-key-in-clear-4711"))
    )
    secret, _ = await store.tokens.mint(record.id, {"model": "gpt-realtime"}, max_uses=2)
    await store.tokens.redeem(secret)
    await store.tokens.refund(secret)
    used, _ = await store.tokens.mint(record.id, {})
    await store.tokens.redeem(used)
    await store.sessions.acquire_lease(record.id, "sess_1", 5)
    await store.sessions.start(
        SessionRecord(
            session_id="sess_1",
            tenant_id=record.id,
            replica_id="r",
            credential="openai/default",
            started_at=time.time(),
        )
    )
    await store.charges.charge(Charge(record.id, "gpt-realtime", time.time(), tokens=5))
    await store.ratelimits.record("openai/default", [{"name": "tokens", "remaining": 5}])

    dump = await _everything(store)
    assert record.id in dump
    assert "rgw:token:" in dump
    for clear in [key, rotated, secret, used, "bootstrap-key-in-clear-4711", "pepper-for-tests"]:
        assert clear not in dump
        assert clear[8:30] not in dump  # not even a recognisable part of it
