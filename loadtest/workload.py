"""The talking-session workload shared by the Locust user and the benchmark generator.

A front end with the microphone always on: one 100 ms PCM16 24 kHz append every 100 ms for
the whole session. Each turn is ``SPEECH_MS`` of speech-like audio followed by silence; the
upstream's server VAD hears the silence, commits the turn and answers; the front end keeps
streaming silence while the reply plays (as a browser does), and speaks again
``PAUSE_MS`` after ``response.done``.

Frames are encoded once per process: every session sends the same bytes, so the generator
spends its CPU on sockets, not on JSON or base64.

This module does not import ``gateway.protocol``: the harness reads the wire on its own, so
that a bug in the gateway's sniffing cannot hide in the numbers.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import cache

import orjson

from gateway.sim.audio import silence, speech_like

CHUNK_MS = 100
SPEECH_MS = 1600
PAUSE_MS = 500
MODEL = "gpt-realtime"
# How long a token lives: long enough for a slow ramp of 1,000 pre-minted tokens.
TOKEN_TTL_SECONDS = 900
# The cheap request-and-answer pair that times the round trip: retrieving an item that does
# not exist is answered at once with an `error` event that echoes our event_id, and changes
# nothing in the session (unlike `input_audio_buffer.clear`, which would cut the user's turn).
PROBE_ERROR_CODE = "item_retrieve_invalid_item_id"

_TYPE_RE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,96})"')
_SNIFF_WINDOW = 128


@dataclass(frozen=True, slots=True)
class Frames:
    """Pre-encoded client frames of one turn."""

    speech: tuple[bytes, ...]  # SPEECH_MS / CHUNK_MS appends of speech-like audio
    silence: bytes  # one append of digital silence

    @property
    def size(self) -> int:
        return len(self.silence)


def append_frame(pcm: bytes) -> bytes:
    return orjson.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


@cache
def frames(seed: int = 1) -> Frames:
    # speech_like is pure Python per sample: build once, cut into chunks.
    speech = speech_like(SPEECH_MS, seed=seed)
    step = len(speech) * CHUNK_MS // SPEECH_MS
    chunks = tuple(append_frame(speech[i : i + step]) for i in range(0, len(speech), step))
    return Frames(speech=chunks, silence=append_frame(silence(CHUNK_MS)))


def probe_frame(probe_id: str) -> bytes:
    return orjson.dumps(
        {"type": "conversation.item.retrieve", "event_id": probe_id, "item_id": "item_bench_none"}
    )


def mint_body(server_vad: bool = True) -> bytes:
    """The GA client-secret request every target gets (same session, so same VAD and model).

    Without ``server_vad`` the session has no turn detection: the client commits the audio
    and asks for the response itself.
    """
    session: dict[str, object] = {"type": "realtime", "model": MODEL}
    if not server_vad:
        session["audio"] = {"input": {"turn_detection": None}}
    return orjson.dumps(
        {
            "expires_after": {"anchor": "created_at", "seconds": TOKEN_TTL_SECONDS},
            "session": session,
        }
    )


COMMIT = orjson.dumps({"type": "input_audio_buffer.commit"})
RESPONSE_CREATE = orjson.dumps({"type": "response.create"})


def subprotocols(token: str) -> list[str]:
    """What a browser offers: the token rides in a subprotocol, `realtime` is selected."""
    return ["realtime", f"openai-insecure-api-key.{token}"]


def realtime_path() -> str:
    return f"/v1/realtime?model={MODEL}"


def sniff_type(frame: bytes) -> bytes:
    """The event type from the first bytes (servers write `type` first); a full parse only
    when it is not there. Audio deltas are 13 KB: they are never parsed."""
    match = _TYPE_RE.search(frame, 0, _SNIFF_WINDOW)
    if match is not None:
        return match.group(1)
    try:
        value = orjson.loads(frame).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return b"<malformed>"
    return value.encode() if isinstance(value, str) else b"<no type>"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    client_event_id: str | None


def error_info(frame: bytes) -> ErrorInfo:
    try:
        error = orjson.loads(frame).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return ErrorInfo("<malformed error>", None)
    code = error.get("code") or error.get("type") or "unknown"
    event_id = error.get("event_id")
    return ErrorInfo(str(code), event_id if isinstance(event_id, str) else None)


def response_status(frame: bytes) -> str:
    try:
        response = orjson.loads(frame).get("response") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return "<malformed>"
    return str(response.get("status", "unknown"))
