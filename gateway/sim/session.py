"""One realtime session as a pure state machine: client frames in, server events out.

``receive(frame)`` answers a client frame at once (errors, acknowledgements, VAD events);
a response in progress is streamed through ``next_step()``, which the connection layer calls
and paces. Nothing here awaits, sleeps or reads a clock: the wall-clock time of the start is
given, and the rate-limit book carries its own injected clock.
"""

from __future__ import annotations

import base64
import binascii
import copy
import random
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.sim.audio import bytes_per_ms, duration_ms, rate_of, to_samples
from gateway.sim.config import SimConfig
from gateway.sim.conversation import Conversation, Item, Part, parse_item, render_item
from gateway.sim.faults import Faults
from gateway.sim.model import TRANSCRIPTS, plan_reply
from gateway.sim.params import ResponseOptions, defaults, parse_response_params
from gateway.sim.ratelimits import RateLimitBook, Reservation
from gateway.sim.response import ResponseRun, ResponseSpec, Step, fit_reply, output_tokens
from gateway.sim.shapes import SessionConfig, apply_update, render
from gateway.sim.usage import InputAccount, PromptCache, Tokens, audio_in_tokens, text_tokens
from gateway.sim.vad import EnergyVad, SpeechStarted, VadSettings
from gateway.sim.wire import (
    Event,
    Ids,
    Protocol,
    SimRequestError,
    error_event,
    invalid_type,
    invalid_value,
    missing_parameter,
    unknown_parameter,
)

MIN_COMMIT_MS = 100
MAX_BUFFER_BYTES = 64 * 1024 * 1024  # a client that never commits cannot exhaust memory
# Committed user audio kept for conversation.item.retrieve; older items lose their bytes
# (retrieve then shows "audio": null) so a long session's memory stays bounded.
AUDIO_RETENTION_BYTES = 32 * 1024 * 1024
_COMMON_KEYS = ("type", "event_id")
CLIENT_EVENTS: dict[str, tuple[str, ...]] = {
    "session.update": ("session",),
    "input_audio_buffer.append": ("audio",),
    "input_audio_buffer.commit": (),
    "input_audio_buffer.clear": (),
    "output_audio_buffer.clear": (),
    "conversation.item.create": ("previous_item_id", "item"),
    "conversation.item.retrieve": ("item_id",),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "conversation.item.delete": ("item_id",),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
}
BETA_ONLY_EVENTS: dict[str, tuple[str, ...]] = {"transcription_session.update": ("session",)}
_EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 200}


@dataclass(frozen=True, slots=True)
class SessionSetup:
    protocol: Protocol
    config: SimConfig
    faults: Faults
    rate_key: str  # the standard key whose budget this session spends
    model: str
    seed: int
    started_at: float  # wall-clock epoch seconds, for expires_at
    preset: SessionConfig | None = None  # from an ephemeral key's session


def beta_refusal_event(ids: Ids) -> Event:
    return error_event(
        ids.new("event"),
        SimRequestError(
            "beta_api_shape_disabled",
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        ),
        None,
    )


class SimSession:
    def __init__(self, setup: SessionSetup, book: RateLimitBook) -> None:
        self.setup = setup
        self.protocol: Protocol = setup.protocol
        self._ids = Ids(setup.seed)
        self._rng = random.Random(setup.seed ^ 0x5EED)
        self._book = book
        expires = int(setup.started_at + setup.config.max_session_seconds)
        if setup.preset is not None:
            self.cfg = copy.deepcopy(setup.preset)
            self.cfg.expires_at = expires
        else:
            self.cfg = SessionConfig(
                id=self._ids.new("sess"),
                model=setup.model,
                expires_at=expires,
                voice=setup.config.default_voice,
            )
        self.conversation = Conversation()
        self.conversation_id = self._ids.new("conv")
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._total_ms = 0.0
        self._vad = self._make_vad()
        self._speech_item_id: str | None = None
        self._run: ResponseRun | None = None
        self._reservation: Reservation | None = None
        self._run_in_conversation = False
        self._options: ResponseOptions | None = None
        self._voice_locked = False
        self._cache = PromptCache()
        self._retained: list[Part] = []
        self._retained_bytes = 0

    # --- public ------------------------------------------------------------------------------

    def open(self) -> list[Event]:
        events = [self._event("session.created", session=render(self.cfg, self.protocol))]
        if self.protocol == "beta":
            conversation = {"id": self.conversation_id, "object": "realtime.conversation"}
            events.append(self._event("conversation.created", conversation=conversation))
        return events

    @property
    def responding(self) -> bool:
        return self._run is not None

    def receive(self, frame: str | bytes) -> list[Event]:
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return [self._error(SimRequestError("invalid_json", f"Invalid JSON: {exc}."), None)]
        if not isinstance(data, dict):
            err = SimRequestError("invalid_event", "The event must be a JSON object.")
            return [self._error(err, None)]
        client_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        try:
            return self._dispatch(data)
        except SimRequestError as err:
            return [self._error(err, client_id)]

    def next_step(self) -> Step | None:
        run = self._run
        if run is None:
            return None
        step = run.next_step()
        if run.done:
            self._finish(run)
        return step

    def expire(self) -> Event:
        minutes = self.setup.config.max_session_seconds / 60
        err = SimRequestError(
            "session_expired", f"Your session hit the maximum duration of {minutes:g} minutes."
        )
        return self._error(err, None)

    def close(self) -> None:
        """The connection ended: settle what an unfinished response used."""
        if self._run is not None:
            self._run.cancel("client_cancelled")
            self._finish(self._run)

    # --- plumbing ----------------------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> Event:
        return {"type": type_, "event_id": self._ids.new("event"), **fields}

    def _error(self, err: SimRequestError, client_id: str | None) -> Event:
        return error_event(self._ids.new("event"), err, client_id)

    def _dispatch(self, data: dict[str, Any]) -> list[Event]:
        if "type" not in data:
            raise SimRequestError("invalid_event", "The 'type' field is missing.")
        kind = data["type"]
        known = CLIENT_EVENTS if self.protocol == "ga" else {**CLIENT_EVENTS, **BETA_ONLY_EVENTS}
        if not isinstance(kind, str) or kind not in known:
            raise invalid_value("type", kind, list(known))
        for key in data:
            if key not in _COMMON_KEYS and key not in known[kind]:
                raise unknown_parameter(key)
        handler = getattr(self, "_on_" + kind.replace(".", "_"))
        events: list[Event] = handler(data)
        return events

    def _make_vad(self) -> EnergyVad | None:
        td = self.cfg.turn_detection
        if td is None:
            return None
        if td["type"] == "semantic_vad":
            silence = _EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 500)
            settings = VadSettings(0.5, 300, silence)
        else:
            settings = VadSettings(
                float(td.get("threshold", 0.5)),
                int(td.get("prefix_padding_ms", 300)),
                int(td.get("silence_duration_ms", 500)),
            )
        return EnergyVad(settings, rate_of(self.cfg.input_format), self._total_ms)

    # --- session -----------------------------------------------------------------------------

    def _on_session_update(self, data: dict[str, Any]) -> list[Event]:
        if "session" not in data:
            raise missing_parameter("session")
        old = self.cfg
        self.cfg = apply_update(
            old, data["session"], self.protocol, voice_locked=self._voice_locked
        )
        if (
            old.turn_detection != self.cfg.turn_detection
            or old.input_format != self.cfg.input_format
        ):
            self._vad = self._make_vad()
            self._speech_item_id = None
        return [self._event("session.updated", session=render(self.cfg, self.protocol))]

    def _on_transcription_session_update(self, data: dict[str, Any]) -> list[Event]:
        raise SimRequestError(
            "invalid_value",
            "Passing a transcription session update event to a realtime session is not allowed.",
            "type",
        )

    # --- input audio -------------------------------------------------------------------------

    def _on_input_audio_buffer_append(self, data: dict[str, Any]) -> list[Event]:
        if "audio" not in data:
            raise missing_parameter("audio")
        if not isinstance(data["audio"], str):
            raise invalid_type("audio", "a string", data["audio"])
        try:
            chunk = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise SimRequestError(
                "invalid_value", "Invalid 'audio': expected base64-encoded audio bytes.", "audio"
            ) from None
        fmt = self.cfg.input_format
        self._buffer += chunk
        self._total_ms += duration_ms(len(chunk), fmt)
        events: list[Event] = []
        if self._vad is not None:
            for vad_event in self._vad.feed(to_samples(chunk, fmt)):
                if isinstance(vad_event, SpeechStarted):
                    events += self._speech_started(vad_event.audio_start_ms)
                else:
                    events += self._speech_stopped(vad_event.audio_end_ms)
            if not self._vad.speaking:
                # Outside speech only the prefix padding can still become part of an item.
                self._trim_buffer(self._vad.settings.prefix_padding_ms + 100)
        if len(self._buffer) > MAX_BUFFER_BYTES:
            self._trim_buffer(duration_ms(MAX_BUFFER_BYTES, fmt))
        return events

    def _trim_buffer(self, keep_ms: float) -> None:
        per_ms = bytes_per_ms(self.cfg.input_format)
        excess = len(self._buffer) - int(keep_ms * per_ms)
        if excess > 0:
            excess -= excess % (2 if self.cfg.input_format == "pcm16" else 1)
            del self._buffer[:excess]
            self._buffer_start_ms += excess / per_ms

    def _speech_started(self, start_ms: int) -> list[Event]:
        self._speech_item_id = self._ids.new("item")
        events = [
            self._event(
                "input_audio_buffer.speech_started",
                audio_start_ms=max(start_ms, int(self._buffer_start_ms)),
                item_id=self._speech_item_id,
            )
        ]
        td = self.cfg.turn_detection or {}
        run = self._run
        if run is not None and self._run_in_conversation and td.get("interrupt_response", True):
            events += run.cancel("turn_detected")
            self._finish(run)
        return events

    def _speech_stopped(self, end_ms: int) -> list[Event]:
        item_id = self._speech_item_id or self._ids.new("item")
        self._speech_item_id = None
        events = [
            self._event("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id)
        ]
        per_ms = bytes_per_ms(self.cfg.input_format)
        cut = int(max(0.0, end_ms - self._buffer_start_ms) * per_ms)
        cut -= cut % (2 if self.cfg.input_format == "pcm16" else 1)
        audio = self._buffer[:cut]
        del self._buffer[:cut]
        self._buffer_start_ms += cut / per_ms
        if duration_ms(len(audio), self.cfg.input_format) < MIN_COMMIT_MS:
            return events  # a blip: nothing worth an item
        events += self._commit(audio, item_id)
        td = self.cfg.turn_detection or {}
        if td.get("create_response", True) and self._run is None:
            self._start_response(defaults(self.cfg))
        return events

    def _on_input_audio_buffer_commit(self, data: dict[str, Any]) -> list[Event]:
        ms = duration_ms(len(self._buffer), self.cfg.input_format)
        if ms < MIN_COMMIT_MS:
            raise SimRequestError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        audio = self._buffer
        item_id = self._speech_item_id or self._ids.new("item")
        self._reset_buffer()
        return self._commit(audio, item_id)

    def _on_input_audio_buffer_clear(self, data: dict[str, Any]) -> list[Event]:
        self._reset_buffer()
        return [self._event("input_audio_buffer.cleared")]

    def _on_output_audio_buffer_clear(self, data: dict[str, Any]) -> list[Event]:
        return []  # WebRTC/SIP only: over a WebSocket the client owns playback

    def _reset_buffer(self) -> None:
        self._buffer = bytearray()
        self._buffer_start_ms = self._total_ms
        self._speech_item_id = None
        if self._vad is not None:
            self._vad.reset(self._total_ms)

    def _commit(self, audio: bytearray, item_id: str) -> list[Event]:
        ms = duration_ms(len(audio), self.cfg.input_format)
        part = Part("input_audio", audio=bytearray(audio), audio_ms=ms)
        item = Item(item_id, "message", role="user", content=[part])
        self._retain(part)
        previous = self.conversation.insert(item)
        events = [
            self._event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        ]
        events += self._item_added(item, previous)
        if self.cfg.transcription is not None:
            events += self._transcribe(item, part)
        return events

    def _retain(self, part: Part) -> None:
        self._retained.append(part)
        self._retained_bytes += len(part.audio)
        while self._retained_bytes > AUDIO_RETENTION_BYTES and len(self._retained) > 1:
            old = self._retained.pop(0)
            self._retained_bytes -= len(old.audio)
            old.audio, old.audio_dropped = bytearray(), True

    def _transcribe(self, item: Item, part: Part) -> list[Event]:
        ids = {"item_id": item.id, "content_index": 0}
        if not _has_voice(part.audio, self.cfg.input_format):
            # Nothing but silence was committed: the deterministic stand-in for audio the real
            # service cannot make sense of.
            error = {
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": "The audio could not be transcribed.",
                "param": None,
            }
            return [
                self._event(
                    "conversation.item.input_audio_transcription.failed", **ids, error=error
                )
            ]
        transcript = self._rng.choice(TRANSCRIPTS)
        part.transcript = transcript
        model = str((self.cfg.transcription or {}).get("model") or "whisper-1")
        audio_tokens, out = audio_in_tokens(part.audio_ms), text_tokens(transcript)
        usage: dict[str, Any] = (
            {"type": "duration", "seconds": round(part.audio_ms / 1000, 3)}
            if model.startswith("whisper")
            else {
                "type": "tokens",
                "total_tokens": audio_tokens + out,
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": out,
            }
        )
        return [
            self._event(
                "conversation.item.input_audio_transcription.delta", **ids, delta=transcript
            ),
            self._event(
                "conversation.item.input_audio_transcription.completed",
                **ids,
                transcript=transcript,
                usage=usage,
            ),
        ]

    # --- conversation ------------------------------------------------------------------------

    def _item_added(self, item: Item, previous: str | None) -> list[Event]:
        rendered = render_item(item, self.protocol)
        if self.protocol == "beta":
            return [
                self._event("conversation.item.created", previous_item_id=previous, item=rendered)
            ]
        return [
            self._event("conversation.item.added", previous_item_id=previous, item=rendered),
            self._event("conversation.item.done", previous_item_id=previous, item=rendered),
        ]

    def _on_conversation_item_create(self, data: dict[str, Any]) -> list[Event]:
        if "item" not in data:
            raise missing_parameter("item")
        item = parse_item(data["item"], self.protocol, self._ids, self.cfg.input_format)
        if item.id in self.conversation:
            raise SimRequestError(
                "invalid_value", f"Item with id '{item.id}' already exists.", "item.id"
            )
        previous_id = data.get("previous_item_id")
        if previous_id is not None and not isinstance(previous_id, str):
            raise invalid_type("previous_item_id", "a string", previous_id)
        previous = self.conversation.insert(item, previous_id)
        return self._item_added(item, previous)

    def _find(self, data: dict[str, Any], action: str) -> Item:
        item_id = data.get("item_id")
        if "item_id" not in data:
            raise missing_parameter("item_id")
        if not isinstance(item_id, str):
            raise invalid_type("item_id", "a string", item_id)
        item = self.conversation.get(item_id)
        if item is None:
            raise SimRequestError(
                f"item_{action}_invalid_item_id",
                f"Item with item_id not found: {item_id}",
                "item_id",
            )
        return item

    def _on_conversation_item_retrieve(self, data: dict[str, Any]) -> list[Event]:
        item = self._find(data, "retrieve")
        rendered = render_item(item, self.protocol, with_audio=True)
        return [self._event("conversation.item.retrieved", item=rendered)]

    def _on_conversation_item_delete(self, data: dict[str, Any]) -> list[Event]:
        item = self._find(data, "delete")
        self.conversation.delete(item.id)
        return [self._event("conversation.item.deleted", item_id=item.id)]

    def _on_conversation_item_truncate(self, data: dict[str, Any]) -> list[Event]:
        for key in ("content_index", "audio_end_ms"):
            if key not in data:
                raise missing_parameter(key)
            if isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 0:
                raise invalid_type(key, "a non-negative integer", data[key])
        item = self._find(data, "truncate")
        if item.type != "message" or item.role != "assistant":
            raise SimRequestError(
                "invalid_value", "Only assistant messages can be truncated.", "item_id"
            )
        index, end_ms = data["content_index"], data["audio_end_ms"]
        if index >= len(item.content) or item.content[index].kind != "audio":
            raise SimRequestError(
                "invalid_value", f"Content part {index} of the item is not audio.", "content_index"
            )
        part = item.content[index]
        if end_ms > part.audio_ms:
            raise SimRequestError(
                "invalid_value",
                f"Invalid 'audio_end_ms': {end_ms}ms is past the end of the audio "
                f"({part.audio_ms:.0f}ms).",
                "audio_end_ms",
            )
        if part.voice_format is None:  # client-made assistant audio: cut the bytes too
            keep = int(len(part.audio) * end_ms / part.audio_ms) if part.audio_ms else 0
            del part.audio[keep - keep % 2 :]
        part.audio_ms = float(end_ms)
        # The server drops the transcript so that no text the user never heard stays in context.
        part.transcript = ""
        return [
            self._event(
                "conversation.item.truncated",
                item_id=item.id,
                content_index=index,
                audio_end_ms=end_ms,
            )
        ]

    # --- responses ---------------------------------------------------------------------------

    def _on_response_create(self, data: dict[str, Any]) -> list[Event]:
        if self._run is not None:
            raise SimRequestError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._run.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        options = parse_response_params(
            data.get("response"), self.cfg, self.protocol, self.conversation, self._ids
        )
        self._start_response(options)
        return []

    def _on_response_cancel(self, data: dict[str, Any]) -> list[Event]:
        wanted = data.get("response_id")
        run = self._run
        if run is None or (wanted is not None and wanted != run.id):
            raise SimRequestError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        events = run.cancel("client_cancelled")
        self._finish(run)
        return events

    def _start_response(self, options: ResponseOptions) -> None:
        in_conversation = options.in_conversation and options.input is None
        context = options.input if options.input is not None else list(self.conversation.items)
        if in_conversation:
            account = self._cache.account(options.instructions, options.tools, context)
        else:
            account = PromptCache().account(options.instructions, options.tools, context)
        reply = plan_reply(context, options.tools, options.tool_choice, self._rng)
        reply, cut = fit_reply(
            reply, options.max_output_tokens, options.audio_output, self.cfg.speed
        )
        planned = output_tokens(reply, options.audio_output, self.cfg.speed).total
        faults = self.setup.faults
        reservation = self._book.reserve(
            self.setup.rate_key, account.total + planned, near_exhausted=faults.near_exhausted
        )
        failure: dict[str, Any] | None = None
        if faults.fail_responses:
            failure = {
                "type": "server_error",
                "code": "server_error",
                "message": "The server had an error while processing your request. "
                "Sorry about that!",
            }
        elif not reservation.ok:
            failure = {
                "type": "tokens",
                "code": "rate_limit_exceeded",
                "message": f"Rate limit reached for {self.cfg.model} on tokens. "
                f"Please try again in {reservation.retry_after:.3f}s.",
            }
        spec = ResponseSpec(
            id=self._ids.new("resp"),
            conversation_id=self.conversation_id if options.in_conversation else None,
            audio_output=options.audio_output,
            voice=options.voice,
            output_format=options.output_format,
            audio_speed=self.cfg.speed,
            temperature=options.temperature,
            max_output_tokens=options.max_output_tokens,
            metadata=options.metadata,
            reply=reply,
            input=account if failure is None else InputAccount(account.tokens, Tokens()),
            rate_limits=reservation.rate_limits,
            failure=failure,
            incomplete=cut,
            pacing=self.setup.config.speed,
        )
        self._run = ResponseRun(spec, self.protocol, self._ids, self.conversation)
        self._reservation = reservation
        self._run_in_conversation = in_conversation
        self._options = options

    def _finish(self, run: ResponseRun) -> None:
        if self._reservation is not None:
            self._book.settle(self.setup.rate_key, self._reservation, run.used_tokens())
        if run.audio_emitted:
            self._voice_locked = True
        options = self._options
        if self._run_in_conversation and run.spec.failure is None and options is not None:
            # The next response finds this context (with this answer) already processed.
            self._cache.remember(options.instructions, options.tools, self.conversation.items)
        self._run, self._reservation = None, None


# Peak level under which committed audio counts as silence for transcription (about -36 dBFS).
_VOICE_PEAK = 500


def _has_voice(audio: bytes | bytearray, fmt: str) -> bool:
    samples = to_samples(bytes(audio), fmt)
    return any(abs(s) > _VOICE_PEAK for s in samples)
