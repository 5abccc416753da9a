"""Fault injection, per connection (query parameter, header) and per simulator (SimConfig)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.sim import SimConfig, SimServer
from tests.sim.conftest import Connect, raw_connector
from tests.sim.support import types_of

TEXT = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}


@pytest.mark.parametrize("status", [429, 503])
async def test_refuse_the_upgrade(raw: Connect, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with raw(f"model=gpt-realtime&sim_fault=refuse:{status}"):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert response.headers["Retry-After"] == "1"
    assert "error" in json.loads(response.body or b"")


async def test_refuse_every_upgrade_from_config() -> None:
    async with SimServer(SimConfig(speed=0, refuse_status=502)) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with raw_connector(server)():
                pass
        assert refused.value.response.status_code == 502
        async with raw_connector(server)("model=gpt-realtime&sim_fault=none") as client:
            assert (await client.next())["type"] == "session.created"


async def test_close_after_k_events_of_a_response(raw: Connect) -> None:
    async with raw("model=gpt-realtime&sim_fault=close_after:3:1011") as client:
        await client.until("session.created")
        await client.send(TEXT)
        await client.until("session.updated")  # events outside responses do not count
        await client.send({"type": "response.create"})
        got = [await client.next() for _ in range(3)]
        assert types_of(got) == [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
        ]
        with pytest.raises(ConnectionClosed) as closed:
            await client.ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011


async def test_close_after_from_config_and_header() -> None:
    async with SimServer(SimConfig(speed=0, close_after_events=(1, 4001))) as server:
        open_raw = raw_connector(server)
        async with open_raw() as client:
            await client.until("session.created")
            await client.send({"type": "response.create"})
            assert (await client.next())["type"] == "response.created"
            with pytest.raises(ConnectionClosed) as closed:
                await client.ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4001
        # A header fault overrides the simulator's: closes after 2 events with 1013.
        async with open_raw(headers={"X-Sim-Fault": "close_after:2:1013"}) as client:
            await client.until("session.created")
            await client.send({"type": "response.create"})
            await client.next()
            await client.next()
            with pytest.raises(ConnectionClosed) as closed:
                await client.ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013


async def test_stall_after_k_events(raw: Connect, sim: SimServer) -> None:
    async with raw("model=gpt-realtime&sim_fault=stall_after:2") as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})
        assert types_of([await client.next(), await client.next()]) == [
            "response.created",
            "rate_limits.updated",
        ]
        with pytest.raises(TimeoutError):
            await client.next(timeout=0.3)
        await client.send({"type": "response.cancel"})  # still open, still silent
        with pytest.raises(TimeoutError):
            await client.next(timeout=0.2)
    await wait_for_no_sessions(sim)


async def test_malformed_frame_after_k_events(raw: Connect) -> None:
    async with raw("model=gpt-realtime&sim_fault=malformed_after:1") as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})
        assert (await client.next())["type"] == "response.created"
        frame = await client.ws.recv()
        with pytest.raises(json.JSONDecodeError):
            json.loads(frame)
        rest = await client.until("response.done")  # the stream goes on after it
        assert rest[0]["type"] == "rate_limits.updated"


async def test_near_exhausted_rate_limits(raw: Connect, sim: SimServer) -> None:
    async with raw("model=gpt-realtime&sim_fault=near_exhausted") as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
    limits = next(e for e in events if e["type"] == "rate_limits.updated")["rate_limits"]
    config = sim.config
    by_name = {lim["name"]: lim for lim in limits}
    assert by_name["requests"]["remaining"] <= config.requests_limit // 100
    assert by_name["tokens"]["remaining"] <= config.tokens_limit // 100
    assert by_name["tokens"]["limit"] == config.tokens_limit


async def test_fail_response(raw: Connect) -> None:
    async with raw("model=gpt-realtime&sim_fault=fail_response") as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert types_of(events) == ["response.created", "rate_limits.updated", "response.done"]
        response = events[-1]["response"]
        assert response["status"] == "failed"
        assert response["status_details"]["type"] == "failed"
        assert response["status_details"]["error"]["code"] == "server_error"


async def test_unparsable_fault_is_refused(raw: Connect) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with raw("model=gpt-realtime&sim_fault=explode:now"):
            pass
    assert refused.value.response.status_code == 400


async def wait_for_no_sessions(sim: SimServer) -> None:
    async with asyncio.timeout(5):
        while sim.live_sessions:
            await asyncio.sleep(0.01)
