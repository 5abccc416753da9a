"""Rate limits, pacing, determinism, robustness and clean shutdown, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from gateway.sim import SimConfig, SimServer
from gateway.sim.audio import silence, speech_like
from tests.sim.conftest import Connect, raw_connector
from tests.sim.support import BETA, GA, b64, chunks, one, types_of

TEXT = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}


def limits_of(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {lim["name"]: lim for lim in one(events, "rate_limits.updated")["rate_limits"]}


async def test_rate_limits_fall_across_connections_of_a_key(raw: Connect) -> None:
    seen: list[dict[str, dict[str, Any]]] = []
    for _ in range(2):  # two connections, one budget
        async with raw() as client:
            await client.until("session.created")
            await client.send(TEXT)
            for _ in range(2):
                await client.send({"type": "response.create"})
                seen.append(limits_of(await client.until("response.done")))
    requests = [s["requests"]["remaining"] for s in seen]
    tokens = [s["tokens"]["remaining"] for s in seen]
    resets = [s["tokens"]["reset_seconds"] for s in seen]
    assert requests == [requests[0] - i for i in range(4)]
    assert tokens == sorted(tokens, reverse=True)
    assert len(set(tokens)) == 4
    assert resets == sorted(resets, reverse=True)  # counting down from reset_seconds
    assert 0 < resets[-1] <= 60


async def test_exhausted_budget_fails_the_response() -> None:
    config = SimConfig(speed=0, tokens_limit=150, requests_limit=100)
    async with SimServer(config) as server, raw_connector(server)() as client:
        await client.until("session.created")
        await client.send(TEXT)
        await client.send({"type": "response.create"})
        first = (await client.until("response.done"))[-1]["response"]
        assert first["status"] == "completed"
        statuses = []
        for _ in range(4):
            await client.send({"type": "response.create"})
            statuses.append((await client.until("response.done"))[-1]["response"])
        failed = [r for r in statuses if r["status"] == "failed"]
        assert failed, [r["status"] for r in statuses]
        error = failed[0]["status_details"]["error"]
        assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")


async def test_vad_interrupts_a_running_response() -> None:
    async with SimServer(SimConfig(speed=0.5)) as server, raw_connector(server)() as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})  # a long audio answer
        await client.until("response.output_audio.delta")
        for piece in chunks(speech_like(300, seed=1), 4800):
            await client.send({"type": "input_audio_buffer.append", "audio": b64(piece)})
        events = await client.until("response.done")
        assert "input_audio_buffer.speech_started" in types_of(events)
        response = events[-1]["response"]
        assert response["status"] == "cancelled"
        assert response["status_details"]["reason"] == "turn_detected"


async def test_g711_input_drives_vad_too(raw: Connect) -> None:
    from gateway.sim.audio import encode

    async with raw() as client:
        await client.until("session.created")
        fmt = {"format": {"type": "audio/pcmu"}}
        session = {"type": "realtime", "output_modalities": ["text"], "audio": {"input": fmt}}
        await client.send({"type": "session.update", "session": session})
        await client.until("session.updated")
        ulaw = encode(speech_like(800, rate=8000) + silence(800, rate=8000), "g711_ulaw")
        for piece in chunks(ulaw, 800):
            await client.send({"type": "input_audio_buffer.append", "audio": b64(piece)})
        events = await client.until("response.done")
        started = one(events, "input_audio_buffer.speech_started")
        stopped = one(events, "input_audio_buffer.speech_stopped")
        assert started["audio_start_ms"] == 0
        assert 900 <= stopped["audio_end_ms"] <= 1060


async def test_audio_is_paced_at_real_time_times_speed() -> None:
    speed = 0.25
    async with SimServer(SimConfig(speed=speed)) as server, raw_connector(server)() as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})
        start = time.monotonic()
        events = await client.until("response.done")
        elapsed = time.monotonic() - start
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    audio_seconds = len(audio) / 48000
    assert audio_seconds > 1.0
    assert audio_seconds * speed * 0.8 <= elapsed <= audio_seconds * speed + 1.0


def normalized(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without the fields that follow the clock (expiry time, rate-limit countdown)."""
    text = json.dumps(events)
    data: list[dict[str, Any]] = json.loads(text)

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: scrub(v) for k, v in value.items() if k not in ("expires_at", "reset_seconds")
            }
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return [scrub(e) for e in data]


async def scripted(seed: int) -> list[dict[str, Any]]:
    async with (
        SimServer(SimConfig(speed=0, seed=seed)) as server,
        raw_connector(server)() as client,
    ):
        await client.until("session.created")
        user = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
        await client.send({"type": "conversation.item.create", "item": user})
        await client.send({"type": "response.create"})
        await client.until("response.done")
        for piece in chunks(speech_like(600, seed=2) + silence(700), 4800):
            await client.send({"type": "input_audio_buffer.append", "audio": b64(piece)})
        await client.until("response.done")
        return client.events


async def test_deterministic_for_a_seed() -> None:
    first, second, other = await scripted(42), await scripted(42), await scripted(43)
    assert normalized(first) == normalized(second)
    assert normalized(first) != normalized(other)


async def test_malformed_input_never_breaks_the_session(raw: Connect, sim: SimServer) -> None:
    garbage: list[str | bytes] = [
        b"\x00\xff\xfe binary",
        "[]",
        "42",
        "null",
        '"type"',
        "[" * 5000 + "]" * 5000,
        json.dumps({"type": ["session.update"]}),
        json.dumps({"type": "session.update", "session": "not an object"}),
        json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": []}}),
        json.dumps({"type": "conversation.item.create", "item": {"type": "message"}}),
        json.dumps({"type": "conversation.item.truncate", "item_id": 1, "audio_end_ms": -1}),
        json.dumps({"type": "response.create", "response": {"input": "nope"}}),
        json.dumps({"type": "response.create", "response": {"tools": [{"type": "function"}]}}),
        json.dumps({"type": "input_audio_buffer.append", "audio": None}),
        json.dumps({"type": "input_audio_buffer.append", "audio": "AA="}),  # odd PCM16 bytes
        json.dumps({"type": "x" * 100_000}),
    ]
    async with raw() as client:
        await client.until("session.created")
        for frame in garbage:
            await client.send(frame)
            event = await client.next()
            assert event["type"] == "error", frame[:80]
        await client.send(TEXT)
        await client.send({"type": "response.create"})
        done = (await client.until("response.done"))[-1]
        assert done["response"]["status"] == "completed"
    assert sim.hub.internal_errors == 0


async def test_frames_up_to_16_mib_are_accepted(raw: Connect) -> None:
    async with raw() as client:
        await client.until("session.created")
        await client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await client.until("session.updated")
        limit = 16 * 1024 * 1024
        audio = bytes(((limit - 100) * 3 // 4) // 2 * 2)  # base64 fills the frame to ~16 MiB
        frame = json.dumps({"type": "input_audio_buffer.append", "audio": b64(audio)})
        assert limit - 200 < len(frame) <= limit
        await client.send(frame)
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.next(timeout=30)
        assert committed["type"] == "input_audio_buffer.committed"

    async def too_big() -> None:
        async with raw() as client:
            await client.send({"type": "input_audio_buffer.append", "audio": "A" * limit})
            await client.until("never")

    with pytest.raises(ConnectionClosed) as closed:
        await too_big()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big, past the limit


async def test_no_leaked_tasks() -> None:
    before = asyncio.all_tasks()
    async with SimServer(SimConfig(speed=0.2)) as server:
        open_raw = raw_connector(server)
        async with (
            AsyncOpenAI(
                api_key="sk-sim", base_url=server.http_url + "/v1", websocket_base_url=server.ws_url
            ) as client,
            client.realtime.connect(model="gpt-realtime") as conn,
        ):
            await conn.response.create()
            while json.loads(await conn.recv_bytes())["type"] != "response.created":
                pass
                # Leave in the middle of a paced response.
        async with open_raw(beta=True) as beta:
            beta.validate = BETA
            await beta.until("conversation.created")
        async with open_raw("model=gpt-realtime&sim_fault=stall_after:1") as stalled:
            stalled.validate = GA
            await stalled.send({"type": "response.create"})
            await stalled.next()
        async with asyncio.timeout(5):
            while server.live_sessions:
                await asyncio.sleep(0.01)
        # A client still connected when the simulator stops is closed (1012), not leaked.
        lingering_cm = open_raw()
        lingering = await lingering_cm.__aenter__()
        await lingering.next()
        assert len(server.hub.sessions) == 1
    with pytest.raises(ConnectionClosed) as closed:
        await lingering.ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012
    await lingering_cm.__aexit__(None, None, None)
    assert asyncio.all_tasks() == before
    assert server.hub.internal_errors == 0


async def test_a_client_that_stops_reading_then_vanishes_is_cleaned_up(sim: SimServer) -> None:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime"
    ws = await connect(url, additional_headers={"Authorization": "Bearer sk-sim"}, max_size=None)
    no_vad = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    await ws.send(json.dumps({"type": "session.update", "session": no_vad}))
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(silence(20_000))}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    await ws.recv()  # session.created; from here on the client reads nothing
    await ws.recv()
    committed = json.loads(await ws.recv())
    retrieve = json.dumps({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
    for _ in range(120):  # ~300 MB of answers: the server's outbox and socket fill up
        await ws.send(retrieve)
    await asyncio.sleep(0.3)
    assert sim.live_sessions == 1
    ws.transport.abort()
    async with asyncio.timeout(5):
        while sim.live_sessions:
            await asyncio.sleep(0.01)


async def test_out_of_band_response(raw: Connect) -> None:
    async with raw() as client:
        await client.until("session.created")
        await client.send(TEXT)
        await client.until("session.updated")
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
        params = {"conversation": "none", "metadata": {"purpose": "summary"}, "input": [item]}
        await client.send({"type": "response.create", "response": params})
        events = await client.until("response.done")
        assert "conversation.item.added" not in types_of(events)
        response = events[-1]["response"]
        assert response["conversation_id"] is None
        assert response["metadata"] == {"purpose": "summary"}
        await client.send(
            {"type": "conversation.item.retrieve", "item_id": response["output"][0]["id"]}
        )
        assert (await client.next())["error"]["code"] == "item_retrieve_invalid_item_id"


def test_run_sim_serves_until_stopped(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.support.servers import free_port, wait_for_port

    port = free_port()
    code = (
        "from gateway.sim import SimConfig, run_sim;"
        f"run_sim(SimConfig(api_keys=('sk-cli',), speed=0), '127.0.0.1', {port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=20)

        async def talk() -> str:
            from websockets.asyncio.client import connect

            url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
            async with connect(url, additional_headers={"Authorization": "Bearer sk-cli"}) as ws:
                return str(json.loads(await ws.recv())["type"])

        assert asyncio.run(talk()) == "session.created"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode in (0, -15), stderr
    assert b"simulated realtime upstream" in stderr
