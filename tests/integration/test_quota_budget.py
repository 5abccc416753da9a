"""Issue 4: a tenant's per-minute token budget is enforced in the middle of a session.

A recording proxy between the gateway and the simulator shows what reached the upstream. The
gateway's wall clock is injected and frozen, so the 60 s window rolls over when the test says
so (no sleeping) and every reset time is exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from gateway.sim import SimConfig, SimServer
from tests.component.wsclient import RecordingProxy
from tests.integration.test_quota_support import (
    TEXT_SESSION,
    VAD_AUDIO_SESSION,
    Clock,
    Event,
    client,
    eventually,
    only,
    read_until,
    refused,
    send,
    sim_upstream,
    speak,
    sync,
    text_turn,
    types_of,
    update_session,
    url_of,
    user_message,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

SIM_KEY = "sk-sim-budget"
TPM = 100  # the tenant's tokens per minute


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    # Paced (audio at 0.3 x real time) so that a response is still streaming when the
    # gateway's cancel arrives; text is nearly instant.
    async with SimServer(SimConfig(api_keys=(SIM_KEY,), speed=0.3, seed=7)) as server:
        yield server
        assert server.hub.internal_errors == 0


def sent_upstream(proxy: RecordingProxy, kind: str) -> list[Event]:
    (conn,) = proxy.connections
    events = [orjson.loads(f) for f in conn.to_upstream]
    return [e for e in events if e.get("type") == kind]


def from_upstream(proxy: RecordingProxy, kind: str) -> list[Event]:
    (conn,) = proxy.connections
    events = [orjson.loads(f) for f in conn.from_upstream]
    return [e for e in events if e.get("type") == kind]


async def test_per_minute_budget_runs_out_mid_session_and_recovers_next_window(
    redis_url: str, sim: SimServer
) -> None:
    clock = Clock()
    async with RecordingProxy(sim.http_url) as proxy:
        settings = gateway_settings(
            redis_url=redis_url, upstreams=[sim_upstream("sim", [("c", SIM_KEY, proxy.ws_url)])]
        )
        async with run_gateway(settings, clock) as gateway:
            await _scenario(gateway, clock, proxy)


async def _scenario(gateway: GatewayHandle, clock: Clock, proxy: RecordingProxy) -> None:
    tenant_id, key = await gateway.create_tenant(name="budget", limits={"tokens_per_minute": TPM})
    quota = gateway.services.store.quota if gateway.services else None
    assert quota is not None

    async def minute() -> int:
        """Tokens charged in the current window (the clock's)."""
        return (await quota.usage(tenant_id)).tokens_minute

    async with client(gateway, key) as ws:
        await update_session(ws, TEXT_SESSION)

        # Window 1: two responses fit (59 + 90 tokens with this seed), the budget is then spent.
        turn1 = await text_turn(ws, "Hello there")
        u1 = turn1[-1]["response"]["usage"]["total_tokens"]
        turn2 = await text_turn(ws, "Tell me more please")
        u2 = turn2[-1]["response"]["usage"]["total_tokens"]
        assert u1 < TPM <= u1 + u2, (u1, u2)  # the scenario's premise, from the sim's figures
        # The tenant's own figures during turn 2 counted turn 1 exactly.
        shown = only(turn2, "rate_limits.updated")["rate_limits"]
        assert shown == [
            {"name": "tokens", "limit": TPM, "remaining": TPM - u1, "reset_seconds": 59.0}
        ]
        await eventually(minute, u1 + u2)

        # The next response.create is refused with the error event and never forwarded.
        await send(ws, user_message("And once more"))
        await send(ws, {"type": "response.create", "event_id": "evt_over"})
        events = await read_until(ws, "error")
        assert "response.created" not in types_of(events)
        error = events[-1]["error"]
        assert error == {
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
            "message": "This tenant is over its budget (tokens_per_minute). "
            "Try again in 59 seconds.",
            "param": None,
            "event_id": "evt_over",
        }
        await sync(ws, "sync 1")
        assert len(sent_upstream(proxy, "response.create")) == 2
        assert len(from_upstream(proxy, "response.created")) == 2
        # Over budget, a new session is refused at the upgrade, until the window's end.
        status, headers, body = await refused(url_of(gateway), key)
        assert (status, headers["retry-after"]) == (429, "59")
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert len(proxy.connections) == 1  # no upstream session was opened for it

        # A response the upstream starts by itself (server VAD) is cancelled upstream.
        await update_session(ws, VAD_AUDIO_SESSION)
        await speak(ws)
        events = await read_until(ws, "response.done")
        created = only(events, "response.created")["response"]["id"]
        kinds = types_of(events)
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("response.created")
        auto_error = only(events, "error")["error"]
        assert auto_error == {**error, "event_id": None}  # the same error, for no client event
        # The tenant's figures for it show the spent window.
        assert only(events, "rate_limits.updated")["rate_limits"] == [
            {"name": "tokens", "limit": TPM, "remaining": 0, "reset_seconds": 59.0}
        ]
        assert kinds.index("response.created") < kinds.index("error")
        done = events[-1]["response"]
        assert (done["id"], done["status"]) == (created, "cancelled")
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        cancels = sent_upstream(proxy, "response.cancel")
        assert [c.get("response_id") for c in cancels] == [created]
        u_cancelled = done["usage"]["total_tokens"]
        await eventually(minute, u1 + u2 + u_cancelled)

        # Window 2 (the clock moves 60 s): the VAD response now runs to completion ...
        clock.advance(60)
        await speak(ws, seed=4)
        events = await read_until(ws, "response.done")
        assert "error" not in types_of(events)
        done = events[-1]["response"]
        assert done["status"] == "completed"
        u_vad = done["usage"]["total_tokens"]
        assert u_vad >= TPM
        await eventually(minute, u_vad)
        # ... which spends window 2: a response.create is refused again, still not forwarded.
        await send(ws, {"type": "response.create", "event_id": "evt_over_2"})
        error = (await read_until(ws, "error"))[-1]["error"]
        assert (error["code"], error["event_id"]) == ("rate_limit_exceeded", "evt_over_2")
        await sync(ws, "sync 2")
        assert len(sent_upstream(proxy, "response.create")) == 2

        # Window 3: the client's response.create is forwarded and answered.
        clock.advance(60)
        await send(ws, {"type": "response.create", "event_id": "evt_ok"})
        events = await read_until(ws, "response.done")
        assert "error" not in types_of(events)
        assert events[-1]["response"]["status"] == "completed"
        assert len(sent_upstream(proxy, "response.create")) == 3
        assert len(sent_upstream(proxy, "response.cancel")) == 1
        u3 = events[-1]["response"]["usage"]["total_tokens"]
        await eventually(minute, u3)
