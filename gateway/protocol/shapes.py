"""Beta <-> GA shapes of the objects inside realtime events: sessions, responses, items, parts.

Pure functions from one JSON object to another; ``translate.py`` applies them to events.
Inputs are never mutated: new containers are built along the changed paths and unchanged
sub-objects are shared, so the output must be treated as read-only too (serialise it, or copy
before editing). Unknown keys pass through untouched wherever they are.

Session (``session.update``, ``session.created/updated``, ``transcription_session.*``)::

    beta (flat)                    GA
    -----------------------------  -------------------------------------------------------
    (none)                         type: "realtime" | "transcription"  (added / removed)
    modalities ["text","audio"]    output_modalities ["audio"]   (audio includes transcript)
    modalities ["text"]            output_modalities ["text"]
    input_audio_format "pcm16"     audio.input.format {"type":"audio/pcm","rate":24000}
                       "g711_ulaw"                    {"type":"audio/pcmu"}
                       "g711_alaw"                    {"type":"audio/pcma"}
    input_audio_transcription      audio.input.transcription
    turn_detection                 audio.input.turn_detection
    input_audio_noise_reduction    audio.input.noise_reduction
    output_audio_format            audio.output.format
    voice                          audio.output.voice
    speed                          audio.output.speed
    max_response_output_tokens     max_output_tokens
    temperature                    DROPPED beta->GA (GA has no temperature; it would be
                                   refused as an unknown parameter)

Transcription sessions map their input side the same way; their beta ``modalities`` and
``temperature`` are dropped (a GA transcription session refuses them). GA-only fields
(``truncation``, ``prompt``, ``reasoning``, ``tracing``, ``include``, ...) pass through as they
are, both ways. GA keys under ``audio.input`` / ``audio.output`` that have no beta field (and a
non-object ``audio.input``) stay under a residual ``audio`` object in the beta shape, and are
merged back on the way to GA, so GA -> beta -> GA loses nothing.

Response (``response.create`` parameters and the ``response`` of ``response.created/done``):
``modalities`` <-> ``output_modalities``, ``voice`` / ``output_audio_format`` <->
``audio.output.voice`` / ``.format``, ``temperature`` dropped beta->GA, the items of ``input`` /
``output`` translated. Max tokens: beta ``response.create`` calls it
``max_response_output_tokens`` (the beta SDK; the 2025-04 spec example says
``max_output_tokens``, also accepted); response objects call it ``max_output_tokens`` in both.

Items: an assistant message's content parts are ``text`` / ``audio`` in beta and
``output_text`` / ``output_audio`` in GA; user and system parts (``input_text``,
``input_audio``, ``input_image``, ``item_reference``) are the same in both. ``object:
"realtime.item"`` is optional in both SDKs and real GA captures omit it on item events, so it
passes through untouched (neither added nor removed).

Content parts of ``response.content_part.added/done`` are ``text`` / ``audio`` in BOTH dialects
(the GA spec, the GA SDK's ``Part`` literal and live GA captures agree), so they are not
renamed beta->GA; GA->beta turns a stray ``output_text`` / ``output_audio`` into the beta names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

JSON = dict[str, Any]
SessionKind = Literal["realtime", "transcription"]

# ---- audio formats and modalities --------------------------------------------------------------

_FORMAT_TO_GA: dict[str, JSON] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
_G711_TO_BETA = {"audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}


def format_to_ga(fmt: object) -> object:
    """A beta format name as a GA format object; anything else unchanged (the upstream judges)."""
    if isinstance(fmt, str) and fmt in _FORMAT_TO_GA:
        return dict(_FORMAT_TO_GA[fmt])
    return fmt


def format_to_beta(fmt: object) -> object:
    """A GA format object as a beta name; one beta cannot express (pcm at another rate, a
    future type) is left unchanged."""
    if not isinstance(fmt, Mapping):
        return fmt
    kind = fmt.get("type")
    if isinstance(kind, str) and kind in _G711_TO_BETA and set(fmt) <= {"type"}:
        return _G711_TO_BETA[kind]
    if kind == "audio/pcm" and fmt.get("rate", 24000) == 24000 and set(fmt) <= {"type", "rate"}:
        return "pcm16"
    return fmt


def modalities_to_ga(value: object) -> object:
    """Beta ``["text","audio"]`` is GA ``["audio"]`` (audio always comes with a transcript)."""
    if isinstance(value, list) and "audio" in value:
        return ["audio"]
    return value


def modalities_to_beta(value: object) -> object:
    if isinstance(value, list) and "audio" in value:
        return ["text", "audio"]
    return value


# ---- sessions ----------------------------------------------------------------------------------

# beta flat key -> (GA audio side, GA key)
_AUDIO_KEYS: dict[str, tuple[str, str]] = {
    "input_audio_format": ("input", "format"),
    "input_audio_transcription": ("input", "transcription"),
    "turn_detection": ("input", "turn_detection"),
    "input_audio_noise_reduction": ("input", "noise_reduction"),
    "output_audio_format": ("output", "format"),
    "voice": ("output", "voice"),
    "speed": ("output", "speed"),
}
_AUDIO_KEYS_BACK: dict[tuple[str, str], str] = {v: k for k, v in _AUDIO_KEYS.items()}
_FORMAT_KEYS = frozenset({"input_audio_format", "output_audio_format"})
_SESSION_KINDS = frozenset({"realtime", "transcription"})
# Beta session fields a GA session of that kind refuses and that have no GA counterpart.
_DROPPED_TO_GA: dict[SessionKind, frozenset[str]] = {
    "realtime": frozenset({"temperature"}),
    "transcription": frozenset({"temperature", "modalities"}),
}


def session_to_ga(session: Mapping[str, Any], kind: SessionKind = "realtime") -> JSON:
    """A beta session object (realtime or transcription) in the GA shape."""
    out: JSON = {"type": kind}
    sides: dict[str, JSON] = {"input": {}, "output": {}}
    residual: Mapping[str, Any] | None = None
    dropped = _DROPPED_TO_GA[kind]
    for key, value in session.items():
        if key in _AUDIO_KEYS:
            side, ga_key = _AUDIO_KEYS[key]
            sides[side][ga_key] = format_to_ga(value) if key in _FORMAT_KEYS else value
        elif key == "modalities" and key not in dropped:
            out["output_modalities"] = modalities_to_ga(value)
        elif key == "max_response_output_tokens":
            out["max_output_tokens"] = value
        elif key == "audio" and isinstance(value, Mapping):
            residual = value  # GA keys beta could not express, kept by session_to_beta
        elif key not in dropped:
            out[key] = value
    audio = _merge_audio(residual, sides)
    if audio:
        out["audio"] = audio
    return out


def _merge_audio(residual: Mapping[str, Any] | None, sides: dict[str, JSON]) -> JSON:
    audio: JSON = dict(residual) if residual else {}
    for side, values in sides.items():
        if not values:
            continue
        before = audio.get(side)
        audio[side] = {**before, **values} if isinstance(before, Mapping) else values
    return audio


def session_kind(session: Mapping[str, Any]) -> SessionKind:
    """A GA session's kind; anything but ``"transcription"`` is a realtime session."""
    return "transcription" if session.get("type") == "transcription" else "realtime"


def session_to_beta(session: Mapping[str, Any]) -> JSON:
    """A GA session object in the flat beta shape (see ``session_kind`` for which beta event)."""
    out: JSON = {}
    for key, value in session.items():
        if key == "type" and value in _SESSION_KINDS:
            continue
        if key == "output_modalities":
            out["modalities"] = modalities_to_beta(value)
        elif key == "max_output_tokens":
            out["max_response_output_tokens"] = value
        elif key == "audio" and isinstance(value, Mapping):
            leftover = _flatten_audio(value, out)
            if leftover:
                out["audio"] = leftover
        else:
            out[key] = value
    return out


def _flatten_audio(audio: Mapping[str, Any], out: JSON) -> JSON:
    """Write GA ``audio.input/output`` fields into ``out`` as beta keys; return what is left."""
    leftover: JSON = {}
    for side, values in audio.items():
        if side not in ("input", "output") or not isinstance(values, Mapping):
            leftover[side] = values
            continue
        rest: JSON = {}
        for ga_key, value in values.items():
            beta_key = _AUDIO_KEYS_BACK.get((side, ga_key))
            if beta_key is None:
                rest[ga_key] = value
            else:
                out[beta_key] = format_to_beta(value) if beta_key in _FORMAT_KEYS else value
        if rest:
            leftover[side] = rest
    return leftover


# ---- responses ---------------------------------------------------------------------------------

_RESPONSE_OUTPUT_KEYS: dict[str, str] = {"voice": "voice", "output_audio_format": "format"}
_RESPONSE_OUTPUT_BACK = {v: k for k, v in _RESPONSE_OUTPUT_KEYS.items()}
_ITEM_LISTS = frozenset({"input", "output"})


def response_to_ga(response: Mapping[str, Any]) -> JSON:
    """Beta ``response.create`` parameters or a beta response object, in the GA shape."""
    out: JSON = {}
    output: JSON = {}
    residual: Mapping[str, Any] | None = None
    for key, value in response.items():
        if key in _RESPONSE_OUTPUT_KEYS:
            ga_key = _RESPONSE_OUTPUT_KEYS[key]
            output[ga_key] = format_to_ga(value) if ga_key == "format" else value
        elif key == "modalities":
            out["output_modalities"] = modalities_to_ga(value)
        elif key == "max_response_output_tokens":
            out["max_output_tokens"] = value
        elif key == "temperature":
            continue  # no GA counterpart
        elif key in _ITEM_LISTS and isinstance(value, list):
            out[key] = [item_to_ga(item) for item in value]
        elif key == "audio" and isinstance(value, Mapping):
            residual = value
        else:
            out[key] = value
    audio = _merge_audio(residual, {"output": output})
    if audio:
        out["audio"] = audio
    return out


def response_to_beta(response: Mapping[str, Any], *, params: bool) -> JSON:
    """A GA response (``params``: the ``response.create`` parameters) in the beta shape."""
    out: JSON = {}
    for key, value in response.items():
        if key == "output_modalities":
            out["modalities"] = modalities_to_beta(value)
        elif key == "max_output_tokens" and params:
            out["max_response_output_tokens"] = value
        elif key in _ITEM_LISTS and isinstance(value, list):
            out[key] = [item_to_beta(item) for item in value]
        elif key == "audio" and isinstance(value, Mapping):
            leftover = _flatten_response_audio(value, out)
            if leftover:
                out["audio"] = leftover
        else:
            out[key] = value
    return out


def _flatten_response_audio(audio: Mapping[str, Any], out: JSON) -> JSON:
    leftover: JSON = {k: v for k, v in audio.items() if k != "output"}
    values = audio.get("output")
    if not isinstance(values, Mapping):
        if "output" in audio:
            leftover["output"] = values
        return leftover
    rest: JSON = {}
    for ga_key, value in values.items():
        beta_key = _RESPONSE_OUTPUT_BACK.get(ga_key)
        if beta_key is None:
            rest[ga_key] = value
        else:
            out[beta_key] = format_to_beta(value) if ga_key == "format" else value
    if rest:
        leftover["output"] = rest
    return leftover


# ---- items and content parts -------------------------------------------------------------------

_ASSISTANT_TO_GA = {"text": "output_text", "audio": "output_audio"}
_ASSISTANT_TO_BETA = {"output_text": "text", "output_audio": "audio"}


def _rename_parts(item: object, names: Mapping[str, str]) -> object:
    if not isinstance(item, Mapping) or item.get("role") != "assistant":
        return item
    content = item.get("content")
    if not isinstance(content, list):
        return item
    return {**item, "content": [_rename_part(part, names) for part in content]}


def _rename_part(part: object, names: Mapping[str, str]) -> object:
    if not isinstance(part, Mapping):
        return part
    kind = part.get("type")
    if isinstance(kind, str) and kind in names:
        return {**part, "type": names[kind]}
    return part


def item_to_ga(item: object) -> object:
    """A conversation item with an assistant message's ``text``/``audio`` parts renamed."""
    return _rename_parts(item, _ASSISTANT_TO_GA)


def item_to_beta(item: object) -> object:
    return _rename_parts(item, _ASSISTANT_TO_BETA)


def part_to_beta(part: object) -> object:
    """A ``response.content_part.*`` part for a beta client (see the module docstring)."""
    return _rename_part(part, _ASSISTANT_TO_BETA)
