"""Commands to replicas over Redis pub/sub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings
from gateway.store import ControlCommand, Store, open_store
from gateway.store.keys import CONTROL_CHANNEL


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[list[Store]]:
    stores = [await open_store(Settings(redis_url=redis_url, hash_secret="p")) for _ in range(3)]
    yield stores
    for store in stores:
        await store.close()


async def test_every_replica_receives_each_command(stores: list[Store]) -> None:
    publisher, a, b = stores
    async with a.control.subscribe() as sub_a, b.control.subscribe() as sub_b:
        assert await publisher.control.publish_end_session("acme", "sess_1", "admin") == 2
        assert await publisher.control.publish_end_tenant("acme") == 2
        expected = [
            ControlCommand("end_session", "acme", "sess_1", "admin"),
            ControlCommand("end_tenant", "acme", None, "tenant disabled"),
        ]
        for sub in (sub_a, sub_b):
            assert [await sub.get(wait_s=2), await sub.get(wait_s=2)] == expected
            assert await sub.get(wait_s=0.05) is None


async def test_iteration_skips_malformed_messages(stores: list[Store]) -> None:
    publisher, a, _ = stores
    async with a.control.subscribe() as sub:
        for junk in ["not json", "[]", '{"action":"reboot","tenant_id":"x"}', '{"action":1}']:
            await publisher.client.publish(CONTROL_CHANNEL, junk)
        await publisher.control.publish_end_session("acme", "sess_9")

        async def first() -> ControlCommand:
            async for command in sub:
                return command
            raise AssertionError("iteration ended")

        command = await asyncio.wait_for(first(), 2)
        assert command.session_id == "sess_9"


async def test_unsubscribed_after_the_block(stores: list[Store]) -> None:
    publisher, a, _ = stores
    async with a.control.subscribe():
        pass
    assert await publisher.control.publish_end_tenant("acme") == 0
