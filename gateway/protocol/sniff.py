"""Reading just enough of a frame to decide what to do with it.

Almost every realtime frame starts with its type (``{"type":"response.output_audio.delta",...``:
OpenAI's servers write it first, and the SDKs serialise ``type`` first too). When it does, the
type is read from the first bytes without parsing the rest, so an audio delta of many kilobytes
passes through untouched. Any other layout falls back to a full parse, which is always correct.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.usage import base64_decoded_len

_TYPE_KEY = b'{"type":'
_MAX_TYPE_LEN = 96  # longest event type today is ~60 bytes


def sniff_type(frame: bytes) -> bytes | None:
    """The event type if the frame starts with it, else None (the caller must parse).

    A None is not an error: it only means "not in the cheap position".
    """
    if not frame.startswith(_TYPE_KEY):
        return None
    start = 8
    if frame[start : start + 1] == b" ":  # json.dumps writes ": "
        start += 1
    if frame[start : start + 1] != b'"':
        return None
    end = frame.find(b'"', start + 1, start + 2 + _MAX_TYPE_LEN)
    if end < 0:
        return None
    value = frame[start + 1 : end]
    if b"\\" in value:  # an escaped type is legal JSON but never cheap: parse it
        return None
    return value


def base64_field_bytes(frame: bytes, key: bytes) -> int:
    """Decoded size of the base64 string field ``key`` (an audio delta) without parsing.

    Only used on frames whose type was sniffed; base64 cannot contain quotes, so the value ends
    at the next one. Returns 0 when the field is not found.
    """
    marker = b'"' + key + b'":'
    at = frame.find(marker)
    if at < 0:
        return 0
    start = at + len(marker)
    if frame[start : start + 1] == b" ":
        start += 1
    if frame[start : start + 1] != b'"':
        return 0
    end = frame.find(b'"', start + 1)
    if end < 0:
        return 0
    padding = frame[max(start + 1, end - 2) : end].count(b"=")
    return base64_decoded_len(end - start - 1, padding)


class NotAnEvent(ValueError):
    """The frame is not a JSON object with a string ``type``."""

    def __init__(self, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


def parse_event(frame: bytes) -> dict[str, Any]:
    """Parse a frame into an event object, or raise NotAnEvent with a message for the client."""
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise NotAnEvent(f"We could not parse the JSON body of your event: {exc.msg}.") from None
    if not isinstance(event, dict):
        raise NotAnEvent("An event must be a JSON object.")
    event_id = event.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    kind = event.get("type")
    if kind is None:
        raise NotAnEvent("The 'type' field is missing.", event_id)
    if not isinstance(kind, str) or not kind:
        raise NotAnEvent("The 'type' field must be a non-empty string.", event_id)
    return event
