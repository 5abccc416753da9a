"""Either side going away while frames are flowing towards it: the session ends for the reason
that happened (not as an internal error), nothing is logged as a failure, usage is kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from gateway.sim import SimConfig, SimServer
from tests.component.wsclient import (
    RecordingProxy,
    bearer,
    expect_close,
    session,
    sim_upstream,
    until,
    usage_of,
    user_text,
    ws_url,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

KEY = "sk-upstream-own"


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("gateway"):
            self.records.append(record)


@contextlib.contextmanager
def gateway_warnings() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def _live_session_id(gw: GatewayHandle, tenant_id: str) -> str:
    async with gw.admin() as admin:
        live = (await admin.get("/admin/sessions", params={"tenant": tenant_id})).json()
    # (a session that just ended may hold its lease a moment longer than its record says)
    [record] = [r for r in live["data"] if r["ended_at"] is None]
    sid: str = record["session_id"]
    return sid


async def _ended_record(gw: GatewayHandle, session_id: str) -> dict[str, object]:
    async with gw.admin() as admin, asyncio.timeout(5):
        while True:
            record: dict[str, object] = (await admin.get(f"/admin/sessions/{session_id}")).json()
            if record["ended_at"] is not None:
                return record
            await asyncio.sleep(0.02)


async def test_client_leaving_mid_response_is_a_client_close(redis_url: str) -> None:
    """The upstream pump is busy sending audio to the client when the client goes away."""
    async with SimServer(SimConfig(api_keys=(KEY,), speed=0.05)) as sim:
        settings = gateway_settings(redis_url=redis_url, upstreams=[sim_upstream(sim.ws_url, KEY)])
        async with run_gateway(settings) as gw:
            tenant_id, key = await gw.create_tenant(name="acme")
            with gateway_warnings() as warnings:
                for _ in range(5):
                    async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
                        await until(ws, "session.created")
                        sid = await _live_session_id(gw, tenant_id)
                        await ws.send(user_text("Tell me a long story.").decode())
                        await ws.send('{"type":"response.create"}')
                        await until(ws, "response.output_audio.delta")
                    record = await _ended_record(gw, sid)
                    assert record["close_reason"] == "client_closed", record
                    assert record["client_close_code"] == 1000, record
            assert [r.getMessage() for r in warnings.records] == []
            assert (await usage_of(gw, key))["total"]["audio_out_seconds"] > 0


async def test_upstream_dying_while_the_client_sends(redis_url: str) -> None:
    """The client pump is busy forwarding frames upstream when the upstream connection drops."""
    async with (
        SimServer(SimConfig(api_keys=(KEY,), speed=0.0)) as sim,
        RecordingProxy(sim.http_url) as proxy,
    ):
        settings = gateway_settings(
            redis_url=redis_url, upstreams=[sim_upstream(proxy.ws_url, KEY)]
        )
        async with run_gateway(settings) as gw:
            tenant_id, key = await gw.create_tenant(name="acme")
            with gateway_warnings() as warnings:
                async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
                    await until(ws, "session.created")
                    sid = await _live_session_id(gw, tenant_id)

                    async def keep_sending() -> None:
                        with contextlib.suppress(Exception):
                            while True:
                                await ws.send('{"type":"input_audio_buffer.clear"}')
                                await asyncio.sleep(0)

                    sender = asyncio.create_task(keep_sending())
                    await asyncio.sleep(0.2)
                    proxy.kill()
                    code, reason = await expect_close(ws)
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                assert (code, reason) == (1011, "upstream_lost")
                record = await _ended_record(gw, sid)
                assert record["close_reason"] == "upstream_lost", record
            assert [r.getMessage() for r in warnings.records] == []
