"""Round trips: beta -> GA -> beta and GA -> beta -> GA keep every field both shapes carry.

The only documented losses: beta ``temperature`` (GA has none), beta ``modalities`` of a
transcription session, and GA ``conversation.item.done`` (beta has no such event; it comes
back synthesised from ``conversation.item.created``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import translate as tr

Event = dict[str, Any]
Translate = Callable[[Event, tr.Dialect, tr.Dialect], list[Event]]

# ---- building blocks ---------------------------------------------------------------------------

_text = st.text(max_size=12)
_ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=10)
_num = st.floats(allow_nan=False, allow_infinity=False, width=32)
_scalar = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _num | _text
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ident, inner, max_size=3),
    max_leaves=8,
)
# Unknown fields: a prefix that no real field has, so they never collide with known ones.
_extras = st.dictionaries(_ident.map(lambda s: "x_" + s), _json, max_size=2)


def _obj(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Event]:
    """An object with the given fields, some optional, plus unknown extra fields."""
    base = st.fixed_dictionaries(required, optional=optional)
    return st.builds(lambda d, x: {**x, **d}, base, _extras)


def _non_empty(strategy: st.SearchStrategy[Event]) -> st.SearchStrategy[Event]:
    # An empty audio.input object has nothing to carry and comes back absent.
    return strategy.filter(bool)


_tokens = st.integers(1, 4096) | st.just("inf")
_voice = st.sampled_from(["alloy", "sage", "marin", "cedar"]) | _text
_transcription = st.none() | _obj(
    {},
    {
        "model": st.sampled_from(["whisper-1", "gpt-4o-transcribe"]),
        "language": _text,
        "prompt": _text,
    },
)
_turn_detection = st.none() | _obj(
    {"type": st.sampled_from(["server_vad", "semantic_vad"])},
    {
        "threshold": _num,
        "prefix_padding_ms": st.integers(0, 2000),
        "silence_duration_ms": st.integers(0, 2000),
        "create_response": st.booleans(),
        "interrupt_response": st.booleans(),
        "eagerness": st.sampled_from(["low", "medium", "high", "auto"]),
        "idle_timeout_ms": st.none() | st.integers(0, 10000),
    },
)
_noise = st.none() | _obj({"type": st.sampled_from(["near_field", "far_field"])}, {})
_tools = st.lists(
    _obj(
        {"type": st.just("function"), "name": _ident}, {"description": _text, "parameters": _json}
    ),
    max_size=2,
)
_tool_choice = st.sampled_from(["auto", "none", "required"]) | st.fixed_dictionaries(
    {"type": st.just("function"), "name": _ident}
)
_beta_format = st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"])
_ga_format = st.sampled_from(
    [
        {"type": "audio/pcm", "rate": 24000},
        {"type": "audio/pcmu"},
        {"type": "audio/pcma"},
        {"type": "audio/pcm", "rate": 16000},  # beta cannot express it: carried as it is
    ]
)

# ---- items -------------------------------------------------------------------------------------


def _part(types: list[str]) -> st.SearchStrategy[Event]:
    return _obj(
        {"type": st.sampled_from(types)},
        {"text": _text, "transcript": st.none() | _text, "audio": _text},
    )


def _items(user: list[str], assistant: list[str]) -> st.SearchStrategy[Event]:
    common = {
        "id": _ident,
        "object": st.just("realtime.item"),
        "status": st.sampled_from(["completed", "incomplete", "in_progress"]),
    }

    def message(role: str, parts: list[str]) -> st.SearchStrategy[Event]:
        required = {"type": st.just("message"), "role": st.just(role)}
        return _obj(required, {**common, "content": st.lists(_part(parts), max_size=3)})

    return st.one_of(
        message("user", user),
        message("assistant", assistant),
        message("system", ["input_text"]),
        _obj(
            {"type": st.just("function_call"), "name": _ident, "arguments": _text},
            {**common, "call_id": _ident},
        ),
        _obj({"type": st.just("function_call_output"), "call_id": _ident, "output": _text}, common),
    )


beta_items = _items(["input_text", "input_audio"], ["text", "audio"])
ga_items = _items(["input_text", "input_audio", "input_image"], ["output_text", "output_audio"])
_item_reference = st.fixed_dictionaries({"type": st.just("item_reference"), "id": _ident})

# ---- sessions ----------------------------------------------------------------------------------

_BETA_AUDIO_FIELDS = {
    "input_audio_format": _beta_format,
    "input_audio_transcription": _transcription,
    "turn_detection": _turn_detection,
    "input_audio_noise_reduction": _noise,
}
beta_sessions = _obj(
    {},
    {
        **_BETA_AUDIO_FIELDS,
        "id": _ident,
        "object": st.just("realtime.session"),
        "model": _text,
        "modalities": st.sampled_from([["text", "audio"], ["text"]]),
        "instructions": _text,
        "voice": _voice,
        "output_audio_format": _beta_format,
        "tools": _tools,
        "tool_choice": _tool_choice,
        "temperature": _num,
        "max_response_output_tokens": _tokens,
        "speed": _num,
        "tracing": st.none() | st.just("auto"),
        "include": st.none() | st.just(["item.input_audio_transcription.logprobs"]),
        "expires_at": st.integers(0, 2**31),
    },
)
beta_transcription_sessions = _obj(
    {},
    {
        **_BETA_AUDIO_FIELDS,
        "id": _ident,
        "object": st.just("realtime.transcription_session"),
        "include": st.lists(_text, max_size=2),
        "client_secret": st.none() | _obj({"value": _text, "expires_at": st.integers(0, 9)}, {}),
    },
)
_ga_audio_input = _non_empty(
    _obj(
        {},
        {
            "format": _ga_format,
            "transcription": _transcription,
            "turn_detection": _turn_detection,
            "noise_reduction": _noise,
        },
    )
)
_ga_audio_output = _non_empty(_obj({}, {"format": _ga_format, "voice": _voice, "speed": _num}))
ga_sessions = _obj(
    {"type": st.just("realtime")},
    {
        "id": _ident,
        "object": st.just("realtime.session"),
        "model": _text,
        "output_modalities": st.sampled_from([["audio"], ["text"]]),
        "instructions": _text,
        "tools": _tools,
        "tool_choice": _tool_choice,
        "max_output_tokens": _tokens,
        "tracing": st.none() | st.just("auto"),
        "prompt": st.none() | _obj({"id": _ident}, {"version": _text}),
        "truncation": st.sampled_from(["auto", "disabled"]),
        "parallel_tool_calls": st.booleans(),
        "expires_at": st.integers(0, 2**31),
        "audio": _non_empty(
            _obj({}, {"input": st.none() | _ga_audio_input, "output": _ga_audio_output})
        ),
    },
)
ga_transcription_sessions = _obj(
    {"type": st.just("transcription")},
    {
        "id": _ident,
        "object": st.just("realtime.transcription_session"),
        "include": st.none() | st.just(["item.input_audio_transcription.logprobs"]),
        "audio": st.fixed_dictionaries({"input": _ga_audio_input}),
    },
)

# ---- responses ---------------------------------------------------------------------------------

beta_response_params = _obj(
    {},
    {
        "modalities": st.sampled_from([["text", "audio"], ["text"]]),
        "instructions": _text,
        "voice": _voice,
        "output_audio_format": _beta_format,
        "tools": _tools,
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "temperature": _num,
        "max_response_output_tokens": _tokens,
        "conversation": st.sampled_from(["auto", "none"]),
        "metadata": st.dictionaries(_ident, _text, max_size=2),
        "input": st.lists(beta_items | _item_reference, max_size=2),
    },
)
ga_response_params = _obj(
    {},
    {
        "output_modalities": st.sampled_from([["audio"], ["text"]]),
        "instructions": _text,
        "audio": st.fixed_dictionaries(
            {"output": _non_empty(_obj({}, {"format": _ga_format, "voice": _voice}))}
        ),
        "tools": _tools,
        "tool_choice": _tool_choice,
        "max_output_tokens": _tokens,
        "conversation": st.sampled_from(["auto", "none"]),
        "metadata": st.dictionaries(_ident, _text, max_size=2),
        "input": st.lists(ga_items | _item_reference, max_size=2),
        "parallel_tool_calls": st.booleans(),
    },
)
_response_common = {
    "id": _ident,
    "object": st.just("realtime.response"),
    "status": st.sampled_from(["in_progress", "completed", "cancelled", "failed", "incomplete"]),
    "status_details": st.none() | _json,
    "usage": st.none() | _json,
    "conversation_id": st.none() | _ident,
    "max_output_tokens": _tokens,
    "metadata": st.none() | st.dictionaries(_ident, _text, max_size=2),
}
beta_responses = _obj(
    {},
    {
        **_response_common,
        "output": st.lists(beta_items, max_size=2),
        "modalities": st.sampled_from([["text", "audio"], ["text"]]),
        "voice": _voice,
        "output_audio_format": _beta_format,
        "temperature": _num,
    },
)
ga_responses = _obj(
    {},
    {
        **_response_common,
        "output": st.lists(ga_items, max_size=2),
        "output_modalities": st.sampled_from([["audio"], ["text"]]),
        "audio": st.fixed_dictionaries(
            {"output": _non_empty(_obj({}, {"format": _ga_format, "voice": _voice}))}
        ),
    },
)

# ---- helpers -----------------------------------------------------------------------------------


def _there_and_back(
    translate: Translate, event: Event, a: tr.Dialect, b: tr.Dialect
) -> list[Event]:
    return [back for there in translate(event, a, b) for back in translate(there, b, a)]


def _event(kind: str, key: str, value: Event) -> Event:
    return {"type": kind, "event_id": "event_1", key: value}


def _without(obj: Event, *keys: str) -> Event:
    return {k: v for k, v in obj.items() if k not in keys}


# ---- sessions ----------------------------------------------------------------------------------


@given(beta_sessions)
def test_beta_session_update_round_trip(session: Event) -> None:
    event = _event("session.update", "session", session)
    back = _there_and_back(tr.translate_client_event, event, "beta", "ga")
    assert back == [{**event, "session": _without(session, "temperature")}]


@given(beta_sessions, st.sampled_from(["session.created", "session.updated"]))
def test_beta_session_events_round_trip(session: Event, kind: str) -> None:
    event = _event(kind, "session", session)
    back = _there_and_back(tr.translate_server_event, event, "beta", "ga")
    assert back[0] == {**event, "session": _without(session, "temperature")}
    # GA has no conversation.created; the way back to beta synthesises it after session.created
    assert [e["type"] for e in back[1:]] == (
        ["conversation.created"] if kind == "session.created" else []
    )


@given(beta_transcription_sessions)
def test_beta_transcription_session_round_trip(session: Event) -> None:
    update = _event("transcription_session.update", "session", session)
    assert _there_and_back(tr.translate_client_event, update, "beta", "ga") == [update]
    updated = _event("transcription_session.updated", "session", session)
    assert _there_and_back(tr.translate_server_event, updated, "beta", "ga") == [updated]


@given(ga_sessions | ga_transcription_sessions)
def test_ga_session_update_round_trip(session: Event) -> None:
    event = _event("session.update", "session", session)
    assert _there_and_back(tr.translate_client_event, event, "ga", "beta") == [event]


@given(
    ga_sessions | ga_transcription_sessions, st.sampled_from(["session.created", "session.updated"])
)
def test_ga_session_events_round_trip(session: Event, kind: str) -> None:
    event = _event(kind, "session", session)
    assert _there_and_back(tr.translate_server_event, event, "ga", "beta") == [event]


# ---- responses ---------------------------------------------------------------------------------


@given(beta_response_params)
def test_beta_response_create_round_trip(params: Event) -> None:
    event = _event("response.create", "response", params)
    back = _there_and_back(tr.translate_client_event, event, "beta", "ga")
    assert back == [{**event, "response": _without(params, "temperature")}]


@given(ga_response_params)
def test_ga_response_create_round_trip(params: Event) -> None:
    event = _event("response.create", "response", params)
    assert _there_and_back(tr.translate_client_event, event, "ga", "beta") == [event]


@given(beta_responses, st.sampled_from(["response.created", "response.done"]))
def test_beta_response_events_round_trip(response: Event, kind: str) -> None:
    event = _event(kind, "response", response)
    back = _there_and_back(tr.translate_server_event, event, "beta", "ga")
    assert back == [{**event, "response": _without(response, "temperature")}]


@given(ga_responses, st.sampled_from(["response.created", "response.done"]))
def test_ga_response_events_round_trip(response: Event, kind: str) -> None:
    event = _event(kind, "response", response)
    assert _there_and_back(tr.translate_server_event, event, "ga", "beta") == [event]


# ---- items -------------------------------------------------------------------------------------

_ITEM_SERVER_EVENTS = st.sampled_from(
    ["conversation.item.retrieved", "response.output_item.added", "response.output_item.done"]
)


@given(beta_items)
def test_beta_item_create_round_trip(item: Event) -> None:
    event = _event("conversation.item.create", "item", item)
    assert _there_and_back(tr.translate_client_event, event, "beta", "ga") == [event]


@given(ga_items)
def test_ga_item_create_round_trip(item: Event) -> None:
    event = _event("conversation.item.create", "item", item)
    assert _there_and_back(tr.translate_client_event, event, "ga", "beta") == [event]


@given(beta_items, _ITEM_SERVER_EVENTS)
def test_beta_item_server_events_round_trip(item: Event, kind: str) -> None:
    event = _event(kind, "item", item)
    assert _there_and_back(tr.translate_server_event, event, "beta", "ga") == [event]


@given(ga_items, _ITEM_SERVER_EVENTS)
def test_ga_item_server_events_round_trip(item: Event, kind: str) -> None:
    event = _event(kind, "item", item)
    assert _there_and_back(tr.translate_server_event, event, "ga", "beta") == [event]


@given(beta_items, st.none() | _ident)
def test_beta_item_created_round_trip(item: Event, previous: str | None) -> None:
    # created -> added (+ synthesised done) -> created (the done is dropped on the way back)
    event = {**_event("conversation.item.created", "item", item), "previous_item_id": previous}
    assert _there_and_back(tr.translate_server_event, event, "beta", "ga") == [event]


@given(ga_items, st.none() | _ident)
def test_ga_item_added_round_trip(item: Event, previous: str | None) -> None:
    event = {**_event("conversation.item.added", "item", item), "previous_item_id": previous}
    back = _there_and_back(tr.translate_server_event, event, "ga", "beta")
    assert back[0] == event
    if item.get("status") == "in_progress":
        assert back == [event]
    else:  # the synthesised done carries the same item
        assert back[1]["type"] == "conversation.item.done"
        assert back[1]["item"] == item


@given(
    st.sampled_from(["response.content_part.added", "response.content_part.done"]),
    _part(["text", "audio"]),
)
def test_content_part_events_round_trip(kind: str, part: Event) -> None:
    event = {**_event(kind, "part", part), "response_id": "r", "item_id": "i"}
    for a, b in (("beta", "ga"), ("ga", "beta")):
        assert _there_and_back(tr.translate_server_event, event, a, b) == [event]  # type: ignore[arg-type]


# ---- renamed and untouched events --------------------------------------------------------------

_delta_fields = {
    "response_id": _ident,
    "item_id": _ident,
    "output_index": st.integers(0, 9),
    "content_index": st.integers(0, 9),
    "delta": _text,
    "text": _text,
    "transcript": _text,
    "obfuscation": _text,
}


@given(
    st.sampled_from(
        [
            ("beta", "response.text.delta"),
            ("beta", "response.audio.done"),
            ("beta", "response.audio_transcript.delta"),
            ("ga", "response.output_text.done"),
            ("ga", "response.output_audio.delta"),
            ("ga", "response.output_audio_transcript.done"),
        ]
    ),
    _obj({}, _delta_fields),
)
def test_renamed_events_round_trip(which: tuple[tr.Dialect, str], fields: Event) -> None:
    src, kind = which
    event = {**fields, "type": kind, "event_id": "event_1"}
    dst: tr.Dialect = "ga" if src == "beta" else "beta"
    (there,) = tr.translate_server_event(event, src, dst)
    assert there["type"] != kind
    assert _without(there, "type") == _without(event, "type")
    assert _there_and_back(tr.translate_server_event, event, src, dst) == [event]


@settings(max_examples=50)
@given(_ident.map(lambda s: "x." + s), _extras)
def test_unknown_events_round_trip_as_the_same_object(kind: str, fields: Event) -> None:
    event = {**fields, "type": kind}
    for a, b in (("beta", "ga"), ("ga", "beta")):
        for translate in (tr.translate_client_event, tr.translate_server_event):
            (there,) = translate(event, a, b)  # type: ignore[arg-type]
            assert there is event
