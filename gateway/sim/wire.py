"""Wire vocabulary shared by the simulator's modules: protocol flavour, event names, errors.

GA and beta differ in a few event names (``response.output_text.delta`` vs
``response.text.delta``, ``conversation.item.added`` vs ``conversation.item.created``);
everything else is common.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Literal

Protocol = Literal["ga", "beta"]
Event = dict[str, Any]

_ID_ALPHABET = string.ascii_letters + string.digits


class Ids:
    """Server ids in OpenAI's look (``event_`` + 21 characters), deterministic for a seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def new(self, prefix: str) -> str:
        return prefix + "_" + "".join(self._rng.choices(_ID_ALPHABET, k=21))


@dataclass(frozen=True, slots=True)
class Names:
    text_delta: str
    text_done: str
    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str

    @staticmethod
    def of(protocol: Protocol) -> Names:
        if protocol == "ga":
            return Names(
                "response.output_text.delta",
                "response.output_text.done",
                "response.output_audio.delta",
                "response.output_audio.done",
                "response.output_audio_transcript.delta",
                "response.output_audio_transcript.done",
            )
        return Names(
            "response.text.delta",
            "response.text.done",
            "response.audio.delta",
            "response.audio.done",
            "response.audio_transcript.delta",
            "response.audio_transcript.done",
        )


class SimRequestError(Exception):
    """A client mistake answered with an ``error`` event; the session goes on."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type_

    def body(self) -> dict[str, Any]:
        """The HTTP (REST) error body, OpenAI's shape."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_event(event_id: str, err: SimRequestError, client_event_id: str | None) -> Event:
    return {
        "type": "error",
        "event_id": event_id,
        "error": {
            "type": err.type,
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "event_id": client_event_id,
        },
    }


def unknown_parameter(param: str) -> SimRequestError:
    return SimRequestError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def missing_parameter(param: str) -> SimRequestError:
    return SimRequestError(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    )


def invalid_value(param: str, value: Any, supported: list[str] | None = None) -> SimRequestError:
    message = f"Invalid value: {_show(value)}."
    if supported:
        quoted = [f"'{s}'" for s in supported]
        listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
        message += f" Supported values are: {listed}."
    return SimRequestError("invalid_value", message, param)


def invalid_type(param: str, expected: str, value: Any) -> SimRequestError:
    return SimRequestError(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
    )


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return f"'{text[:80]}'"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
