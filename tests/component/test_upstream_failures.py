"""The upstream dying mid-response: the client is closed with a code it can act on (and the
reason), and the usage charged so far is kept."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import orjson
import pytest

from gateway.sim import SimConfig, SimServer
from tests.component.wsclient import (
    RecordingProxy,
    bearer,
    expect_close,
    refusal,
    session,
    sim_upstream,
    text_turn,
    until,
    usage_of,
    user_text,
    ws_url,
)
from tests.support.gateway import gateway_settings, run_gateway

KEY = "sk-upstream-own"
PCM16_BYTES_PER_SECOND = 24_000 * 2


async def test_sim_fault_close_mid_response_closes_client_1011_and_keeps_usage(
    redis_url: str,
) -> None:
    """The simulator closes with 1011 after the 4th event of a response (no response.done):
    the client gets 1011 with the reason, and the audio it sent before is charged."""
    config = SimConfig(api_keys=(KEY,), speed=0.0, close_after_events=(4, 1011))
    async with SimServer(config) as sim:
        settings = gateway_settings(redis_url=redis_url, upstreams=[sim_upstream(sim.ws_url, KEY)])
        async with run_gateway(settings) as gw:
            tenant_id, key = await gw.create_tenant(name="acme")
            async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
                await until(ws, "session.created")
                no_vad = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
                await ws.send(orjson.dumps({"type": "session.update", "session": no_vad}).decode())
                await until(ws, "session.updated")
                one_second = base64.b64encode(bytes(PCM16_BYTES_PER_SECOND)).decode()
                append = {"type": "input_audio_buffer.append", "audio": one_second}
                await ws.send(orjson.dumps(append).decode())
                await ws.send(user_text("Hello?").decode())
                await ws.send('{"type":"response.create"}')
                await until(ws, "response.created")
                code, reason = await expect_close(ws)
            assert (code, reason) == (1011, "upstream_lost")
            usage = await usage_of(gw, key)
            async with gw.admin() as admin:
                listed = await admin.get("/admin/sessions", params={"tenant": tenant_id})
            assert listed.json()["data"] == []
    total = usage["total"]
    assert total["sessions"] == 1
    assert total["responses"] == 0  # the response never finished: no tokens were reported
    assert total["audio_in_seconds"] == 1.0  # what was relayed before the loss is kept


DeathFn = Callable[[RecordingProxy, SimServer], Awaitable[None]]


async def _kill_tcp(proxy: RecordingProxy, sim: SimServer) -> None:
    proxy.kill()


async def _close_1011(proxy: RecordingProxy, sim: SimServer) -> None:
    for conn in proxy.connections:
        if conn.downstream is not None:
            await conn.downstream.close(1011, "upstream crashed")


async def _shutdown(proxy: RecordingProxy, sim: SimServer) -> None:
    await sim.__aexit__(None, None, None)  # going away: close 1012 to every connection


@pytest.mark.parametrize(
    ("death", "upstream_code"),
    [(_kill_tcp, 1006), (_close_1011, 1011), (_shutdown, 1012)],
    ids=["connection-lost", "close-1011", "upstream-shutdown"],
)
async def test_upstream_dying_mid_response_keeps_earlier_turns(
    redis_url: str, death: DeathFn, upstream_code: int
) -> None:
    sim = SimServer(SimConfig(api_keys=(KEY,), speed=0.3))  # paced audio: time to die mid-way
    await sim.__aenter__()
    try:
        async with RecordingProxy(sim.http_url) as proxy:
            settings = gateway_settings(
                redis_url=redis_url, upstreams=[sim_upstream(proxy.ws_url, KEY)]
            )
            async with run_gateway(settings) as gw:
                tenant_id, key = await gw.create_tenant(name="acme")
                async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
                    await until(ws, "session.created")
                    first = await text_turn(ws, "A first, complete turn.")
                    assert first["response"]["status"] == "completed"
                    await ws.send(user_text("A second one, please.").decode())
                    await ws.send('{"type":"response.create"}')
                    await until(ws, "response.output_audio.delta")
                    await death(proxy, sim)
                    code, reason = await expect_close(ws)
                assert (code, reason) == (1011, "upstream_lost")
                usage = await usage_of(gw, key)
                assert gw.services is not None
                assert await gw.services.store.sessions.list_live(tenant_id) == []
                if upstream_code != 1012:
                    # The upstream is still there: the next session works.
                    async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
                        await until(ws, "session.created")
                else:
                    refused = await refusal(ws_url(gw), additional_headers=bearer(key))
                    assert (refused.status, refused.error["code"]) == (502, "upstream_unavailable")
    finally:
        await sim.__aexit__(None, None, None)
    total = usage["total"]
    assert total["tokens"] == first["response"]["usage"]["total_tokens"]
    assert total["responses"] == 1
    assert total["sessions"] == 1
    assert total["audio_out_seconds"] > 0
