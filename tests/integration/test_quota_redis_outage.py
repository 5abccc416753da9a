"""Issue 4: Redis stopped and restarted in the middle of a session loses no usage.

Redis runs with an append-only file (fsync on every write) on a fixed port, so the restart
keeps what was booked before the outage and the final ledger can be compared with *every*
response of the session: one before the outage, two during it (booked from the gateway's
memory when Redis is back), one after. ``quota_fail_mode`` is open, so the turns during the
outage are not refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest

from gateway.config import ModelPrice
from gateway.sim import SimConfig, SimServer
from gateway.store import ChargeBuffer
from tests.integration.test_quota_support import (
    TEXT_SESSION,
    Clock,
    Event,
    client,
    eventually,
    live_sessions,
    sim_upstream,
    text_turn,
    until_no_live_sessions,
    update_session,
    usage_json,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway
from tests.support.servers import RedisServer

SIM_KEY = "sk-sim-outage"
PRICE = {"input_text": 3, "cached_text": 1, "output_text": 13}  # micro-dollars per token


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    with server.running():
        yield server


def _cost(usage: Event) -> int:
    inp = usage["input_token_details"]
    cached = inp["cached_tokens_details"]["text_tokens"]
    return int(
        (inp["text_tokens"] - cached) * PRICE["input_text"]
        + cached * PRICE["cached_text"]
        + usage["output_token_details"]["text_tokens"] * PRICE["output_text"]
    )


async def test_redis_restart_mid_session_loses_no_usage(durable_redis: RedisServer) -> None:
    clock = Clock()
    async with SimServer(SimConfig(api_keys=(SIM_KEY,), speed=0, seed=4)) as sim:
        settings = gateway_settings(
            redis_url=durable_redis.url,
            upstreams=[sim_upstream("sim", [("c", SIM_KEY, sim.ws_url)])],
            redis_timeout_seconds=0.5,
            quota_fail_mode="open",
            prices={"gpt-realtime": ModelPrice(**PRICE)},
        )
        async with run_gateway(settings, clock) as gateway:
            assert gateway.services is not None
            buffer: ChargeBuffer = gateway.services.charges
            tenant_id, key = await gateway.create_tenant(
                name="outage", limits={"tokens_per_minute": 1_000_000, "tokens_per_day": 10_000_000}
            )
            done: list[Event] = []

            async def minute() -> int:
                assert gateway.services is not None
                return (await gateway.services.store.quota.usage(tenant_id)).tokens_minute

            async with client(gateway, key) as ws:
                (session_id,) = await _live_ids(gateway, tenant_id)
                await update_session(ws, TEXT_SESSION)
                turn = await text_turn(ws, "Before the outage")
                assert [e["rate_limits"][0]["name"] for e in turn
                        if e["type"] == "rate_limits.updated"] == ["tokens"]  # fmt: skip
                done.append(turn[-1])
                # Booked (and so in the append-only file) before Redis goes.
                await eventually(minute, done[0]["response"]["usage"]["total_tokens"])

                await asyncio.to_thread(durable_redis.stop)
                # Past the replica's budget snapshot, which would still show figures.
                await asyncio.sleep(settings.quota_cache_seconds)
                # Redis is gone: the session goes on and its turns are answered (fail open; no
                # figures can be shown) ...
                turn = await text_turn(ws, "During the outage")
                assert "rate_limits.updated" not in [e["type"] for e in turn]
                done.append(turn[-1])
                # ... for longer than a lease lives without its heartbeat ...
                await asyncio.sleep(settings.heartbeat_ttl_seconds + 0.5)
                done.append((await text_turn(ws, "Still during the outage"))[-1])
                # ... and their two charges wait in the gateway's memory.
                await eventually(lambda: _pending(buffer), 2)

                await asyncio.to_thread(durable_redis.start)
                await eventually(lambda: _pending(buffer), 0)  # written when Redis is back
                # The lease that expired meanwhile is taken back by the heartbeat.
                await eventually(lambda: _live_ids(gateway, tenant_id), [session_id])
                done.append((await text_turn(ws, "After the outage"))[-1])
            await until_no_live_sessions(gateway, tenant_id)
            assert buffer.dropped == 0

            usages = [d["response"]["usage"] for d in done]
            day = dt.datetime.fromtimestamp(clock.now, dt.UTC).date().isoformat()
            total = (await usage_json(gateway, key, day))["total"]
            assert total["tokens"] == sum(u["total_tokens"] for u in usages)
            assert total["responses"] == 4
            assert total["sessions"] == 1
            assert total["token_classes"] == {
                "input_text": sum(u["input_token_details"]["text_tokens"]
                                  - u["input_token_details"]["cached_tokens"] for u in usages),
                "cached_text": sum(u["input_token_details"]["cached_tokens"] for u in usages),
                "output_text": sum(u["output_token_details"]["text_tokens"] for u in usages),
            }  # fmt: skip
            assert total["cost_usd"] == sum(_cost(u) for u in usages) / 1_000_000
            # The per-minute window (the budget's counter) got the buffered charges too.
            assert await minute() == total["tokens"]


async def _live_ids(gateway: GatewayHandle, tenant_id: str) -> list[str]:
    return [s["session_id"] for s in await live_sessions(gateway, tenant_id)]


async def _pending(buffer: ChargeBuffer) -> int:
    await asyncio.sleep(0)
    return buffer.pending
