"""A raw realtime client for operations tests: every event kept, close code and reason seen.

The official SDK hides the close frame; the drain and admin tests need it, and the metrics
tests need to count exactly what was sent and received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.sim.audio import speech_like

Event = dict[str, Any]
PCM16_BYTES_PER_SECOND = 24_000 * 2


class RealtimeClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[Event] = []
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def send(self, event: Event) -> None:
        await self.ws.send(json.dumps(event))
        self.sent.append(event["type"])

    async def recv(self, timeout: float = 10.0) -> Event:
        """The next event; raises ``ConnectionClosed`` (after noting the close) at the end."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed:
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason
            raise
        event: Event = json.loads(raw)
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[Event]:
        """Events up to and including the next one of ``kind``; an error event fails."""
        seen: list[Event] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - loop.time()))
            seen.append(event)
            if event["type"] == kind:
                return seen
            if event["type"] == "error":
                raise AssertionError(f"error event while waiting for {kind}: {event}")

    async def until_closed(self, timeout: float = 10.0) -> list[Event]:
        """Every event until the gateway closes the connection."""
        seen: list[Event] = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                seen.append(await self.recv(timeout))
        return seen

    async def text_turn(self, text: str, *, modalities: list[str] | None = None) -> Event:
        """One user text message and a response; returns the response.done event."""
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
        response: Event = {"type": "response.create"}
        if modalities is not None:
            response["response"] = {"output_modalities": modalities}
        await self.send(response)
        return (await self.until("response.done"))[-1]

    async def audio_turn(self, seconds: float, *, seed: int = 1) -> Event:
        """``seconds`` of speech in 100 ms appends, a commit, a response; its response.done."""
        audio = speech_like(seconds * 1000, seed=seed)
        step = PCM16_BYTES_PER_SECOND // 10
        for start in range(0, len(audio), step):
            chunk = base64.b64encode(audio[start : start + step]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})
        await self.send({"type": "input_audio_buffer.commit"})
        await self.send({"type": "response.create"})
        return (await self.until("response.done"))[-1]


@contextlib.asynccontextmanager
async def realtime(
    ws_url: str, key: str, model: str = "gpt-realtime"
) -> AsyncIterator[RealtimeClient]:
    async with connect(
        f"{ws_url}/realtime?model={model}",
        additional_headers={"Authorization": f"Bearer {key}"},
        max_size=None,
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        yield RealtimeClient(ws)


async def refused_upgrade(
    ws_url: str, key: str, model: str = "gpt-realtime"
) -> tuple[int, Event, dict[str, str]]:
    """(status, JSON body, headers) of an upgrade the gateway must refuse."""
    try:
        async with realtime(ws_url, key, model):
            pass
    except InvalidStatus as exc:
        response = exc.response
        body = json.loads(response.body or b"{}")
        return response.status_code, body, {k.lower(): v for k, v in response.headers.raw_items()}
    raise AssertionError("the upgrade was accepted")


async def mint(http_url: str, tenant_key: str, session: Event) -> str:
    """A client secret (``ek_...``) for ``session`` through the GA endpoint."""
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
        response = await http.post(
            "/v1/realtime/client_secrets",
            json={"session": session},
            headers={"Authorization": f"Bearer {tenant_key}"},
        )
    assert response.status_code == 200, response.text
    value: str = response.json()["value"]
    return value


def audio_seconds_of(events: list[Event]) -> float:
    """Seconds of pcm16 audio in the output audio deltas among ``events``."""
    size = sum(
        len(base64.b64decode(e["delta"]))
        for e in events
        if e["type"] in ("response.output_audio.delta", "response.audio.delta")
    )
    return size / PCM16_BYTES_PER_SECOND


def usage_classes(usage: Event) -> dict[str, int]:
    """A response.done usage by token class, the way the gateway's metrics label them
    (uncached input, cached input, output; text and audio)."""
    details = usage.get("input_token_details") or {}
    cached = details.get("cached_tokens_details") or {}
    out = usage.get("output_token_details") or {}
    classes = {
        "input_text": details.get("text_tokens", 0) - cached.get("text_tokens", 0),
        "input_audio": details.get("audio_tokens", 0) - cached.get("audio_tokens", 0),
        "cached_text": cached.get("text_tokens", 0),
        "cached_audio": cached.get("audio_tokens", 0),
        "output_text": out.get("text_tokens", 0),
        "output_audio": out.get("audio_tokens", 0),
    }
    assert sum(classes.values()) == usage["total_tokens"], usage
    return classes
