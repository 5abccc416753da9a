"""Translated events validate against the official SDK's typed models of the target dialect.

GA output is checked with ``openai.types.realtime`` and beta output with
``openai.types.beta.realtime`` (the unions the SDK itself parses events with). An example is
only required to validate after translation when it validates before translation in its own
dialect's SDK: a few spec examples predate fields the SDKs now require (e.g. ``usage`` of
``conversation.item.input_audio_transcription.completed``), and translation cannot invent them.
"""

from __future__ import annotations

import typing
from typing import Any

import pydantic
import pytest
from openai.types import realtime as ga_types
from openai.types.beta import realtime as beta_types

from gateway.protocol import translate as tr
from tests.unit.test_translate_examples import BETA, examples

Event = dict[str, Any]


def _members(union: Any) -> dict[str, type[pydantic.BaseModel]]:
    """The union's models by the literal of their ``type`` field."""
    (inner, *_) = typing.get_args(union)
    members: dict[str, type[pydantic.BaseModel]] = {}
    for model in typing.get_args(inner):
        (literal,) = typing.get_args(model.model_fields["type"].annotation)
        members[literal] = model
    return members


GA_SERVER = _members(ga_types.RealtimeServerEvent)
GA_CLIENT = _members(ga_types.RealtimeClientEvent)
BETA_SERVER = _members(beta_types.RealtimeServerEvent)
BETA_CLIENT = _members(beta_types.RealtimeClientEvent)
_ADAPTERS: dict[int, pydantic.TypeAdapter[Any]] = {
    id(table): pydantic.TypeAdapter[Any](typing.cast(Any, union))
    for table, union in (
        (GA_SERVER, ga_types.RealtimeServerEvent),
        (GA_CLIENT, ga_types.RealtimeClientEvent),
        (BETA_SERVER, beta_types.RealtimeServerEvent),
        (BETA_CLIENT, beta_types.RealtimeClientEvent),
    )
}


def _validate(table: dict[str, type[pydantic.BaseModel]], event: Event) -> None:
    """Raise if ``event`` is not a valid member of the SDK union ``table`` was built from."""
    kind = event["type"]
    assert kind in table, f"{kind} is not an event of this dialect"
    table[kind].model_validate(event)  # readable errors
    _ADAPTERS[id(table)].validate_python(event)  # and the union the SDK parses with


def _valid(table: dict[str, type[pydantic.BaseModel]], event: Event) -> bool:
    try:
        _validate(table, event)
    except (AssertionError, pydantic.ValidationError):
        return False
    return True


def _primed_state() -> tr.TranslationState:
    """State as after the beta spec's function call item was announced."""
    state = tr.TranslationState()
    added = {
        "type": "response.output_item.added",
        "event_id": "e",
        "item": {"id": "fc_001", "type": "function_call", "name": "get_weather", "arguments": ""},
    }
    tr.translate_server_event(added, "beta", "ga", state)
    return state


_CASES = [
    ("server", "beta", "ga", BETA_SERVER, GA_SERVER, examples("beta", client=False)),
    ("server", "ga", "beta", GA_SERVER, BETA_SERVER, examples("ga", client=False)),
    ("client", "beta", "ga", BETA_CLIENT, GA_CLIENT, examples("beta", client=True)),
    ("client", "ga", "beta", GA_CLIENT, BETA_CLIENT, examples("ga", client=True)),
]
# Examples that do not validate in their own SDK cannot say anything about the translation;
# they are left out here and pinned by test_skips_are_only_the_expected_ones below.
_CHECKABLE = [
    (side, s, d, sv, tv, k, e)
    for side, s, d, sv, tv, evs in _CASES
    for k, e in evs
    if _valid(sv, e)
]
_PARAMS = _CHECKABLE
_IDS = [f"{side}-{s}-{d}-{k}" for side, s, d, _, _, k, _ in _CHECKABLE]


@pytest.mark.parametrize(
    ("side", "src", "dst", "source", "target", "kind", "event"), _PARAMS, ids=_IDS
)
def test_translated_examples_validate_in_the_target_sdk(
    side: str,
    src: tr.Dialect,
    dst: tr.Dialect,
    source: dict[str, type[pydantic.BaseModel]],
    target: dict[str, type[pydantic.BaseModel]],
    kind: str,
    event: Event,
) -> None:
    fn = tr.translate_server_event if side == "server" else tr.translate_client_event
    out = fn(event, src, dst, _primed_state())
    if kind not in target and [e["type"] for e in out] == [kind]:
        # No counterpart in the other dialect: it must pass through untouched.
        assert out == [event]
        return
    for translated in out:
        _validate(target, translated)


def test_skips_are_only_the_expected_ones() -> None:
    """Guard: the examples that cannot be checked are exactly the known ones."""
    invalid_sources = {
        (src, kind)
        for _, src, _, source, _, evs in _CASES
        for kind, event in evs
        if not _valid(source, event)
    }
    assert invalid_sources == {
        # both SDKs now require `usage`, the 2025-04 spec example has none
        ("beta", "conversation.item.input_audio_transcription.completed"),
        # the beta SDK requires `client_secret` on a transcription session
        ("beta", "transcription_session.updated"),
        ("ga", "transcription_session.updated"),
        # the spec's example has a typo: type " input_audio_buffer.dtmf_event_received"
        ("ga", "input_audio_buffer.dtmf_event_received"),
        # the example is the legacy beta event, which the GA SDK's client union lacks
        ("ga", "transcription_session.update"),
        # GA spec examples with beta-named assistant parts ("audio", "text") the GA SDK refuses
        ("ga", "conversation.item.retrieved"),
        ("ga", "response.output_item.done"),
        # the out-of-band example's `input` has an item_reference, which the GA SDK's
        # response.create model lacks (only its *_with_references param type has it)
        ("ga", "response.create"),
    }


def test_beta_transcription_session_updated_validates_in_ga_once_fixed_up() -> None:
    # The beta example's `include` value is not one GA knows; with a GA value it validates.
    event = {**BETA["transcription_session.updated"][0]}
    event["session"] = {**event["session"], "include": ["item.input_audio_transcription.logprobs"]}
    (out,) = tr.translate_server_event(event, "beta", "ga")
    _validate(GA_SERVER, out)


def test_ga_transcription_session_validates_in_beta_when_it_has_a_client_secret() -> None:
    session = {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": "sess_1",
        "client_secret": {"value": "ek_1", "expires_at": 1},
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
    }
    event = {"type": "session.updated", "event_id": "e", "session": session}
    _validate(GA_SERVER, event)
    (out,) = tr.translate_server_event(event, "ga", "beta")
    _validate(BETA_SERVER, out)


def test_a_beta_tool_call_turn_validates_in_ga() -> None:
    """A beta upstream's function-call turn, translated with state, is valid GA throughout."""
    item = {
        "id": "fc_001",
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "name": "get_weather",
        "call_id": "call_001",
        "arguments": "",
    }
    done_item = {**item, "status": "completed", "arguments": '{"location": "San Francisco"}'}
    stream: list[Event] = [
        BETA["response.created"][0],
        {"type": "response.output_item.added", "event_id": "e1", "response_id": "resp_002",
         "output_index": 0, "item": item},
        {"type": "conversation.item.created", "event_id": "e2", "previous_item_id": None,
         "item": item},
        BETA["response.function_call_arguments.delta"][0],
        BETA["response.function_call_arguments.done"][0],
        {"type": "response.output_item.done", "event_id": "e3", "response_id": "resp_002",
         "output_index": 0, "item": done_item},
        {**BETA["response.done"][0],
         "response": {**BETA["response.done"][0]["response"], "output": [done_item]}},
    ]  # fmt: skip
    state = tr.TranslationState()
    out = [e for event in stream for e in tr.translate_server_event(event, "beta", "ga", state)]
    for event in out:
        _validate(GA_SERVER, event)
    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
