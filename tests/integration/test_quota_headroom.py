"""Issue 4: upstream credentials are chosen by the headroom their last ``rate_limits.updated``
reported (shared in Redis); one under the floor takes no session until its reset; when every
one is under it the upgrade gets 429 with Retry-After = the earliest reset.

One simulator per credential (``Credential.url``), each with its own budget. The tenant has
``rate_limits_passthrough`` so the client sees exactly what each simulator reported, and the
test computes the expected choice from those figures. The gateway's clock is frozen and moved
by the test, so resets are exact.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from gateway.limits.headroom import Snapshot, choose
from gateway.sim import SimConfig, SimServer
from tests.integration.test_quota_support import (
    Clock,
    Event,
    client,
    eventually,
    live_sessions,
    only,
    refused,
    sim_upstream,
    text_turn,
    url_of,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

FLOOR = 0.02
_NAMES = ("requests", "tokens")


@contextlib.asynccontextmanager
async def sims(configs: Mapping[str, SimConfig]) -> AsyncIterator[dict[str, SimServer]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = {
            name: await stack.enter_async_context(SimServer(config))
            for name, config in configs.items()
        }
        yield servers
        for server in servers.values():
            assert server.hub.internal_errors == 0


@contextlib.asynccontextmanager
async def headroom_gateway(
    redis_url: str, configs: Mapping[str, SimConfig], clock: Clock, tenant: str
) -> AsyncIterator[tuple[GatewayHandle, contextlib.AsyncExitStack, str, str]]:
    """One simulator per credential of upstream "u", a gateway on them (the headroom floor
    at FLOOR) and a tenant that sees the upstream's own figures (passthrough)."""
    async with sims(configs) as servers:
        upstream = sim_upstream(
            "u", [(name, f"sk-sim-{name}", servers[name].ws_url) for name in configs]
        )
        settings = gateway_settings(
            redis_url=redis_url, upstreams=[upstream], upstream_tokens_floor_fraction=FLOOR
        )
        async with run_gateway(settings, clock) as gateway, contextlib.AsyncExitStack() as stack:
            tenant_id, key = await gateway.create_tenant(
                name=tenant, policy={"rate_limits_passthrough": True}
            )
            yield gateway, stack, tenant_id, key


def headroom_of(limits: Sequence[Event]) -> float:
    """What the issue defines: the fraction left of the scarcer of requests and tokens."""
    return min(float(e["remaining"] / e["limit"]) for e in limits if e["name"] in _NAMES)


async def _session_turn(
    gateway: GatewayHandle, key: str, tenant_id: str, stack: contextlib.AsyncExitStack
) -> tuple[str, list[Event]]:
    """Open a session (kept open), do one text turn; (credential it got, limits reported)."""
    ws = await stack.enter_async_context(client(gateway, key))
    record = await _record_of(gateway, tenant_id, ws)
    limits = only(await text_turn(ws, "Hello there"), "rate_limits.updated")["rate_limits"]
    assert [e["name"] for e in limits] == ["requests", "tokens"]
    credential = str(record["credential"])

    async def remaining() -> dict[str, int | None]:
        return {name: r[1] for name, r in (await _recorded(gateway, f"u.{credential}")).items()}

    # Recorded in Redis (off the relay's path) before the next session is asked for.
    await eventually(remaining, {e["name"]: e["remaining"] for e in limits})
    return credential, limits


async def _credential_of_next(gateway: GatewayHandle, key: str, tenant_id: str) -> str:
    """The credential the next session gets (the session is closed again)."""
    async with client(gateway, key) as ws:
        record = await _record_of(gateway, tenant_id, ws)
    return str(record["credential"])


async def _record_of(gateway: GatewayHandle, tenant_id: str, ws: ClientConnection) -> Any:
    """The gateway's record of the session on ``ws``, by the id its upgrade answer carried
    (not by diffing live lists: a session closed just before may still be listed)."""
    session_id = ws.response.headers["x-gateway-session-id"]
    (record,) = [
        s for s in await live_sessions(gateway, tenant_id) if s["session_id"] == session_id
    ]
    return record


async def _recorded(gateway: GatewayHandle, credential: str) -> dict[str, tuple[Any, ...]]:
    assert gateway.services is not None
    seen = await gateway.services.store.ratelimits.read([credential])
    return {name: (e.limit, e.remaining, e.reset_at) for name, e in seen[credential].items()}


async def test_most_headroom_wins_and_an_exhausted_credential_waits_for_its_reset(
    redis_url: str,
) -> None:
    configs = {
        # Listed first, and about to run out: 1 % left after its first response.
        "c": SimConfig(api_keys=("sk-sim-c",), speed=0, near_exhausted_rate_limits=True,
                       reset_seconds=20),
        "b": SimConfig(api_keys=("sk-sim-b",), speed=0, tokens_limit=10_000, requests_limit=1000),
        "a": SimConfig(api_keys=("sk-sim-a",), speed=0, tokens_limit=100_000,
                       requests_limit=2000),
    }  # fmt: skip
    clock = Clock()
    async with headroom_gateway(redis_url, configs, clock, "headroom") as setup:
        gateway, stack, tenant_id, key = setup
        t0 = clock.now
        # Nothing reported yet: every credential has full headroom; the first listed wins.
        credential, limits_c = await _session_turn(gateway, key, tenant_id, stack)
        assert credential == "c"
        assert limits_c == [
            {"name": "requests", "limit": 10_000, "remaining": 100, "reset_seconds": 20.0},
            {"name": "tokens", "limit": 2_000_000, "remaining": 20_000,
             "reset_seconds": 20.0},
        ]  # fmt: skip
        assert headroom_of(limits_c) == 0.01 < FLOOR
        assert await _recorded(gateway, "u.c") == {
            "requests": (10_000, 100, t0 + 20.0),
            "tokens": (2_000_000, 20_000, t0 + 20.0),
        }

        # c is under the floor: the next session goes to b (full headroom, listed first).
        credential, limits_b = await _session_turn(gateway, key, tenant_id, stack)
        assert credential == "b"
        room_b = headroom_of(limits_b)
        assert FLOOR < room_b < 1.0
        # a has never reported (full headroom): it beats b.
        credential, limits_a = await _session_turn(gateway, key, tenant_id, stack)
        assert credential == "a"
        room_a = headroom_of(limits_a)
        # Both now reported: the one with more headroom gets every new session.
        assert room_a > room_b
        for _ in range(3):
            assert await _credential_of_next(gateway, key, tenant_id) == "a"

        # Just before c's reset it still gets nothing; at its reset its figures are void
        # and it is the one with the most headroom (full) again.
        clock.now = t0 + 20.0 - 0.001
        assert await _credential_of_next(gateway, key, tenant_id) == "a"
        clock.now = t0 + 20.0  # exactly c's recorded reset time
        assert await _credential_of_next(gateway, key, tenant_id) == "c"


async def test_all_credentials_exhausted_refuses_with_the_earliest_reset(redis_url: str) -> None:
    configs = {
        "x": SimConfig(api_keys=("sk-sim-x",), speed=0, near_exhausted_rate_limits=True,
                       reset_seconds=30),
        "y": SimConfig(api_keys=("sk-sim-y",), speed=0, near_exhausted_rate_limits=True,
                       reset_seconds=12.5),
    }  # fmt: skip
    clock = Clock()
    async with headroom_gateway(redis_url, configs, clock, "exhausted") as setup:
        gateway, stack, tenant_id, key = setup
        credential, limits_x = await _session_turn(gateway, key, tenant_id, stack)
        assert credential == "x"
        credential, limits_y = await _session_turn(gateway, key, tenant_id, stack)
        assert credential == "y"
        resets = {e["reset_seconds"] for e in limits_x} | {e["reset_seconds"] for e in limits_y}
        assert resets == {30.0, 12.5}
        assert headroom_of(limits_x) == headroom_of(limits_y) == 0.01

        # Both under the floor: refused on the upgrade, Retry-After = the earliest reset
        # (y's 12.5 s, rounded up to whole seconds).
        status, headers, body = await refused(url_of(gateway), key)
        assert (status, headers["retry-after"]) == (429, "13")
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert "Every upstream credential" in body["error"]["message"]

        clock.advance(10.0)  # 2.5 s left until y resets
        status, headers, _ = await refused(url_of(gateway), key)
        assert (status, headers["retry-after"]) == (429, "3")

        clock.advance(2.5)  # y has reset; x has not (17.5 s left)
        assert await _credential_of_next(gateway, key, tenant_id) == "y"
        assert math.isclose((await _recorded(gateway, "u.x"))["tokens"][2] - clock.now, 17.5)


@pytest.mark.parametrize(
    ("tokens", "requests", "expected_retry"),
    [
        # The scarcer limit resets first but the other one is under the floor too: the
        # credential is usable only when both have reset.
        ((1, 100, 5.0), (1, 100, 50.0), 50.0),
        ((1, 100, 50.0), (1, 100, 5.0), 50.0),
        ((1, 100, 5.0), (3, 200, 50.0), 50.0),
        # Only one limit under the floor: its reset is when the credential is usable again.
        ((1, 100, 5.0), (50, 100, 50.0), 5.0),
        ((50, 100, 5.0), (1, 100, 50.0), 50.0),
    ],
)
def test_retry_after_is_when_every_limit_under_the_floor_has_reset(
    tokens: tuple[int, int, float], requests: tuple[int, int, float], expected_retry: float
) -> None:
    """Pure: the Retry-After of 'all exhausted' must not send clients back while a limit of
    the credential is still under the floor."""
    now = 1000.0
    snap = {
        "tokens": Snapshot(limit=tokens[1], remaining=tokens[0], reset_at=now + tokens[2]),
        "requests": Snapshot(limit=requests[1], remaining=requests[0], reset_at=now + requests[2]),
    }
    decision = choose([snap], FLOOR, now)
    assert decision.index is None
    assert decision.retry_after == expected_retry
    # And at that time the credential is indeed chosen again.
    assert choose([snap], FLOOR, now + expected_retry).index == 0
