"""One response, as the ordered events the real service streams, produced one step at a time.

Pure: the connection layer asks for the next step and waits ``step.pace`` seconds after
sending it (audio pacing). Cancellation finishes the response at whatever point it reached,
with the usage of what was actually produced.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from gateway.sim.audio import VOICE_CHUNK_MS, bytes_per_ms, voice_chunks
from gateway.sim.conversation import Conversation, Item, Part, render_item
from gateway.sim.model import Reply
from gateway.sim.usage import (
    MESSAGE_OVERHEAD,
    InputAccount,
    Tokens,
    audio_out_tokens,
    text_tokens,
    usage_object,
)
from gateway.sim.wire import Event, Ids, Names, Protocol

CHUNK_MS = VOICE_CHUNK_MS  # audio per response.output_audio.delta
TEXT_DELTA_SECONDS = 0.02  # ~50 deltas a second, the pace of a fast text stream
MS_PER_CHARACTER = 60  # speech at ~16 characters a second
_WORDS = re.compile(r"\S+\s*")


@dataclass(frozen=True, slots=True)
class Step:
    event: Event
    pace: float  # seconds to wait after sending this event


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    id: str
    conversation_id: str | None  # None: out of band (conversation "none")
    audio_output: bool
    voice: str
    output_format: str
    audio_speed: float
    temperature: float
    max_output_tokens: int | str
    metadata: Any
    reply: Reply
    input: InputAccount
    rate_limits: list[dict[str, Any]]
    failure: dict[str, Any] | None  # status_details.error of a failed response
    incomplete: bool  # the reply was cut to max_output_tokens
    pacing: float  # SimConfig.speed


def speech_ms(text: str, audio_speed: float) -> int:
    ms = max(400, len(text) * MS_PER_CHARACTER) / max(audio_speed, 0.25)
    return int(round(ms / 10) * 10)


def output_tokens(reply: Reply, audio_output: bool, audio_speed: float) -> Tokens:
    if reply.kind == "function_call":
        return Tokens(MESSAGE_OVERHEAD + text_tokens(reply.tool) + text_tokens(reply.arguments))
    if not audio_output:
        return Tokens(text_tokens(reply.text))
    return Tokens(text_tokens(reply.text), audio_out_tokens(speech_ms(reply.text, audio_speed)))


def fit_reply(reply: Reply, limit: int | str, audio: bool, speed: float) -> tuple[Reply, bool]:
    """The reply cut (by words) to ``max_output_tokens``; True when it had to be cut."""
    if limit == "inf" or reply.kind != "message":
        return reply, False
    words = _WORDS.findall(reply.text)
    cut = False
    while len(words) > 1 and output_tokens(
        Reply("message", "".join(words)), audio, speed
    ).total > int(limit):
        words.pop()
        cut = True
    return Reply("message", "".join(words).rstrip()), cut


@cache
def _voice_chunk_b64(fmt: str, index: int) -> str:
    return base64.b64encode(voice_chunks(fmt)[index]).decode("ascii")


class ResponseRun:
    def __init__(
        self, spec: ResponseSpec, protocol: Protocol, ids: Ids, conversation: Conversation
    ) -> None:
        self.spec = spec
        self.protocol = protocol
        self.names = Names.of(protocol)
        self._ids = ids
        self._conversation = conversation
        self.item: Item | None = None
        self._in_conversation = False
        self._emitted_text = ""
        self._emitted_audio_ms = 0.0
        self.done = False
        self.status = "in_progress"
        self._steps = self._generate()

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def audio_emitted(self) -> bool:
        return self._emitted_audio_ms > 0

    def output(self) -> Tokens:
        reply = self.spec.reply
        if reply.kind == "function_call":
            args = self.item.arguments if self.item is not None else ""
            return Tokens(MESSAGE_OVERHEAD + text_tokens(reply.tool) + text_tokens(args))
        return Tokens(text_tokens(self._emitted_text), audio_out_tokens(self._emitted_audio_ms))

    def used_tokens(self) -> int:
        return 0 if self.spec.failure is not None else self.spec.input.total + self.output().total

    def next_step(self) -> Step | None:
        if self.done:
            return None
        try:
            return next(self._steps)
        except StopIteration:  # pragma: no cover - the generator marks done before its end
            self.done = True
            return None

    def cancel(self, reason: str) -> list[Event]:
        """Finish now: the open item becomes incomplete, response.done says cancelled."""
        if self.done:
            return []
        self.done = True
        self._steps.close()
        events: list[Event] = []
        item = self.item
        if item is not None and item.status == "in_progress":
            item.status = "incomplete"
            events.append(self._item_event("response.output_item.done", item))
            if self._in_conversation and self.protocol == "ga":
                events.append(self._conversation_item_done(item))
        self.status = "cancelled"
        details = {"type": "cancelled", "reason": reason}
        events.append(self._event("response.done", response=self._response(details, True)))
        return events

    # --- the stream --------------------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> Event:
        return {"type": type_, "event_id": self._ids.new("event"), **fields}

    def _step(self, type_: str, pace: float = 0.0, **fields: Any) -> Step:
        return Step(self._event(type_, **fields), pace)

    def _response(self, details: dict[str, Any] | None, with_usage: bool) -> dict[str, Any]:
        spec = self.spec
        out: dict[str, Any] = {
            "object": "realtime.response",
            "id": spec.id,
            "status": self.status,
            "status_details": details,
            "output": [render_item(self.item, self.protocol)] if self.item is not None else [],
            "conversation_id": spec.conversation_id,
        }
        if self.protocol == "ga":
            fmt = (
                {"type": "audio/pcm", "rate": 24000}
                if spec.output_format == "pcm16"
                else {"type": "audio/pcmu" if spec.output_format == "g711_ulaw" else "audio/pcma"}
            )
            out["output_modalities"] = ["audio"] if spec.audio_output else ["text"]
            out["max_output_tokens"] = spec.max_output_tokens
            out["audio"] = {"output": {"format": fmt, "voice": spec.voice}}
        else:
            out["modalities"] = ["audio", "text"] if spec.audio_output else ["text"]
            out["voice"] = spec.voice
            out["output_audio_format"] = spec.output_format
            out["temperature"] = spec.temperature
            out["max_output_tokens"] = spec.max_output_tokens
        if with_usage:
            out["usage"] = usage_object(spec.input, self.output())
        elif details is None:
            out["usage"] = None
        out["metadata"] = spec.metadata
        return out

    def _generate(self) -> Generator[Step, None, None]:
        spec = self.spec
        yield self._step("response.created", response=self._response(None, False))
        yield self._step("rate_limits.updated", rate_limits=spec.rate_limits)
        if spec.failure is not None:
            self.done, self.status = True, "failed"
            failed = {"type": "failed", "error": spec.failure}
            yield self._step("response.done", response=self._response(failed, False))
            return
        if spec.reply.kind == "function_call":
            yield from self._function_call()
        else:
            yield from self._message()
        self.done = True
        self.status = "incomplete" if spec.incomplete else "completed"
        details = {"type": "incomplete", "reason": "max_output_tokens"} if spec.incomplete else None
        yield self._step("response.done", response=self._response(details, True))

    def _item_event(self, type_: str, item: Item) -> Event:
        return self._event(
            type_, response_id=self.spec.id, output_index=0, item=render_item(item, self.protocol)
        )

    def _conversation_item_done(self, item: Item) -> Event:
        return self._event("conversation.item.done", item=render_item(item, self.protocol))

    def _open_item(self, item: Item) -> Iterator[Step]:
        self.item = item
        yield Step(self._item_event("response.output_item.added", item), 0.0)
        if self.spec.conversation_id is not None:
            previous = self._conversation.insert(item)
            self._in_conversation = True
            kind = (
                "conversation.item.added" if self.protocol == "ga" else "conversation.item.created"
            )
            rendered = render_item(item, self.protocol)
            yield self._step(kind, previous_item_id=previous, item=rendered)

    def _close_item(self, item: Item) -> Iterator[Step]:
        item.status = "incomplete" if self.spec.incomplete else "completed"
        yield Step(self._item_event("response.output_item.done", item), 0.0)
        if self._in_conversation and self.protocol == "ga":
            yield Step(self._conversation_item_done(item), 0.0)

    def _function_call(self) -> Iterator[Step]:
        reply = self.spec.reply
        item = Item(
            self._ids.new("item"),
            "function_call",
            status="in_progress",
            call_id=self._ids.new("call"),
            name=reply.tool,
            arguments="",
        )
        yield from self._open_item(item)
        ids: dict[str, Any] = {"response_id": self.spec.id, "item_id": item.id, "output_index": 0}
        args = reply.arguments
        size = max(1, math.ceil(len(args) / 3))
        for start in range(0, len(args), size):
            delta = args[start : start + size]
            item.arguments = (item.arguments or "") + delta
            yield self._step(
                "response.function_call_arguments.delta",
                TEXT_DELTA_SECONDS * self.spec.pacing,
                **ids,
                call_id=item.call_id,
                delta=delta,
            )
        yield self._step(
            "response.function_call_arguments.done",
            **ids,
            call_id=item.call_id,
            name=item.name,
            arguments=args,
        )
        yield from self._close_item(item)

    def _message(self) -> Iterator[Step]:
        spec = self.spec
        item = Item(self._ids.new("item"), "message", role="assistant", status="in_progress")
        yield from self._open_item(item)
        audio = spec.audio_output
        part = (
            Part("audio", transcript="", voice_format=spec.output_format)
            if audio
            else Part("text", text="")
        )
        item.content.append(part)
        ids: dict[str, Any] = {
            "response_id": spec.id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        shown = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        yield self._step("response.content_part.added", **ids, part=shown)
        text = spec.reply.text
        if audio:
            yield from self._audio(part, ids, text)
            yield self._step(self.names.audio_done, **ids)
            yield self._step(self.names.transcript_done, **ids, transcript=text)
            final = {"type": "audio", "transcript": text}
        else:
            for piece in _pieces(text, 2):
                part.text = (part.text or "") + piece
                self._emitted_text += piece
                pace = TEXT_DELTA_SECONDS * spec.pacing
                yield self._step(self.names.text_delta, pace, **ids, delta=piece)
            yield self._step(self.names.text_done, **ids, text=text)
            final = {"type": "text", "text": text}
        yield self._step("response.content_part.done", **ids, part=final)
        yield from self._close_item(item)

    def _audio(self, part: Part, ids: dict[str, Any], text: str) -> Iterator[Step]:
        spec = self.spec
        fmt = spec.output_format
        total_ms = speech_ms(text, spec.audio_speed)
        count = math.ceil(total_ms / CHUNK_MS)
        words = _pieces(text, 1)
        said = 0
        for index in range(count):
            target = math.ceil(len(words) * (index + 1) / count)
            for piece in words[said:target]:
                part.transcript = (part.transcript or "") + piece
                self._emitted_text += piece
                yield self._step(self.names.transcript_delta, **ids, delta=piece)
            said = max(said, target)
            ms = min(CHUNK_MS, total_ms - index * CHUNK_MS)
            chunks = voice_chunks(fmt)
            if ms == CHUNK_MS:
                delta = _voice_chunk_b64(fmt, index % len(chunks))
            else:
                size = int(ms * bytes_per_ms(fmt))
                delta = base64.b64encode(chunks[index % len(chunks)][:size]).decode("ascii")
            part.audio_ms += ms
            self._emitted_audio_ms += ms
            yield self._step(self.names.audio_delta, ms / 1000 * spec.pacing, **ids, delta=delta)


def _pieces(text: str, words_per_piece: int) -> list[str]:
    words = _WORDS.findall(text)
    return [
        "".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)
    ] or ([text] if text else [])
