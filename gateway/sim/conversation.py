"""Conversation items: the ordered store, parsing of client-created items, and their GA/beta
rendering. Assistant content is kept as ``text``/``audio`` and rendered ``output_text`` /
``output_audio`` in GA (the migration guide's rename); user content is the same in both."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from gateway.sim.audio import duration_ms, voice
from gateway.sim.wire import (
    Ids,
    Protocol,
    SimRequestError,
    invalid_type,
    invalid_value,
    missing_parameter,
    unknown_parameter,
)

ITEM_KEYS = frozenset(
    {"id", "type", "object", "status", "role", "content", "call_id", "name", "arguments", "output"}
)
CONTENT_KEYS = frozenset(
    {"type", "text", "audio", "transcript", "id", "image_url", "detail", "format"}
)
USER_PARTS = ("input_text", "input_audio", "input_image")
ASSISTANT_PARTS = {"ga": ("output_text", "output_audio"), "beta": ("text", "audio")}
_GA_ASSISTANT = {"text": "output_text", "audio": "output_audio"}


@dataclass(slots=True)
class Part:
    kind: str  # input_text | input_audio | input_image | text | audio
    text: str | None = None
    transcript: str | None = None
    audio: bytearray = field(default_factory=bytearray)
    audio_ms: float = 0.0
    # Assistant audio is the simulator's own voice, rebuilt from its duration when retrieved.
    voice_format: str | None = None
    audio_dropped: bool = False  # input audio past the session's retention budget


@dataclass(slots=True)
class Item:
    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[Part] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None

    def spoken_text(self) -> str:
        """What the model "understood" from this item: its text or transcripts."""
        parts = [p.text or p.transcript or "" for p in self.content]
        return " ".join(p for p in parts if p)


def render_item(item: Item, protocol: Protocol, *, with_audio: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.id, "object": "realtime.item", "type": item.type}
    if item.type == "message":
        out.update(status=item.status, role=item.role)
        out["content"] = [_render_part(p, protocol, with_audio) for p in item.content]
    elif item.type == "function_call":
        out.update(status=item.status, call_id=item.call_id, name=item.name)
        out["arguments"] = item.arguments or ""
    else:
        out.update(status=item.status, call_id=item.call_id, output=item.output or "")
    return out


def _render_part(part: Part, protocol: Protocol, with_audio: bool) -> dict[str, Any]:
    kind = _GA_ASSISTANT.get(part.kind, part.kind) if protocol == "ga" else part.kind
    out: dict[str, Any] = {"type": kind}
    if part.kind in ("input_text", "text"):
        out["text"] = part.text or ""
    elif part.kind in ("input_audio", "audio"):
        out["transcript"] = part.transcript
        if with_audio:
            out["audio"] = _audio_b64(part)
    return out


def _audio_b64(part: Part) -> str | None:
    if part.voice_format is not None:
        return base64.b64encode(voice(part.voice_format, part.audio_ms)).decode("ascii")
    if part.audio_dropped:
        return None
    return base64.b64encode(part.audio).decode("ascii")


class Conversation:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self._by_id: dict[str, Item] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    def get(self, item_id: str) -> Item | None:
        return self._by_id.get(item_id)

    @property
    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def insert(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Add ``item`` after ``previous_item_id`` (None: at the end, "root": first); returns
        the id of the item now before it."""
        if previous_item_id is None:
            index = len(self.items)
        elif previous_item_id == "root":
            index = 0
        else:
            before = self._by_id.get(previous_item_id)
            if before is None:
                raise SimRequestError(
                    "invalid_value",
                    f"Invalid value: '{previous_item_id}'. No item with this id exists in the "
                    "conversation.",
                    "previous_item_id",
                )
            index = self.items.index(before) + 1
        self.items.insert(index, item)
        self._by_id[item.id] = item
        return self.items[index - 1].id if index > 0 else None

    def delete(self, item_id: str) -> bool:
        item = self._by_id.pop(item_id, None)
        if item is None:
            return False
        self.items.remove(item)
        return True


def parse_item(raw: Any, protocol: Protocol, ids: Ids, input_format: str) -> Item:
    """A client's ``conversation.item.create`` item; raises ``SimRequestError``."""
    if not isinstance(raw, dict):
        raise invalid_type("item", "an object", raw)
    for key in raw:
        if key not in ITEM_KEYS:
            raise unknown_parameter(f"item.{key}")
    if "type" not in raw:
        raise missing_parameter("item.type")
    kind = raw["type"]
    item_id = raw.get("id") or ids.new("item")
    if not isinstance(item_id, str):
        raise invalid_type("item.id", "a string", item_id)
    if kind == "message":
        return _parse_message(raw, item_id, protocol, input_format)
    if kind == "function_call":
        for key in ("name", "arguments"):
            if not isinstance(raw.get(key), str):
                raise _missing_or_type(raw, f"item.{key}", key)
        call_id = raw.get("call_id") or ids.new("call")
        return Item(item_id, kind, call_id=call_id, name=raw["name"], arguments=raw["arguments"])
    if kind == "function_call_output":
        for key in ("call_id", "output"):
            if not isinstance(raw.get(key), str):
                raise _missing_or_type(raw, f"item.{key}", key)
        return Item(item_id, kind, call_id=raw["call_id"], output=raw["output"])
    raise invalid_value("item.type", kind, ["message", "function_call", "function_call_output"])


def _missing_or_type(raw: dict[str, Any], param: str, key: str) -> SimRequestError:
    return missing_parameter(param) if key not in raw else invalid_type(param, "a string", raw[key])


def _parse_message(raw: dict[str, Any], item_id: str, protocol: Protocol, fmt: str) -> Item:
    role = raw.get("role")
    if role is None:
        raise missing_parameter("item.role")
    if role not in ("user", "assistant", "system"):
        raise invalid_value("item.role", role, ["user", "assistant", "system"])
    content = raw.get("content")
    if content is None:
        raise missing_parameter("item.content")
    if not isinstance(content, list):
        raise invalid_type("item.content", "an array", content)
    allowed: tuple[str, ...] = ASSISTANT_PARTS[protocol] if role == "assistant" else USER_PARTS
    if role == "system":
        allowed = ("input_text",)
    parts = [_parse_part(p, f"item.content[{i}]", allowed, fmt) for i, p in enumerate(content)]
    return Item(item_id, "message", role=role, content=parts)


def _parse_part(raw: Any, param: str, allowed: tuple[str, ...], fmt: str) -> Part:
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object", raw)
    for key in raw:
        if key not in CONTENT_KEYS:
            raise unknown_parameter(f"{param}.{key}")
    kind = raw.get("type")
    if kind not in allowed:
        raise invalid_value(f"{param}.type", kind, list(allowed))
    kind = {"output_text": "text", "output_audio": "audio"}.get(str(kind), str(kind))
    text, transcript = raw.get("text"), raw.get("transcript")
    for name, value in (("text", text), ("transcript", transcript)):
        if value is not None and not isinstance(value, str):
            raise invalid_type(f"{param}.{name}", "a string", value)
    audio = bytearray()
    if raw.get("audio") is not None:
        try:
            audio = bytearray(base64.b64decode(raw["audio"], validate=True))
        except (binascii.Error, TypeError, ValueError):
            raise SimRequestError(
                "invalid_value", "Invalid 'audio': not valid base64.", f"{param}.audio"
            ) from None
    return Part(kind, text, transcript, audio, duration_ms(len(audio), fmt))
