"""Leases, replica heartbeats and session records against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings
from gateway.store import SessionRecord, Store, open_store


async def _open(redis_url: str, replica: str) -> Store:
    return await open_store(
        Settings(redis_url=redis_url, hash_secret="p", replica_id=replica, heartbeat_ttl_seconds=6)
    )


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores with their own connections: two gateway replicas."""
    a, b = await _open(redis_url, "replica-a"), await _open(redis_url, "replica-b")
    yield a, b
    await a.close()
    await b.close()


def _record(tenant: str, session: str, **extra: object) -> SessionRecord:
    return SessionRecord.model_validate(
        {
            "session_id": session,
            "tenant_id": tenant,
            "replica_id": "replica-a",
            "model": "gpt-realtime",
            "started_at": time.time(),
            **extra,
        }
    )


async def test_lease_limit_is_exact_under_concurrency(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    limit = 37
    calls = [(a if i % 2 else b).sessions.acquire_lease("acme", f"s{i}", limit) for i in range(200)]
    grants = await asyncio.gather(*calls)
    assert sum(g.granted for g in grants) == limit
    assert all(g.live == limit for g in grants if not g.granted)
    assert await a.sessions.live_count("acme") == limit
    # Another tenant is not affected.
    assert (await b.sessions.acquire_lease("other", "s0", 1)).granted


async def test_release_frees_a_slot_and_reacquire_is_idempotent(store_a: Store) -> None:
    sessions = store_a.sessions
    assert (await sessions.acquire_lease("acme", "s1", 2)).live == 1
    assert (await sessions.acquire_lease("acme", "s1", 2)).live == 1  # same session: renewal
    assert (await sessions.acquire_lease("acme", "s2", 2)).granted
    assert not (await sessions.acquire_lease("acme", "s3", 2)).granted
    await sessions.release_lease("acme", "s1")
    assert (await sessions.acquire_lease("acme", "s3", 2)).granted
    assert (await sessions.acquire_lease("acme", "s9", None)).granted  # no limit
    assert not (await sessions.acquire_lease("acme", "s10", 0)).granted


async def test_leases_of_a_dead_replica_expire_and_free_their_slots(
    replicas: tuple[Store, Store],
) -> None:
    a, b = replicas
    ttl = 0.5
    for i in range(3):
        assert (await a.sessions.acquire_lease("acme", f"a{i}", 4, ttl)).granted
    assert (await b.sessions.acquire_lease("acme", "b0", 4, ttl)).granted
    assert not (await b.sessions.acquire_lease("acme", "b1", 4, ttl)).granted
    # Replica a dies (stops renewing); replica b keeps renewing its own lease.
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await b.sessions.renew_leases("replica-b", [("acme", "b0")], ttl) == []
    assert await b.sessions.live_count("acme") == 1
    grants = [await b.sessions.acquire_lease("acme", f"b{i}", 4, ttl) for i in range(1, 5)]
    assert [g.granted for g in grants] == [True, True, True, False]
    # A renewal from a replica that lost its leases is told which ones are gone.
    lost = await a.sessions.renew_leases("replica-a", [("acme", "a0"), ("acme", "a1")], ttl)
    assert lost == [("acme", "a0"), ("acme", "a1")]
    assert await b.sessions.live_count("acme") == 4  # the renewal did not resurrect them


async def test_heartbeat_and_live_replicas(replicas: tuple[Store, Store]) -> None:
    a, b = replicas
    await a.sessions.renew_leases("replica-a", [], 0.3)
    await b.sessions.renew_leases("replica-b", [], 5)
    assert await a.sessions.live_replicas() == ["replica-a", "replica-b"]
    await asyncio.sleep(0.35)
    assert await a.sessions.live_replicas() == ["replica-b"]
    await b.sessions.remove_replica("replica-b")
    assert await a.sessions.live_replicas() == []


async def test_renew_many_tenants_in_one_call(store_a: Store) -> None:
    leases = [(f"t{i}", f"s{j}") for i in range(5) for j in range(4)]
    for tenant, session in leases:
        await store_a.sessions.acquire_lease(tenant, session, None)
    await store_a.sessions.release_lease("t2", "s1")
    lost = await store_a.sessions.renew_leases("replica-a", [*leases, ("t9", "s0")])
    assert lost == [("t2", "s1"), ("t9", "s0")]


async def test_renew_survives_a_script_flush(store_a: Store) -> None:
    """After a Redis restart the script cache is empty; pipelined calls must reload."""
    await store_a.sessions.acquire_lease("acme", "s1", None)
    await store_a.client.script_flush()
    assert await store_a.sessions.renew_leases("replica-a", [("acme", "s1")]) == []
    await store_a.client.script_flush()
    assert [r.session_id for r in await store_a.sessions.list_live("acme")] == []  # no record


async def test_session_record_lifecycle(store_a: Store) -> None:
    sessions = store_a.sessions
    await store_a.tenants.create("Acme", tenant_id="acme")
    await store_a.tenants.create("Other", tenant_id="other")
    assert (await sessions.acquire_lease("acme", "sess_1", 10)).granted
    assert (await sessions.acquire_lease("other", "sess_2", 10)).granted
    await sessions.start(_record("acme", "sess_1", client_protocol="beta", credential="c1"))
    await sessions.start(_record("other", "sess_2"))
    assert await sessions.update(
        "acme",
        "sess_1",
        {
            "client_to_upstream_events": 12,
            "upstream_to_client_bytes": 34567,
            "usage": {"input_text": 10, "output_audio": 90},
            "cost_micros": 1234,
            "audio_in_seconds": 1.25,
        },
    )
    got = await sessions.get("acme", "sess_1")
    assert got is not None
    assert got.client_protocol == "beta"
    assert got.credential == "c1"
    assert got.client_to_upstream_events == 12
    assert got.upstream_to_client_bytes == 34567
    assert got.usage == {"input_text": 10, "output_audio": 90}
    assert got.audio_in_seconds == 1.25
    assert got.ended_at is None
    assert await sessions.find("sess_1") == got
    assert {r.session_id for r in await sessions.list_live()} == {"sess_1", "sess_2"}
    assert [r.session_id for r in await sessions.list_live("acme")] == ["sess_1"]

    await sessions.end("acme", "sess_1", {"client_close_code": 1000, "close_reason": "bye"})
    ended = await sessions.get("acme", "sess_1")
    assert ended is not None
    assert ended.ended_at is not None
    assert ended.client_close_code == 1000
    assert ended.close_reason == "bye"
    assert [r.session_id for r in await sessions.list_live()] == ["sess_2"]
    assert 0 < await store_a.client.ttl("rgw:{t:acme}:session:sess_1") <= 86400
    assert await sessions.find("nope") is None
    assert await sessions.update("acme", "nope", {"cost_micros": 1}) is False
    with pytest.raises(ValueError, match="tenant_id"):
        await sessions.update("acme", "sess_1", {"tenant_id": "other"})


@pytest.fixture
async def store_a(redis_url: str) -> AsyncIterator[Store]:
    store = await _open(redis_url, "replica-a")
    yield store
    await store.close()
