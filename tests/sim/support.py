"""Test helpers: validate every server frame against the SDK's own typed models."""

from __future__ import annotations

import asyncio
import base64
import json
from array import array
from typing import Annotated, Any, Protocol, Union, get_args, get_origin

import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
from pydantic import TypeAdapter

Event = dict[str, Any]


def _members(union: Any) -> dict[str, Any]:
    if get_origin(union) is Annotated:
        union = get_args(union)[0]
    assert get_origin(union) is Union
    members: dict[str, Any] = {}
    for cls in get_args(union):
        (literal,) = get_args(cls.model_fields["type"].annotation)
        members[literal] = cls
    return members


class EventValidator:
    """Validates raw JSON frames with ``TypeAdapter(RealtimeServerEvent)`` of one protocol and
    with the union member named by the frame's ``type`` (so a lenient union match cannot hide
    a missing field)."""

    def __init__(self, protocol: str) -> None:
        union: Any = (
            ga_types.RealtimeServerEvent if protocol == "ga" else beta_types.RealtimeServerEvent
        )
        self.protocol = protocol
        self.union = TypeAdapter(union)
        self.members = {k: TypeAdapter(v) for k, v in _members(union).items()}

    def __call__(self, raw: bytes | str) -> Event:
        event = json.loads(raw)
        assert isinstance(event, dict), raw
        kind = event.get("type")
        assert kind in self.members, f"{self.protocol} has no server event {kind!r}"
        assert isinstance(event.get("event_id"), str)
        assert event["event_id"].startswith("event_")
        self.union.validate_json(raw)
        parsed = self.members[kind].validate_json(raw)
        assert parsed.type == kind
        return event


GA = EventValidator("ga")
BETA = EventValidator("beta")


class Connection(Protocol):
    async def recv_bytes(self) -> bytes: ...


class Recorder:
    """Receives and validates the events of one SDK connection, keeping them all."""

    def __init__(self, conn: Connection, validator: EventValidator) -> None:
        self.conn = conn
        self.validate = validator
        self.events: list[Event] = []

    async def next(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            raw = await self.conn.recv_bytes()
        event = self.validate(raw)
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[Event]:
        """Events up to and including the first of type ``kind``."""
        got: list[Event] = []
        while True:
            event = await self.next(timeout)
            got.append(event)
            if event["type"] == kind:
                return got


def types_of(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def one(events: list[Event], kind: str) -> Event:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, types_of(events))
    return found[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rms(pcm16: bytes) -> float:
    samples = array("h")
    samples.frombytes(pcm16[: len(pcm16) & ~1])
    return float((sum(s * s for s in samples) / max(1, len(samples))) ** 0.5)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def check_usage(usage: Event) -> None:
    inp, out = usage["input_token_details"], usage["output_token_details"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens"] == inp["text_tokens"] + inp["audio_tokens"]
    assert usage["output_tokens"] == out["text_tokens"] + out["audio_tokens"]
    cached = inp["cached_tokens_details"]
    assert inp["cached_tokens"] == cached["text_tokens"] + cached["audio_tokens"]
    assert 0 <= inp["cached_tokens"] <= usage["input_tokens"]
    assert cached["text_tokens"] <= inp["text_tokens"]
    assert cached["audio_tokens"] <= inp["audio_tokens"]


class RawClient:
    """A plain ``websockets`` client: frames in and out exactly as written."""

    def __init__(self, ws: Any, validator: EventValidator) -> None:
        self.ws = ws
        self.validate = validator
        self.events: list[Event] = []

    async def send(self, event: Any) -> None:
        await self.ws.send(event if isinstance(event, str | bytes) else json.dumps(event))

    async def next(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        event = self.validate(raw)
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[Event]:
        got: list[Event] = []
        while True:
            got.append(await self.next(timeout))
            if got[-1]["type"] == kind:
                return got
