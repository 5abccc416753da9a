"""Shared helpers of the issue-4 tests (``test_quota_*.py``): an injectable wall clock, a
gateway in front of simulators, and small WebSocket helpers. No tests in here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import httpx
import orjson
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway.config import Credential, UpstreamConfig, UpstreamKind
from gateway.sim.audio import silence, speech_like
from gateway.store.ledger import window_start
from tests.component.wsclient import TIMEOUT, bearer, recv
from tests.support.gateway import GatewayHandle

Event = dict[str, Any]


class Clock:
    """A frozen wall clock for the gateway (quota windows, ledger days, rate-limit resets).

    It starts one second into the current 60 s window (so the whole test stays in one window
    and one UTC day) and moves only when told, so every reset time is exact."""

    def __init__(self) -> None:
        self.now = float(window_start(time.time()) + 1)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sim_upstream(name: str, credentials: Sequence[tuple[str, str, str | None]]) -> UpstreamConfig:
    """One simulator-kind upstream; credentials are (name, api key, own url or None)."""
    first_url = next((url for _, _, url in credentials if url), "ws://127.0.0.1:9/v1")
    return UpstreamConfig(
        name=name,
        kind=UpstreamKind.SIM,
        url=first_url,
        credentials=[
            Credential(name=cname, api_key=SecretStr(key), url=url)
            for cname, key, url in credentials
        ],
    )


class Reachable(Protocol):
    """An in-process gateway (``GatewayHandle``) or a ``GatewayProcess``."""

    @property
    def ws_url(self) -> str: ...

    @property
    def http_url(self) -> str: ...


def url_of(gateway: Reachable, model: str = "gpt-realtime") -> str:
    return f"{gateway.ws_url}/realtime?model={model}"


@contextlib.asynccontextmanager
async def client(
    gateway: Reachable, key: str, model: str = "gpt-realtime"
) -> AsyncIterator[ClientConnection]:
    """An accepted realtime session (tenant key or client secret), its session.created read."""
    async with connect(
        url_of(gateway, model),
        additional_headers=bearer(key),
        open_timeout=TIMEOUT,
        compression=None,
        max_size=None,
    ) as ws:
        created = await recv(ws)
        assert created["type"] == "session.created", created
        yield ws


async def refused(url: str, key: str) -> tuple[int, dict[str, str], Event]:
    """(status, headers, body) of an upgrade that must be refused."""
    try:
        ws = await connect(url, additional_headers=bearer(key), open_timeout=TIMEOUT)
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, dict(response.headers), orjson.loads(response.body)
    await ws.close()
    raise AssertionError(f"{url} was accepted, expected a refusal")


async def send(ws: ClientConnection, event: Event) -> None:
    await ws.send(orjson.dumps(event).decode())


async def update_session(ws: ClientConnection, session: Event) -> Event:
    """A session.update; returns the session of the session.updated that answers it."""
    await send(ws, {"type": "session.update", "session": session})
    events = await read_until(ws, "session.updated")
    assert types_of(events) == ["session.updated"], events
    updated: Event = events[-1]["session"]
    return updated


async def read_until(ws: ClientConnection, kind: str, timeout: float = TIMEOUT) -> list[Event]:
    """Events up to and including the first of type ``kind``."""
    got: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            got.append(await recv(ws, timeout))
            if got[-1]["type"] == kind:
                return got


def user_message(text: str, role: str = "user") -> Event:
    kind = "input_text" if role != "assistant" else "output_text"
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
    }


async def sync(ws: ClientConnection, text: str) -> None:
    """A round trip through the upstream: a user message, read up to its own
    conversation.item.done. Whatever the client sent before it has been forwarded (or dropped)
    by then, and no event of it is left unread."""
    await send(ws, user_message(text))
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = await recv(ws)
            if event["type"] == "conversation.item.done":
                content = event["item"].get("content") or [{}]
                if content[0].get("text") == text:
                    return


async def text_turn(ws: ClientConnection, text: str) -> list[Event]:
    """A user message and a response.create; every event up to response.done (no error)."""
    await send(ws, user_message(text))
    await send(ws, {"type": "response.create"})
    events = await read_until(ws, "response.done")
    errors = [e for e in events if e["type"] == "error"]
    assert not errors, errors
    assert events[-1]["response"]["status"] == "completed", events[-1]
    return events


def types_of(events: Sequence[Event]) -> list[str]:
    return [e["type"] for e in events]


def only(events: Sequence[Event], kind: str) -> Event:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, types_of(events))
    return found[0]


async def speak(ws: ClientConnection, seed: int = 3) -> None:
    """1.2 s of speech between silences, in 100 ms appends (server VAD ends the turn)."""
    audio = silence(300) + speech_like(1200, seed=seed) + silence(800)
    for start in range(0, len(audio), 4800):
        piece = audio[start : start + 4800]
        audio_b64 = base64.b64encode(piece).decode()
        await send(ws, {"type": "input_audio_buffer.append", "audio": audio_b64})


TEXT_SESSION: Event = {"type": "realtime", "output_modalities": ["text"]}
VAD_AUDIO_SESSION: Event = {
    "type": "realtime",
    "output_modalities": ["audio"],
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
}


async def usage_json(gateway: GatewayHandle, key: str, day: str) -> Event:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=TIMEOUT) as http:
        response = await http.get(
            "/v1/usage", params={"start": day, "end": day}, headers=bearer(key)
        )
    assert response.status_code == 200, response.text
    body: Event = response.json()
    return body


async def live_sessions(gateway: GatewayHandle, tenant_id: str) -> list[Event]:
    async with gateway.admin() as http:
        response = await http.get("/admin/sessions", params={"tenant": tenant_id})
    assert response.status_code == 200, response.text
    data: list[Event] = response.json()["data"]
    return data


async def until_no_live_sessions(gateway: GatewayHandle, tenant_id: str) -> None:
    """Wait until the tenant's sessions have ended on the server (their usage is booked before
    their lease is released)."""
    async with asyncio.timeout(TIMEOUT):
        while await live_sessions(gateway, tenant_id):
            await asyncio.sleep(0.02)


async def eventually(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """Poll ``read()`` until it returns ``expected`` (charges are booked off the relay's path,
    a few milliseconds after the response.done that caused them)."""
    got: object = None
    try:
        async with asyncio.timeout(TIMEOUT / 2):
            while (got := await read()) != expected:
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still {got!r}, expected {expected!r}") from None
