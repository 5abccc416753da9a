"""Full conversations through the official openai SDK, GA and beta, every frame validated
against the SDK's typed server-event models of that protocol."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from openai import AsyncOpenAI

from gateway.sim import SimConfig, SimServer
from gateway.sim.audio import silence, speech_like
from tests.sim.support import (
    BETA,
    GA,
    Event,
    EventValidator,
    Recorder,
    check_usage,
    chunks,
    one,
    rms,
    types_of,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a place.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


@dataclass(frozen=True)
class Shape:
    protocol: str
    validator: EventValidator
    model: str
    text_delta: str
    text_done: str
    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    assistant_text: str
    assistant_audio: str

    def text_session(self) -> dict[str, Any]:
        if self.protocol == "ga":
            return {
                "type": "realtime",
                "output_modalities": ["text"],
                "instructions": "Be brief.",
                "tools": [WEATHER],
            }
        return {"modalities": ["text"], "instructions": "Be brief.", "tools": [WEATHER]}

    def audio_session(self) -> dict[str, Any]:
        vad = {"type": "server_vad", "silence_duration_ms": 300}
        if self.protocol == "ga":
            return {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {"turn_detection": vad, "transcription": {"model": "whisper-1"}}
                },
            }
        return {
            "modalities": ["audio", "text"],
            "turn_detection": vad,
            "input_audio_transcription": {"model": "whisper-1"},
        }

    def item_events(self) -> list[str]:
        if self.protocol == "ga":
            return ["conversation.item.added", "conversation.item.done"]
        return ["conversation.item.created"]


GA_SHAPE = Shape(
    "ga",
    GA,
    "gpt-realtime",
    "response.output_text.delta",
    "response.output_text.done",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "output_text",
    "output_audio",
)
BETA_SHAPE = Shape(
    "beta",
    BETA,
    "gpt-4o-realtime-preview",
    "response.text.delta",
    "response.text.done",
    "response.audio.delta",
    "response.audio.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "text",
    "audio",
)


def user(text: str) -> Any:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def squeeze(kinds: list[str]) -> list[str]:
    """Event types with runs of one delta type collapsed to one entry."""
    out: list[str] = []
    for kind in kinds:
        if not (out and out[-1] == kind and kind.endswith(".delta")):
            out.append(kind)
    return out


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    # Slow enough that a response is still running when the cancel arrives, fast enough
    # to keep the run short.
    async with SimServer(SimConfig(speed=0.2, seed=11)) as server:
        yield server


def sdk(sim: SimServer, key: str = "sk-sim") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=sim.http_url + "/v1", websocket_base_url=sim.ws_url)


async def converse(conn: Any, shape: Shape) -> list[Event]:
    rec = Recorder(conn, shape.validator)
    created = await rec.next()
    assert created["type"] == "session.created"
    if shape.protocol == "beta":
        assert (await rec.next())["type"] == "conversation.created"

    # session.update merges: instructions and tools change, the voice stays.
    await conn.session.update(session=shape.text_session())
    session = (await rec.until("session.updated"))[-1]["session"]
    assert session["tools"][0]["name"] == "get_weather"
    assert session["instructions"] == "Be brief."
    voice = session["audio"]["output"]["voice"] if shape.protocol == "ga" else session["voice"]
    assert voice == "alloy"

    first_user = await text_turn(conn, rec, shape, "Hello there, simulator")
    usage_1 = first_user["usage"]
    second = await text_turn(conn, rec, shape, "Tell me more please")
    usage_2 = second["usage"]
    assert usage_2["input_tokens"] > usage_1["input_tokens"]  # context grows
    assert usage_2["input_token_details"]["cached_tokens"] > 0  # the prefix was seen before

    await tool_round_trip(conn, rec, shape)
    audio_item = await audio_turn(conn, rec, shape)
    await truncate_and_retrieve(conn, rec, audio_item)
    await cancel(conn, rec, shape)

    # Delete the first user message; it is gone for retrieve.
    first_item_id = first_user["user_item_id"]
    await conn.conversation.item.delete(item_id=first_item_id)
    deleted = (await rec.until("conversation.item.deleted"))[-1]
    assert deleted["item_id"] == first_item_id
    await conn.conversation.item.retrieve(item_id=first_item_id, event_id="evt_gone")
    error = (await rec.until("error"))[-1]["error"]
    assert error["code"] == "item_retrieve_invalid_item_id"
    assert error["event_id"] == "evt_gone"
    return rec.events


async def text_turn(conn: Any, rec: Recorder, shape: Shape, text: str) -> dict[str, Any]:
    await conn.conversation.item.create(item=user(text))
    added = await rec.until(shape.item_events()[-1])
    assert types_of(added) == shape.item_events()
    user_item = added[0]["item"]
    assert user_item["content"] == [{"type": "input_text", "text": text}]

    await conn.response.create()
    events = await rec.until("response.done")
    expected = ["response.created", "rate_limits.updated", "response.output_item.added"]
    expected += [*shape.item_events()[:1], "response.content_part.added", shape.text_delta]
    expected += [shape.text_done, "response.content_part.done", "response.output_item.done"]
    expected += (["conversation.item.done"] if shape.protocol == "ga" else []) + ["response.done"]
    assert squeeze(types_of(events)) == expected
    streamed = "".join(e["delta"] for e in events if e["type"] == shape.text_delta)
    assert one(events, shape.text_done)["text"] == streamed
    assert text in streamed
    response = one(events, "response.done")["response"]
    assert response["status"] == "completed"
    assert response["output"][0]["content"] == [{"type": shape.assistant_text, "text": streamed}]
    assert response["id"] == one(events, "response.created")["response"]["id"]
    check_usage(response["usage"])
    limits = one(events, "rate_limits.updated")["rate_limits"]
    assert [lim["name"] for lim in limits] == ["requests", "tokens"]
    return {"usage": response["usage"], "user_item_id": user_item["id"]}


async def tool_round_trip(conn: Any, rec: Recorder, shape: Shape) -> None:
    await conn.conversation.item.create(item=user("What's the weather in Paris?"))
    await rec.until(shape.item_events()[-1])
    await conn.response.create()
    events = await rec.until("response.done")
    call = one(events, "response.done")["response"]["output"][0]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"location": "Paris"}
    args_done = one(events, "response.function_call_arguments.done")
    streamed = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    assert streamed == args_done["arguments"] == call["arguments"]
    assert args_done["call_id"] == call["call_id"]

    output = {
        "type": "function_call_output",
        "call_id": call["call_id"],
        "output": '{"temp_c": 18}',
    }
    await conn.conversation.item.create(item=output)
    await rec.until(shape.item_events()[-1])
    await conn.response.create()
    answer = one(await rec.until("response.done"), "response.done")["response"]
    assert answer["output"][0]["type"] == "message"
    assert "temp_c" in answer["output"][0]["content"][0]["text"]


async def audio_turn(conn: Any, rec: Recorder, shape: Shape) -> str:
    await conn.session.update(session=shape.audio_session())
    await rec.until("session.updated")
    audio = silence(500) + speech_like(1200, seed=3) + silence(1000)
    for piece in chunks(audio, 4800):  # 100 ms appends, like a microphone
        await conn.input_audio_buffer.append(audio=base64.b64encode(piece).decode())
    events = await rec.until("response.done")
    started = one(events, "input_audio_buffer.speech_started")
    stopped = one(events, "input_audio_buffer.speech_stopped")
    # Speech from 500 ms (minus 300 ms of prefix padding) to 1700 ms (+300 ms of silence).
    assert 190 <= started["audio_start_ms"] <= 220
    assert 1900 <= stopped["audio_end_ms"] <= 2060
    committed = one(events, "input_audio_buffer.committed")
    assert committed["item_id"] == started["item_id"] == stopped["item_id"]
    transcript = one(events, "conversation.item.input_audio_transcription.completed")
    assert transcript["item_id"] == committed["item_id"]
    assert transcript["usage"]["type"] == "duration"
    order = types_of(events)
    assert order.index("input_audio_buffer.committed") < order.index("response.created")

    pcm = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == shape.audio_delta)
    assert len(pcm) > 24000 * 2 * 0.4  # more than 0.4 s of 24 kHz PCM16
    assert rms(pcm) > 1000  # real audio energy, not silence
    said = "".join(e["delta"] for e in events if e["type"] == shape.transcript_delta)
    assert one(events, shape.transcript_done)["transcript"] == said
    response = one(events, "response.done")["response"]
    item = response["output"][0]
    assert item["content"] == [{"type": shape.assistant_audio, "transcript": said}]
    check_usage(response["usage"])
    assert response["usage"]["input_token_details"]["audio_tokens"] > 0
    assert response["usage"]["output_token_details"]["audio_tokens"] > 0
    return str(item["id"])


async def truncate_and_retrieve(conn: Any, rec: Recorder, item_id: str) -> None:
    await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=300)
    truncated = (await rec.until("conversation.item.truncated"))[-1]
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 300)
    await conn.conversation.item.retrieve(item_id=item_id)
    item = (await rec.until("conversation.item.retrieved"))[-1]["item"]
    part = item["content"][0]
    assert part["transcript"] == ""  # the unheard transcript is dropped
    assert len(base64.b64decode(part["audio"])) == 300 * 48


async def cancel(conn: Any, rec: Recorder, shape: Shape) -> None:
    await conn.response.create()
    await rec.until("response.created")
    await conn.response.cancel()
    events = await rec.until("response.done")
    response = events[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    check_usage(response["usage"])
    if response["output"]:
        assert response["output"][0]["status"] == "incomplete"
        assert one(events, "response.output_item.done")["item"]["status"] == "incomplete"
    # Nothing of the cancelled response follows its response.done.
    await conn.response.cancel(event_id="evt_late")
    error = (await rec.until("error"))[-1]["error"]
    assert (error["code"], error["event_id"]) == ("response_cancel_not_active", "evt_late")


async def test_ga_conversation_with_the_sdk(sim: SimServer) -> None:
    async with sdk(sim).realtime.connect(model="gpt-realtime") as conn:
        events = await converse(conn, GA_SHAPE)
    assert len(events) > 60
    assert not any(e["type"].startswith("response.text.") for e in events)


async def test_beta_conversation_with_the_sdk(sim: SimServer) -> None:
    async with sdk(sim).beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        events = await converse(conn, BETA_SHAPE)
    assert not any(
        e["type"].startswith(("response.output_text", "response.output_audio")) for e in events
    )
    assert not any(e["type"] == "conversation.item.added" for e in events)


async def test_ga_client_secret_opens_one_session(sim: SimServer) -> None:
    async with sdk(sim) as client:
        secret = await client.realtime.client_secrets.create(
            session={
                "type": "realtime",
                "model": "gpt-realtime",
                "instructions": "Speak like a pirate.",
                "output_modalities": ["text"],
            }
        )
    assert secret.value.startswith("ek_")
    assert secret.session.type == "realtime"
    async with sdk(sim, secret.value).realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn, GA)
        session = (await rec.next())["session"]
        assert session["instructions"] == "Speak like a pirate."
        assert session["output_modalities"] == ["text"]
        await conn.conversation.item.create(item=user("ahoy"))
        await conn.response.create()
        done = (await rec.until("response.done"))[-1]["response"]
        assert done["output"][0]["content"][0]["type"] == "output_text"
    # Spent: a second connection with the same ephemeral key is refused on the upgrade.
    with pytest.raises(Exception, match="401"):
        async with sdk(sim, secret.value).realtime.connect(model="gpt-realtime") as conn:
            await conn.recv_bytes()


async def test_beta_session_secret(sim: SimServer) -> None:
    async with sdk(sim) as client:
        created = await client.beta.realtime.sessions.create(
            model="gpt-4o-realtime-preview", modalities=["text"], instructions="Short answers."
        )
    assert created.client_secret.value.startswith("ek_")
    async with sdk(sim, created.client_secret.value).beta.realtime.connect(
        model="gpt-4o-realtime-preview"
    ) as conn:
        rec = Recorder(conn, BETA)
        session = (await rec.next())["session"]
        assert (session["instructions"], session["modalities"]) == ("Short answers.", ["text"])
