"""Graceful drain of a real `realtime-gateway serve` process, and what /readyz says.

SIGTERM during a streaming response: readiness turns false at once, new upgrades get 503, the
response in progress finishes, then the client gets an error event telling it to reconnect and
a close with 1012; the process exits within GATEWAY_DRAIN_SECONDS and the ledger in Redis holds
the whole usage of that response.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from gateway.store import open_store
from tests.support.gateway import ADMIN_KEY, GatewayProcess, gateway_settings, run_gateway
from tests.support.realtime import (
    Event,
    audio_seconds_of,
    mint,
    realtime,
    refused_upgrade,
    usage_classes,
)
from tests.support.servers import RedisServer, free_port

pytestmark = pytest.mark.timeout(60)

DRAIN_SECONDS = 8.0
PEPPER = "test-pepper-0123456789"
AUDIO_SESSION = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"]}


@pytest.fixture
def gateway_process(redis_url: str, process_log: Callable[[str], Path]) -> Iterator[GatewayProcess]:
    port = free_port()
    env = {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_HASH_SECRET": PEPPER,
        "GATEWAY_SIM_SPEED": "1",  # audio at real-time pace: the response streams for seconds
        "GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "GATEWAY_REPLICA_ID": "drain-1",
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_LOG_LEVEL": "info",
        "GATEWAY_HEARTBEAT_SECONDS": "0.5",
        "GATEWAY_HEARTBEAT_TTL_SECONDS": "2",
    }
    process = GatewayProcess(env, process_log("gateway-drain"))
    try:
        yield process.start()
    finally:
        process.stop()


async def _create_tenant(http_url: str, tenant_id: str) -> str:
    async with httpx.AsyncClient(
        base_url=http_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as admin:
        response = await admin.post("/admin/tenants", json={"id": tenant_id, "name": tenant_id})
    assert response.status_code == 201, response.text
    key: str = response.json()["api_key"]
    return key


async def _ready_status(http: httpx.AsyncClient) -> int:
    return (await http.get("/readyz")).status_code


async def test_sigterm_lets_the_response_finish_then_closes_with_1012(
    gateway_process: GatewayProcess, redis_url: str
) -> None:
    gw = gateway_process
    key = await _create_tenant(gw.http_url, "drain-t")
    token = await mint(gw.http_url, key, AUDIO_SESSION)
    late_token = await mint(gw.http_url, key, AUDIO_SESSION)
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=5) as http:
        assert await _ready_status(http) == 200

        async with realtime(gw.ws_url, token) as client:
            created = await client.recv()
            assert created["type"] == "session.created"
            session_id = await _session_id(http, "drain-t")
            await client.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Hi there, friend"}],
                    },
                }
            )
            await client.send({"type": "response.create"})
            await client.until("response.output_audio.delta")  # streaming now
            before = len(client.events)
            reader = asyncio.create_task(client.until_closed(timeout=DRAIN_SECONDS + 2))

            signalled = time.monotonic()
            gw.signal(signal.SIGTERM)

            # Readiness turns false at once, and new upgrades are refused with 503.
            while await _ready_status(http) != 503:
                assert time.monotonic() - signalled < 0.5, "/readyz still 200 after SIGTERM"
                await asyncio.sleep(0.01)
            ready = (await http.get("/readyz")).json()
            assert ready["checks"]["draining"] == "yes"
            status, body, _ = await refused_upgrade(gw.ws_url, late_token)
            assert status == 503
            assert body["error"]["code"] == "server_shutting_down"
            assert body["error"]["type"] == "server_error"
            refused_after = time.monotonic() - signalled

            after = await reader
        assert refused_after < 2.0
        assert reader.done()

    # The response in progress finished, then the error event, then close 1012.
    kinds = [e["type"] for e in after]
    assert "response.done" in kinds, kinds
    done = after[kinds.index("response.done")]
    assert done["response"]["status"] == "completed"
    assert kinds[-1] == "error", kinds[-3:]
    error = after[-1]["error"]
    assert error["code"] == "server_shutting_down"
    assert "reconnect" in error["message"].lower()
    assert client.close_code == 1012
    streamed = client.events[before - 1 :]
    assert sum(1 for e in streamed if e["type"] == "response.output_audio.delta") > 3

    # The process is gone within the drain time, cleanly.
    returncode = await asyncio.to_thread(gw.wait, DRAIN_SECONDS)
    exited_after = time.monotonic() - signalled
    assert returncode == 0
    assert exited_after < DRAIN_SECONDS, exited_after

    # The ledger holds the whole response; the session record says how it ended.
    usage = done["response"]["usage"]
    await _check_ledger(redis_url, "drain-t", session_id, usage, audio_seconds_of(client.events))
    _check_logs(gw.log_path, session_id)


async def _session_id(http: httpx.AsyncClient, tenant_id: str) -> str:
    response = await http.get(
        "/admin/sessions",
        params={"tenant": tenant_id},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200, response.text
    (session,) = response.json()["data"]
    assert session["replica_id"] == "drain-1"
    session_id: str = session["session_id"]
    return session_id


async def _check_ledger(
    redis_url: str, tenant_id: str, session_id: str, usage: Event, audio_out: float
) -> None:
    store = await open_store(Settings(redis_url=redis_url, hash_secret=PEPPER))
    try:
        today = dt.datetime.now(dt.UTC).date()
        days = await store.ledger.read(tenant_id, today - dt.timedelta(days=1), today)
        record = await store.sessions.find(session_id)
        live = await store.sessions.list_live(tenant_id)
        replicas = await store.sessions.live_replicas()
    finally:
        await store.close()
    tokens = sum(day.totals.tokens for day in days)
    responses = sum(day.totals.responses for day in days)
    sessions = sum(day.totals.sessions for day in days)
    assert (tokens, responses, sessions) == (usage["total_tokens"], 1, 1)
    classes: dict[str, int] = {}
    for day in days:
        for name, value in day.totals.usage.items():
            classes[name] = classes.get(name, 0) + value
    expected = {k: v for k, v in usage_classes(usage).items() if v}
    assert classes == expected
    audio = sum(day.totals.audio_out_seconds for day in days)
    assert math.isclose(audio, audio_out, abs_tol=0.01), (audio, audio_out)
    assert record is not None
    assert record.ended_at is not None
    assert (record.client_close_code, record.close_reason) == (1012, "server_shutting_down")
    assert live == []
    assert "drain-1" not in replicas


def _check_logs(path: Path, session_id: str) -> None:
    entries: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    messages = [e["msg"] for e in entries]
    assert "draining" in messages
    assert "drained" in messages
    (ended,) = [e for e in entries if e["msg"] == "session ended"]
    assert ended["session_id"] == session_id
    assert ended["tenant"] == "drain-t"
    assert ended["replica"] == "drain-1"
    assert ended["upstream"] == "simulator"
    assert ended["reason"] == "server_shutting_down"
    assert ended["close_code"] == 1012
    assert all(e["replica"] == "drain-1" for e in entries)
    assert not [e for e in entries if e["level"] in ("error", "critical")], entries


# --- /readyz ------------------------------------------------------------------------------------


async def test_readyz_needs_redis_an_upstream_and_no_drain(tmp_path: Path) -> None:
    redis = RedisServer().start()
    try:
        settings = gateway_settings(redis_url=redis.url, redis_timeout_seconds=0.5)
        async with run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "checks": {"redis": "ok", "upstream": "ok", "draining": "no"},
            }

            redis.stop()
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"] == "store_unavailable"
            assert (await http.get("/healthz")).status_code == 200  # alive, just not ready

            redis = RedisServer(port=redis.port).start()
            deadline = time.monotonic() + 5
            while (ready := await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                await asyncio.sleep(0.05)

            assert gw.services is not None
            await gw.services.drain(0.5)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"redis": "ok", "upstream": "ok", "draining": "yes"}
            assert (await http.get("/healthz")).status_code == 200
            _, key = await gw.create_tenant(name="late")
            status, body, _ = await refused_upgrade(gw.ws_url, key)
            assert (status, body["error"]["code"]) == (503, "server_shutting_down")
    finally:
        redis.stop()
