"""One code path, three backends: real Redis, the embedded in-process store, Redis Cluster.

The cluster is a single real redis-server in cluster mode owning every slot: it refuses any
script or multi-key command whose keys span two slots (CROSSSLOT), which proves the key layout
keeps each script in one slot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from gateway.config import Settings, TenantLimits
from gateway.errors import StoreUnavailable, TokenAlreadyUsed
from gateway.store import Charge, SessionRecord, Store, open_store
from tests.support.servers import RedisServer, free_port


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    # The cluster bus port defaults to port + 10000, which may not exist: give it its own.
    bus = ["--cluster-port", str(free_port())]
    server = RedisServer(
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "n.conf", *bus]
    )
    with server.running():
        client = redis.Redis(port=server.port, decode_responses=True)
        try:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "the one-node cluster did not come up"
                time.sleep(0.05)
        finally:
            client.close()
        yield f"127.0.0.1:{server.port}"


@pytest.fixture(params=["redis", "embedded", "cluster"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Store]:
    if request.param == "redis":
        settings = Settings(redis_url=redis_url, hash_secret="p")
    elif request.param == "embedded":
        settings = Settings(redis_url=None, hash_secret="p")
    else:
        url = request.getfixturevalue("cluster_url")
        settings = Settings(redis_url=url, redis_cluster=True, hash_secret="p")
    store = await open_store(settings)
    assert store.embedded is (request.param == "embedded")
    await store.ping()
    yield store
    await store.close()


async def test_one_session_end_to_end(store: Store) -> None:
    tenant, key = await store.tenants.create("Acme")
    tid = (await store.tenants.authenticate(key)).id
    assert tid == tenant.id
    secret, _ = await store.tokens.mint(tid, {"model": "gpt-realtime"})
    assert (await store.tokens.redeem(secret)).tenant_id == tid
    with pytest.raises(TokenAlreadyUsed):
        await store.tokens.redeem(secret)
    grants = await asyncio.gather(
        *(store.sessions.acquire_lease(tid, f"s{i}", 3) for i in range(10))
    )
    winners = [f"s{i}" for i, g in enumerate(grants) if g.granted]
    assert len(winners) == 3
    first = winners[0]
    await store.sessions.start(
        SessionRecord(session_id=first, tenant_id=tid, replica_id="r1", started_at=time.time())
    )
    assert [r.session_id for r in await store.sessions.list_live()] == [first]
    leases = [(tid, s) for s in winners]
    assert await store.sessions.renew_leases("r1", [*leases, ("x", "y")]) == [("x", "y")]
    assert await store.sessions.live_replicas() == ["r1"]
    await store.sessions.end(tid, first, {"client_close_code": 1000})
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
    charge = Charge(tid, "gpt-realtime", now, tokens=70, usage={"input_text": 70}, responses=1)
    assert await store.charges.charge(charge)
    assert await store.ledger.charge(charge) is False
    status = await store.quota.check(tid, TenantLimits(tokens_per_minute=70), now=now + 1)
    assert not status.allowed
    assert status.retry_after_s == 59
    (day,) = await store.ledger.read(tid, dt.date(2030, 1, 1), dt.date(2030, 1, 1))
    assert day.totals.tokens == 70
    await store.ratelimits.record("up/c1", [{"name": "tokens", "remaining": 1}], now=now)
    assert (await store.ratelimits.read(["up/c1", "up/c2"], now=now))["up/c1"]["tokens"]
    async with store.control.subscribe() as sub:
        await store.control.publish_end_tenant(tid)
        command = await sub.get(wait_s=2)
        assert command is not None
        assert command.tenant_id == tid


async def test_redeem_with_lease_is_both_or_neither(store: Store) -> None:
    """One script on Redis and the embedded store; two calls on a cluster (the token's key and
    the lease set are in different slots): the same outcomes either way."""
    tokens, sessions = store.tokens, store.sessions
    first, _ = await tokens.mint("acme", {"model": "gpt-realtime"})
    grant = await tokens.redeem_with_lease(first, "acme", "s1", 1, ttl_s=10)
    assert (grant.granted, grant.live) == (True, 1)
    with pytest.raises(TokenAlreadyUsed):
        await tokens.peek(first)
    # No slot: nothing consumed.
    second, _ = await tokens.mint("acme", {"model": "gpt-realtime"})
    grant = await tokens.redeem_with_lease(second, "acme", "s2", 1, ttl_s=10)
    assert (grant.granted, grant.live) == (False, 1)
    assert (await tokens.peek(second)).uses_left == 1
    # A used token: no lease taken.
    with pytest.raises(TokenAlreadyUsed):
        await tokens.redeem_with_lease(first, "acme", "s3", None, ttl_s=10)
    assert await sessions.live_count("acme") == 1
    await sessions.release_lease("acme", "s1")
    grant = await tokens.redeem_with_lease(second, "acme", "s2", 1, ttl_s=10)
    assert grant.granted
    # The record, written in one call where the backend allows it, reads back whole.
    record = SessionRecord(
        session_id="s2", tenant_id="acme", replica_id="r1", model="m", started_at=time.time()
    )
    await sessions.start(record)
    assert await sessions.find("s2") == record


async def test_unreachable_redis_is_store_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = await open_store(Settings(redis_url=url, hash_secret="p", redis_timeout_seconds=0.3))
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.tenants.authenticate("rgw_sk_x")
        with pytest.raises(StoreUnavailable):
            await store.tokens.redeem("ek_x")
        with pytest.raises(StoreUnavailable):
            await store.sessions.acquire_lease("t", "s", 1)
        with pytest.raises(StoreUnavailable):
            async with store.control.subscribe():
                pass
        assert await store.charges.charge(Charge("t", "m", time.time(), tokens=1)) is False
    finally:
        assert await store.close(flush_within_s=0.5) == 1
