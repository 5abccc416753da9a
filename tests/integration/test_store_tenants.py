"""Tenants against a real redis-server: create, authenticate, rotate, disable, bootstrap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from gateway.config import BootstrapTenant, Settings, TenantLimits
from gateway.errors import InvalidValue, NotFound, TenantDisabled, Unauthenticated
from gateway.store import Store, TenantPolicy, open_store


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    settings = Settings(redis_url=redis_url, hash_secret="test-pepper", default_models=["m1"])
    store = await open_store(settings)
    yield store
    await store.close()


async def test_create_returns_a_key_that_authenticates(store: Store) -> None:
    record, key = await store.tenants.create("Acme", tenant_id="acme")
    assert key.startswith("rgw_sk_")
    assert len(key) == len("rgw_sk_") + 43
    assert record.id == "acme"
    assert record.name == "Acme"
    assert not record.disabled
    assert record.models == ["m1"]  # configured default
    assert record.limits.max_concurrent_sessions == 100  # configured default
    assert (await store.tenants.authenticate(key)).id == "acme"
    assert await store.tenants.get("acme") == record


async def test_wrong_keys_are_refused(store: Store) -> None:
    _, key = await store.tenants.create("Acme")
    for bad in ["", key + "x", key[:-1], "rgw_sk_" + "A" * 43, "x" * 1000]:
        with pytest.raises(Unauthenticated):
            await store.tenants.authenticate(bad)


async def test_rotate_invalidates_the_old_key_at_once(store: Store) -> None:
    record, old = await store.tenants.create("Acme")
    new = await store.tenants.rotate_key(record.id)
    assert new != old
    with pytest.raises(Unauthenticated):
        await store.tenants.authenticate(old)
    assert (await store.tenants.authenticate(new)).id == record.id
    newer = await store.tenants.rotate_key(record.id)
    with pytest.raises(Unauthenticated):
        await store.tenants.authenticate(new)
    assert (await store.tenants.authenticate(newer)).id == record.id
    # Only the live key's pointer remains.
    assert len([k async for k in store.client.scan_iter("rgw:tenantkey:*")]) == 1


async def test_disable_and_enable(store: Store) -> None:
    record, key = await store.tenants.create("Acme")
    assert (await store.tenants.disable(record.id)).disabled
    with pytest.raises(TenantDisabled):
        await store.tenants.authenticate(key)
    assert not (await store.tenants.enable(record.id)).disabled
    assert (await store.tenants.authenticate(key)).id == record.id


async def test_unknown_tenant(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.tenants.get("nobody")
    with pytest.raises(NotFound):
        await store.tenants.disable("nobody")
    with pytest.raises(NotFound):
        await store.tenants.rotate_key("nobody")
    assert await store.client.exists("rgw:{t:nobody}:tenant") == 0  # no partial record
    with pytest.raises(InvalidValue):
        await store.tenants.get("bad{id}")


async def test_duplicate_id_is_refused(store: Store) -> None:
    await store.tenants.create("A", tenant_id="acme")
    with pytest.raises(InvalidValue):
        await store.tenants.create("B", tenant_id="acme")
    assert (await store.tenants.get("acme")).name == "A"


async def test_update_limits_policy_models(store: Store) -> None:
    record, _ = await store.tenants.create("Acme")
    limits = TenantLimits(max_concurrent_sessions=3, tokens_per_minute=1000)
    policy = TenantPolicy(
        allowed_origins=["https://app.example"],
        allowed_client_events=["response.create"],
        locked_fields_mode="strip",
        rate_limits_passthrough=True,
    )
    updated = await store.tenants.update(
        record.id, name="Acme 2", models=["gpt-realtime"], limits=limits, policy=policy
    )
    assert updated.name == "Acme 2"
    assert updated.models == ["gpt-realtime"]
    assert updated.limits == limits
    assert updated.policy == policy
    assert await store.tenants.get(record.id) == updated


async def test_partial_limits_take_the_defaults(store: Store) -> None:
    record, _ = await store.tenants.create("Acme", limits=TenantLimits(tokens_per_day=5))
    assert record.limits.tokens_per_day == 5
    assert record.limits.max_concurrent_sessions == 100
    assert record.limits.max_session_seconds == 3600.0


async def test_list(store: Store) -> None:
    for name in ["b", "a", "c"]:
        await store.tenants.create(name, tenant_id=name)
    assert [t.id for t in await store.tenants.list_tenants()] == ["a", "b", "c"]


async def test_bootstrap_creates_once_with_the_given_key(store: Store) -> None:
    boot = BootstrapTenant(id="demo", name="Demo", api_key=SecretStr("demo-key-123"))
    assert await store.tenants.ensure_bootstrap(boot) is True
    assert (await store.tenants.authenticate("demo-key-123")).id == "demo"
    assert await store.tenants.ensure_bootstrap(boot) is False
    assert (await store.tenants.get("demo")).limits.max_concurrent_sessions == 100


async def test_a_given_key_cannot_be_shared_by_two_tenants(store: Store) -> None:
    await store.tenants.create("A", tenant_id="a", api_key="same-key")
    with pytest.raises(InvalidValue):
        await store.tenants.create("B", tenant_id="b", api_key="same-key")
    with pytest.raises(NotFound):
        await store.tenants.get("b")
    assert (await store.tenants.authenticate("same-key")).id == "a"


async def test_a_different_pepper_does_not_authenticate(store: Store, redis_url: str) -> None:
    _, key = await store.tenants.create("Acme")
    other = await open_store(Settings(redis_url=redis_url, hash_secret="another-pepper"))
    try:
        with pytest.raises(Unauthenticated):
            await other.tenants.authenticate(key)
    finally:
        await other.close()


async def test_a_policy_written_by_a_newer_replica_still_loads(store: Store) -> None:
    record, _ = await store.tenants.create("Acme", policy=TenantPolicy(allow_system_items=False))
    assert (await store.tenants.get(record.id)).policy.allow_system_items is False
    newer = '{"locked_fields_mode":"strip","a_field_from_the_future":1}'
    await store.client.hset(f"rgw:{{t:{record.id}}}:tenant", "policy", newer)
    store.tenants.invalidate(record.id)  # written behind the cache's back
    assert (await store.tenants.get(record.id)).policy.locked_fields_mode == "strip"
