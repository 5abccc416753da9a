"""Beta clients on a GA upstream that refuses the beta shape (OpenAI today), and GA clients on a
beta upstream (Azure preview), through the gateway's translation. Every event each client
receives validates against that SDK's own typed models for the client's protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI
from pydantic import SecretStr

from gateway.config import Credential, UpstreamConfig, UpstreamKind
from gateway.sim import SimConfig, SimServer
from gateway.sim.audio import silence
from tests.sim.support import BETA, Recorder, types_of
from tests.sim.test_sdk_conversations import BETA_SHAPE, GA_SHAPE, converse
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

# Both figures shown by the tenant's own rate_limits.updated (requests, then tokens).
LIMITS = {"requests_per_day": 10_000, "tokens_per_minute": 10_000_000}


def _sdk(gateway: GatewayHandle, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=key, base_url=gateway.http_url + "/v1", websocket_base_url=gateway.ws_url
    )


@pytest.fixture
async def ga_gateway(redis_url: str) -> AsyncIterator[GatewayHandle]:
    """The built-in upstream: the simulator in its mode that behaves like OpenAI today (GA only,
    the beta shape refused with beta_api_shape_disabled and close 4000). Slow enough that a
    response is still streaming when the conversation's cancel arrives."""
    settings = gateway_settings(redis_url=redis_url, sim_speed=0.2, sim_refuse_beta=True)
    async with run_gateway(settings) as handle:
        yield handle


@pytest.fixture
async def beta_gateway(redis_url: str) -> AsyncIterator[GatewayHandle]:
    """An Azure preview upstream (beta protocol) served by the simulator."""
    async with SimServer(SimConfig(api_keys=("az-key",), speed=0.2, seed=5)) as sim:
        upstream = UpstreamConfig(
            name="azure-preview",
            kind=UpstreamKind.AZURE_PREVIEW,
            url=f"ws://127.0.0.1:{sim.port}/openai",
            credentials=[Credential(name="eastus2", api_key=SecretStr("az-key"))],
        )
        settings = gateway_settings(redis_url=redis_url, upstreams=[upstream])
        async with run_gateway(settings) as handle:
            yield handle


# Every WebSocket event the seed documents name (seeds/000); the WebRTC-only
# output_audio_buffer.* of seeds/001 cannot occur on a WebSocket.
SEED_CLIENT_EVENTS = {
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear", "conversation.item.create", "conversation.item.truncate",
    "conversation.item.delete", "response.create", "response.cancel",
}  # fmt: skip
SEED_SERVER_EVENTS = {
    "error", "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed", "conversation.item.truncated",
    "conversation.item.deleted", "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "response.created",
    "response.done", "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done", "response.text.delta",
    "response.text.done", "response.audio_transcript.delta", "response.audio_transcript.done",
    "response.audio.delta", "response.audio.done", "response.function_call_arguments.delta",
    "response.function_call_arguments.done", "rate_limits.updated", "conversation.created",
    "conversation.item.created", "session.created", "session.updated",
}  # fmt: skip


class SentTypes:
    """Wraps the SDK connection's send to record the client event types it sends."""

    def __init__(self, conn: object) -> None:
        self.types: set[str] = set()
        original = conn.send  # type: ignore[attr-defined]

        async def send(event: object) -> None:
            kind = event.get("type") if isinstance(event, dict) else getattr(event, "type", None)
            self.types.add(str(kind))
            await original(event)

        conn.send = send  # type: ignore[attr-defined]


async def _manual_commit_and_clear(conn: object, rec: Recorder) -> None:
    """VAD off, transcription on: commit silence (the transcription fails), then clear."""
    session = {"turn_detection": None, "input_audio_transcription": {"model": "whisper-1"}}
    await conn.session.update(session=session)  # type: ignore[attr-defined]
    await rec.until("session.updated")
    await conn.input_audio_buffer.append(audio=_b64(silence(300)))  # type: ignore[attr-defined]
    await conn.input_audio_buffer.commit()  # type: ignore[attr-defined]
    got = await rec.until("conversation.item.input_audio_transcription.failed")
    assert types_of(got)[:2] == ["input_audio_buffer.committed", "conversation.item.created"]
    failed = got[-1]
    assert failed["error"]["code"] == "audio_unintelligible"
    await conn.input_audio_buffer.append(audio=_b64(silence(200)))  # type: ignore[attr-defined]
    await conn.input_audio_buffer.clear()  # type: ignore[attr-defined]
    await rec.until("input_audio_buffer.cleared")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


async def test_beta_sdk_through_ga_upstream_that_refuses_beta(ga_gateway: GatewayHandle) -> None:
    _, key = await ga_gateway.create_tenant(name="beta-app", limits=LIMITS)
    async with (
        _sdk(ga_gateway, key) as client,
        client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn,
    ):
        sent = SentTypes(conn)
        events = await converse(conn, BETA_SHAPE)
        rec = Recorder(conn, BETA)
        await _manual_commit_and_clear(conn, rec)
        events += rec.events
    kinds = {e["type"] for e in events}
    assert sent.types >= SEED_CLIENT_EVENTS, SEED_CLIENT_EVENTS - sent.types
    assert kinds >= SEED_SERVER_EVENTS, SEED_SERVER_EVENTS - kinds
    assert not any(
        k.startswith(("response.output_text", "response.output_audio", "conversation.item.added"))
        for k in kinds
    )
    assert {"response.audio.delta", "response.text.delta", "conversation.item.created"} <= kinds


async def test_beta_secret_from_the_beta_endpoint(ga_gateway: GatewayHandle) -> None:
    _, key = await ga_gateway.create_tenant(name="beta-web", limits=LIMITS)
    async with _sdk(ga_gateway, key) as backend:
        created = await backend.beta.realtime.sessions.create(
            model="gpt-4o-realtime-preview", modalities=["text"], instructions="Short answers."
        )
    assert created.client_secret.value.startswith("ek_")
    assert created.modalities == ["text"]
    async with (
        _sdk(ga_gateway, created.client_secret.value) as front_end,
        front_end.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn,
    ):
        first = await conn.recv()
        assert first.type == "session.created"
        assert first.session.instructions == "Short answers."
        assert first.session.modalities == ["text"]


async def test_ga_sdk_through_beta_upstream(beta_gateway: GatewayHandle) -> None:
    _, key = await beta_gateway.create_tenant(name="ga-app", limits=LIMITS)
    async with (
        _sdk(beta_gateway, key) as client,
        client.realtime.connect(model="gpt-realtime") as conn,
    ):
        events = await converse(conn, GA_SHAPE)
    kinds = {e["type"] for e in events}
    assert not any(k.startswith(("response.text.", "response.audio.")) for k in kinds)
    assert "conversation.created" not in kinds
