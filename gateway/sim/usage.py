"""Token accounting: plausible, internally consistent numbers for ``response.done.usage``.

Rates: text ~4 characters a token; input audio 10 tokens a second and output audio 20 (close
to what the published examples imply). The prompt cache holds the context of the previous
response, so later turns report the unchanged prefix as cached (cached <= input always).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.sim.conversation import Item

MESSAGE_OVERHEAD = 4
INPUT_AUDIO_MS_PER_TOKEN = 100
OUTPUT_AUDIO_MS_PER_TOKEN = 50


def text_tokens(text: str | None) -> int:
    return (len(text) + 3) // 4 if text else 0


def audio_in_tokens(ms: float) -> int:
    return math.ceil(ms / INPUT_AUDIO_MS_PER_TOKEN) if ms > 0 else 0


def audio_out_tokens(ms: float) -> int:
    return math.ceil(ms / OUTPUT_AUDIO_MS_PER_TOKEN) if ms > 0 else 0


@dataclass(frozen=True, slots=True)
class Tokens:
    text: int = 0
    audio: int = 0

    @property
    def total(self) -> int:
        return self.text + self.audio

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.text + other.text, self.audio + other.audio)


def item_tokens(item: Item) -> Tokens:
    """What an item weighs as model input (assistant audio is re-read as input audio)."""
    if item.type == "function_call":
        return Tokens(MESSAGE_OVERHEAD + text_tokens(item.name) + text_tokens(item.arguments))
    if item.type == "function_call_output":
        return Tokens(MESSAGE_OVERHEAD + text_tokens(item.output))
    text, audio = MESSAGE_OVERHEAD, 0
    for part in item.content:
        if part.kind in ("input_audio", "audio"):
            audio += audio_in_tokens(part.audio_ms)
        else:
            text += text_tokens(part.text)
    return Tokens(text, audio)


def system_tokens(instructions: str, tools: list[dict[str, Any]]) -> Tokens:
    return Tokens(MESSAGE_OVERHEAD + text_tokens(instructions) + text_tokens(_json(tools)))


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() if value else ""


@dataclass(frozen=True, slots=True)
class InputAccount:
    tokens: Tokens
    cached: Tokens

    @property
    def total(self) -> int:
        return self.tokens.total


Fingerprint = tuple[str, int, int]


class PromptCache:
    """The context the previous response saw, as (item id, text, audio) fingerprints."""

    def __init__(self) -> None:
        self._system: str | None = None
        self._items: list[Fingerprint] = []

    def account(
        self, instructions: str, tools: list[dict[str, Any]], items: list[Item]
    ) -> InputAccount:
        system = system_tokens(instructions, tools)
        total, cached = system, Tokens()
        key = instructions + "\x00" + _json(tools)
        prefix = self._system == key
        if prefix:
            cached = system
        for index, item in enumerate(items):
            weight = item_tokens(item)
            total = total + weight
            fingerprint = (item.id, weight.text, weight.audio)
            prefix = prefix and index < len(self._items) and self._items[index] == fingerprint
            if prefix:
                cached = cached + weight
        return InputAccount(total, cached)

    def remember(self, instructions: str, tools: list[dict[str, Any]], items: list[Item]) -> None:
        self._system = instructions + "\x00" + _json(tools)
        self._items = [(i.id, item_tokens(i).text, item_tokens(i).audio) for i in items]


def usage_object(inp: InputAccount, output: Tokens) -> dict[str, Any]:
    return {
        "total_tokens": inp.total + output.total,
        "input_tokens": inp.total,
        "output_tokens": output.total,
        "input_token_details": {
            "text_tokens": inp.tokens.text,
            "audio_tokens": inp.tokens.audio,
            "image_tokens": 0,
            "cached_tokens": inp.cached.total,
            "cached_tokens_details": {
                "text_tokens": inp.cached.text,
                "audio_tokens": inp.cached.audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": output.text, "audio_tokens": output.audio},
    }
