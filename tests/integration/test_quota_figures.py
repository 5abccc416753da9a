"""Issue 4: the client only ever sees its tenant's own rate-limit figures, never the
organisation's (the upstream's), unless its tenant has ``rate_limits_passthrough``.

The simulator's budget has numbers no tenant uses (7777 requests, 888 888 tokens), so any leak
would show. The gateway's clock is frozen one second into a minute window, so every
``reset_seconds`` the gateway computes is exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.sim import SimConfig, SimServer
from tests.integration.test_quota_support import (
    TEXT_SESSION,
    Clock,
    Event,
    client,
    eventually,
    read_until,
    send,
    sim_upstream,
    text_turn,
    types_of,
    until_no_live_sessions,
    update_session,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

SIM_KEY = "sk-sim-figures"
ORG_REQUESTS, ORG_TOKENS, ORG_RESET = 7777, 888_888, 45.0
TPM, RPD = 5000, 40
TEXTS = ("Hello there", "Tell me more please", "One last question")


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    config = SimConfig(
        api_keys=(SIM_KEY,), speed=0, seed=3, requests_limit=ORG_REQUESTS,
        tokens_limit=ORG_TOKENS, reset_seconds=ORG_RESET,
    )  # fmt: skip
    async with SimServer(config) as server:
        yield server
        assert server.hub.internal_errors == 0


@pytest.fixture
async def gateway(redis_url: str, sim: SimServer) -> AsyncIterator[tuple[GatewayHandle, Clock]]:
    clock = Clock()
    settings = gateway_settings(
        redis_url=redis_url, upstreams=[sim_upstream("org", [("c", SIM_KEY, sim.ws_url)])]
    )
    async with run_gateway(settings, clock) as handle:
        yield handle, clock


async def _conversation(gateway: GatewayHandle, key: str, texts: tuple[str, ...]) -> list[Event]:
    """Text turns in one session; every event the client received."""
    events: list[Event] = []
    async with client(gateway, key) as ws:
        await update_session(ws, TEXT_SESSION)
        for text in texts:
            events += await text_turn(ws, text)
    return events


def _responses(events: list[Event]) -> list[list[Event]]:
    """The events of each response, from response.created to response.done."""
    out: list[list[Event]] = []
    inside = False
    for event in events:
        if event["type"] == "response.created":
            out.append([])
            inside = True
        if inside:
            out[-1].append(event)
        if event["type"] == "response.done":
            inside = False
    return out


def _shown(response: list[Event]) -> list[list[Event]]:
    return [e["rate_limits"] for e in response if e["type"] == "rate_limits.updated"]


async def test_tenant_sees_its_own_figures_and_never_the_upstreams(
    gateway: tuple[GatewayHandle, Clock],
) -> None:
    handle, clock = gateway
    to_day_end = round(86400 - clock.now % 86400, 3)
    tenant_id, key = await handle.create_tenant(
        name="figures", limits={"tokens_per_minute": TPM, "requests_per_day": RPD}
    )
    events = await _conversation(handle, key, TEXTS)
    await until_no_live_sessions(handle, tenant_id)
    responses = _responses(events)
    assert len(responses) == len(TEXTS)
    spent = 0
    for n, response in enumerate(responses):
        # One rate_limits.updated per response, right after response.created, showing what
        # the tenant had left when the response started (the earlier responses counted).
        assert types_of(response)[:2] == ["response.created", "rate_limits.updated"]
        assert _shown(response) == [[
            {"name": "requests", "limit": RPD, "remaining": RPD - n,
             "reset_seconds": to_day_end},
            {"name": "tokens", "limit": TPM, "remaining": TPM - spent, "reset_seconds": 59.0},
        ]]  # fmt: skip
        spent += response[-1]["response"]["usage"]["total_tokens"]

    # The gateway did see the organisation's figures (and recorded them for headroom: the
    # latest within rate_limits_write_seconds).
    services = handle.services
    assert services is not None

    async def recorded() -> tuple[int | None, ...]:
        entries = (await services.store.ratelimits.read(["org.c"]))["org.c"]
        requests, tokens = entries["requests"], entries["tokens"]
        return requests.limit, tokens.limit, requests.remaining, tokens.remaining

    await eventually(
        recorded, (ORG_REQUESTS, ORG_TOKENS, ORG_REQUESTS - len(TEXTS), ORG_TOKENS - spent)
    )
    # ... and never let any of them through.
    shown = [e for e in events if e["type"] == "rate_limits.updated"]
    numbers = {v for e in shown for entry in e["rate_limits"] for v in entry.values()}
    assert not numbers & {ORG_REQUESTS, ORG_TOKENS, ORG_REQUESTS - 1, ORG_TOKENS - spent}


async def test_tenant_without_limits_gets_no_figures_at_all(
    gateway: tuple[GatewayHandle, Clock],
) -> None:
    handle, _ = gateway
    _, key = await handle.create_tenant(name="unlimited", limits={})
    events = await _conversation(handle, key, TEXTS[:2])
    assert len(_responses(events)) == 2
    assert "rate_limits.updated" not in types_of(events)


async def test_passthrough_tenant_sees_the_upstreams_figures(
    gateway: tuple[GatewayHandle, Clock],
) -> None:
    handle, _ = gateway
    _, key = await handle.create_tenant(
        name="passthrough",
        limits={"tokens_per_minute": TPM, "requests_per_day": RPD},
        policy={"rate_limits_passthrough": True},
    )
    events = await _conversation(handle, key, TEXTS)
    spent = 0
    for n, response in enumerate(_responses(events), start=1):
        spent += response[-1]["response"]["usage"]["total_tokens"]
        ((requests, tokens),) = _shown(response)
        # The simulator's own accounting: each response reserves one request and its tokens
        # at its start, in one window shared by every session of the key.
        assert (requests["name"], requests["limit"], requests["remaining"]) == (
            "requests", ORG_REQUESTS, ORG_REQUESTS - n,
        )  # fmt: skip
        assert (tokens["name"], tokens["limit"], tokens["remaining"]) == (
            "tokens", ORG_TOKENS, ORG_TOKENS - spent,
        )  # fmt: skip
        assert 0 < requests["reset_seconds"] <= ORG_RESET


async def test_shown_tokens_figure_is_the_tightest_window(
    gateway: tuple[GatewayHandle, Clock],
) -> None:
    """With a per-minute and a per-day budget, ``tokens`` shows the one that refuses first."""
    handle, clock = gateway
    tpd = 100
    _, key = await handle.create_tenant(
        name="tight", limits={"tokens_per_minute": TPM, "tokens_per_day": tpd}
    )
    to_day_end = round(86400 - clock.now % 86400, 3)
    async with client(handle, key) as ws:
        await update_session(ws, TEXT_SESSION)
        u1 = (await text_turn(ws, "Hello there"))[-1]["response"]["usage"]["total_tokens"]
        turn2 = await text_turn(ws, "Tell me more please")
        u2 = turn2[-1]["response"]["usage"]["total_tokens"]
        assert u1 < tpd <= u1 + u2
        # The day budget is the one nearly spent (41 left, against 4941 of the minute's).
        shown = [e["rate_limits"] for e in turn2 if e["type"] == "rate_limits.updated"]
        assert shown == [
            [{"name": "tokens", "limit": tpd, "remaining": tpd - u1, "reset_seconds": to_day_end}]
        ]
        await send(ws, {"type": "response.create", "event_id": "evt_day"})
        error = (await read_until(ws, "error"))[-1]["error"]
        assert "tokens_per_day" in error["message"]
