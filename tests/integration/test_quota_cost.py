"""Issue 4: the cost booked in the ledger (and shown by ``GET /v1/usage``) matches a hand
computation from the usage in the ``response.done`` events the client received and the
configured price table, for a scripted conversation whose later turns have cached text and
cached audio tokens.

Prices are whole dollars per million tokens, one distinct price per class: one token of a class
then costs exactly that many micro-dollars, so the expectation is exact integer arithmetic and
any token booked in the wrong class (or twice, cached and uncached) changes the total.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import ModelPrice
from gateway.sim import SimConfig, SimServer
from tests.integration.test_quota_support import (
    TEXT_SESSION,
    VAD_AUDIO_SESSION,
    Clock,
    Event,
    client,
    read_until,
    sim_upstream,
    speak,
    text_turn,
    until_no_live_sessions,
    update_session,
    usage_json,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

SIM_KEY = "sk-sim-cost"
# USD per 1M tokens = micro-dollars per token.
PRICE = {"input_text": 3, "input_audio": 37, "cached_text": 1, "cached_audio": 7,
         "output_text": 13, "output_audio": 71}  # fmt: skip
PCM16_BYTES_PER_S = 48_000


@pytest.fixture
async def gateway(redis_url: str) -> AsyncIterator[tuple[GatewayHandle, Clock]]:
    clock = Clock()
    async with SimServer(SimConfig(api_keys=(SIM_KEY,), speed=0, seed=9)) as sim:
        settings = gateway_settings(
            redis_url=redis_url,
            upstreams=[sim_upstream("sim", [("c", SIM_KEY, sim.ws_url)])],
            prices={"gpt-realtime": ModelPrice(**PRICE)},
        )
        async with run_gateway(settings, clock) as handle:
            yield handle, clock
        assert sim.hub.internal_errors == 0


def classes(usage: Event) -> dict[str, int]:
    """The priced classes of one response.done usage, by hand: cached tokens are reported
    inside text_tokens/audio_tokens, so the uncached part is the difference."""
    inp, out = usage["input_token_details"], usage["output_token_details"]
    cached = inp["cached_tokens_details"]
    return {
        "input_text": inp["text_tokens"] - cached["text_tokens"],
        "input_audio": inp["audio_tokens"] - cached["audio_tokens"],
        "cached_text": cached["text_tokens"],
        "cached_audio": cached["audio_tokens"],
        "output_text": out["text_tokens"],
        "output_audio": out["audio_tokens"],
    }


async def test_ledger_cost_matches_a_hand_computation_with_cached_tokens(
    gateway: tuple[GatewayHandle, Clock],
) -> None:
    handle, clock = gateway
    tenant_id, key = await handle.create_tenant(name="cost")
    done: list[Event] = []
    audio_out_bytes = 0
    async with client(handle, key) as ws:
        await update_session(ws, TEXT_SESSION)
        done.append((await text_turn(ws, "Hello there"))[-1])
        done.append((await text_turn(ws, "Tell me more please"))[-1])
        # A spoken turn (server VAD) answered in audio, then a text turn whose cached prefix
        # holds that audio.
        await update_session(ws, VAD_AUDIO_SESSION)
        await speak(ws)
        for events in (await read_until(ws, "response.done"), await text_turn(ws, "And now?")):
            audio_out_bytes += sum(
                len(base64.b64decode(e["delta"]))
                for e in events
                if e["type"] == "response.output_audio.delta"
            )
            done.append(events[-1])
    await until_no_live_sessions(handle, tenant_id)
    usages = [d["response"]["usage"] for d in done]
    assert [d["response"]["status"] for d in done] == ["completed"] * 4

    expected = {name: sum(classes(u)[name] for u in usages) for name in PRICE}
    # The script covers every class, cached text and cached audio included.
    assert all(expected[name] > 0 for name in PRICE), expected
    cost_micros = sum(expected[name] * PRICE[name] for name in PRICE)
    tokens = sum(u["total_tokens"] for u in usages)
    assert tokens == sum(expected.values())  # every token in exactly one class

    day = dt.datetime.fromtimestamp(clock.now, dt.UTC).date().isoformat()
    body = await usage_json(handle, key, day)
    total: dict[str, Any] = body["total"]
    assert total["token_classes"] == expected
    assert total["tokens"] == tokens
    assert total["cost_usd"] == cost_micros / 1_000_000
    assert (total["responses"], total["sessions"]) == (4, 1)
    # 2.3 s of PCM16 was appended; the audio answer's deltas are the output audio.
    assert total["audio_in_seconds"] == 2.3
    assert total["audio_out_seconds"] == round(audio_out_bytes / PCM16_BYTES_PER_S, 3)
    (only_day,) = body["days"]
    assert only_day["day"] == day
    assert only_day["by_model"]["gpt-realtime"]["token_classes"] == expected
    assert only_day["by_model"]["gpt-realtime"]["cost_usd"] == cost_micros / 1_000_000

    # The operator's view agrees.
    async with handle.admin() as http:
        admin = (
            await http.get("/admin/usage", params={"tenant": tenant_id, "start": day, "end": day})
        ).json()
    assert admin["data"][0]["total"]["cost_usd"] == cost_micros / 1_000_000
