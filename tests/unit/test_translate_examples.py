"""Beta <-> GA translation of every example event of the reference (Appendix A and B).

The examples live in ``test_translate_examples.json`` (see its ``note``). ``BETA`` and ``GA``
map an event type to the list of its examples; other test modules import them from here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol import translate as tr
from gateway.protocol.translate import TranslationState

_DATA = json.loads(Path(__file__).with_name("test_translate_examples.json").read_text("utf-8"))
BETA: dict[str, list[dict[str, Any]]] = _DATA["beta"]
GA: dict[str, list[dict[str, Any]]] = _DATA["ga"]

BETA_CLIENT_TYPES = frozenset(
    {
        "session.update",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
    }
)
GA_CLIENT_TYPES = BETA_CLIENT_TYPES  # GA's spec keeps the legacy transcription_session.update


def one(kind: str, dialect: str = "beta", index: int = 0) -> dict[str, Any]:
    """A deep copy of an example, free to edit."""
    return copy.deepcopy((BETA if dialect == "beta" else GA)[kind][index])


def examples(dialect: str, *, client: bool) -> list[tuple[str, dict[str, Any]]]:
    table, clients = (BETA, BETA_CLIENT_TYPES) if dialect == "beta" else (GA, GA_CLIENT_TYPES)
    return [
        (kind, event)
        for kind, events in table.items()
        for event in events
        if (kind in clients) == client
    ]


def _ids(params: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [kind for kind, _ in params]


# ---- every example: no exception, no mutation, identity when nothing changes ----------------

_ALL = [
    ("client", "beta", "ga", examples("beta", client=True)),
    ("client", "ga", "beta", examples("ga", client=True)),
    ("server", "beta", "ga", examples("beta", client=False)),
    ("server", "ga", "beta", examples("ga", client=False)),
]


@pytest.mark.parametrize(
    ("side", "src", "dst", "kind", "event"),
    [(side, s, d, k, e) for side, s, d, evs in _ALL for k, e in evs],
    ids=[f"{side}-{s}-{d}-{k}" for side, s, d, evs in _ALL for k, _ in evs],
)
def test_every_example_translates_without_touching_its_input(
    side: str, src: tr.Dialect, dst: tr.Dialect, kind: str, event: dict[str, Any]
) -> None:
    before = copy.deepcopy(event)
    fn = tr.translate_client_event if side == "client" else tr.translate_server_event
    out = fn(event, src, dst, TranslationState())
    assert event == before
    assert all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in out)
    assert fn(event, src, src) == [event]  # same dialect: untouched


# ---- client events, beta -> GA ---------------------------------------------------------------


def test_beta_session_update_to_ga() -> None:
    (out,) = tr.translate_client_event(one("session.update"), "beta", "ga")
    tools = one("session.update")["session"]["tools"]
    assert out == {
        "event_id": "event_123",
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": "You are a helpful assistant.",
            "tools": tools,
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            # temperature 0.8: dropped, GA has none
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                    },
                },
                "output": {"voice": "sage", "format": {"type": "audio/pcm", "rate": 24000}},
            },
        },
    }


def test_beta_transcription_session_update_becomes_a_ga_session_update() -> None:
    (out,) = tr.translate_client_event(one("transcription_session.update"), "beta", "ga")
    assert out == {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "include": ["item.input_audio_transcription.logprobs"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-transcribe", "prompt": "", "language": ""},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                    },
                    "noise_reduction": {"type": "near_field"},
                }
            },
        },
    }


def test_beta_transcription_session_drops_modalities() -> None:
    event = {"type": "transcription_session.update", "session": {"modalities": ["text"]}}
    (out,) = tr.translate_client_event(event, "beta", "ga")
    assert out["session"] == {"type": "transcription"}


def test_beta_response_create_to_ga() -> None:
    (out,) = tr.translate_client_event(one("response.create"), "beta", "ga")
    expected = one("response.create")["response"]
    for key in ("modalities", "voice", "output_audio_format", "temperature", "max_output_tokens"):
        del expected[key]
    assert out["response"] == {
        **expected,
        "output_modalities": ["audio"],
        "max_output_tokens": 1024,
        "audio": {"output": {"voice": "sage", "format": {"type": "audio/pcm", "rate": 24000}}},
    }


def test_beta_response_create_max_tokens_either_name() -> None:
    for name in ("max_output_tokens", "max_response_output_tokens"):
        event = {"type": "response.create", "response": {name: 7}}
        assert tr.translate_client_event(event, "beta", "ga")[0]["response"] == {
            "max_output_tokens": 7
        }


def test_beta_response_create_input_items_are_translated() -> None:
    event = {
        "type": "response.create",
        "response": {
            "conversation": "none",
            "input": [
                {"type": "item_reference", "id": "item_1"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "x"}],
                },
            ],
        },
    }
    (out,) = tr.translate_client_event(event, "beta", "ga")
    assert out["response"]["input"] == [
        {"type": "item_reference", "id": "item_1"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]},
    ]


def test_user_item_create_is_unchanged_both_ways() -> None:
    for src, dst, dialect in (("beta", "ga", "beta"), ("ga", "beta", "ga")):
        event = one("conversation.item.create", dialect)
        assert tr.translate_client_event(event, src, dst) == [event]  # type: ignore[arg-type]


def test_assistant_item_content_types() -> None:
    beta_item = {
        "type": "message",
        "role": "assistant",
        "object": "realtime.item",
        "content": [{"type": "text", "text": "hi"}, {"type": "audio", "transcript": "hi"}],
    }
    ga_item = {
        **beta_item,
        "content": [
            {"type": "output_text", "text": "hi"},
            {"type": "output_audio", "transcript": "hi"},
        ],
    }
    to_ga = tr.translate_client_event(
        {"type": "conversation.item.create", "item": beta_item}, "beta", "ga"
    )
    assert to_ga == [{"type": "conversation.item.create", "item": ga_item}]
    to_beta = tr.translate_client_event(
        {"type": "conversation.item.create", "item": ga_item}, "ga", "beta"
    )
    assert to_beta == [{"type": "conversation.item.create", "item": beta_item}]


def test_user_text_parts_are_never_renamed() -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "text", "text": "odd"}]}
    event = {"type": "conversation.item.create", "item": item}
    assert tr.translate_client_event(event, "beta", "ga") == [event]


@pytest.mark.parametrize(
    "kind",
    [
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.cancel",
    ],
)
def test_client_events_with_the_same_shape_pass_as_the_same_object(kind: str) -> None:
    for dialect, src, dst in (("beta", "beta", "ga"), ("ga", "ga", "beta")):
        event = (BETA if dialect == "beta" else GA)[kind][0]
        (out,) = tr.translate_client_event(event, src, dst)  # type: ignore[arg-type]
        assert out is event


def test_unknown_client_event_passes_untouched() -> None:
    event = {"type": "session.close", "x": [1]}
    assert tr.translate_client_event(event, "beta", "ga")[0] is event


# ---- client events, GA -> beta ---------------------------------------------------------------


def test_ga_session_update_example_to_beta() -> None:
    (out,) = tr.translate_client_event(one("session.update", "ga"), "ga", "beta")
    expected = one("session.update", "ga")
    del expected["session"]["type"]
    assert out == expected


def test_ga_session_update_with_audio_to_beta() -> None:
    event = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["text"],
            "max_output_tokens": 200,
            "truncation": "auto",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": None,
                    "noise_reduction": {"type": "far_field"},
                    "transcription": {"model": "gpt-4o-transcribe", "languages": ["en"]},
                },
                "output": {"format": {"type": "audio/pcma"}, "voice": "marin", "speed": 1.2},
            },
        },
    }
    (out,) = tr.translate_client_event(event, "ga", "beta")
    assert out == {
        "type": "session.update",
        "session": {
            "modalities": ["text"],
            "max_response_output_tokens": 200,
            "truncation": "auto",  # GA-only: passes through, the upstream judges
            "input_audio_format": "g711_ulaw",
            "turn_detection": None,
            "input_audio_noise_reduction": {"type": "far_field"},
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "languages": ["en"]},
            "output_audio_format": "g711_alaw",
            "voice": "marin",
            "speed": 1.2,
        },
    }


def test_ga_transcription_session_update_becomes_transcription_session_update() -> None:
    event = {
        "type": "session.update",
        "event_id": "e1",
        "session": {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
            "include": ["item.input_audio_transcription.logprobs"],
        },
    }
    (out,) = tr.translate_client_event(event, "ga", "beta")
    assert out == {
        "type": "transcription_session.update",
        "event_id": "e1",
        "session": {
            "input_audio_format": "pcm16",
            "include": ["item.input_audio_transcription.logprobs"],
        },
    }


def test_ga_response_create_examples_to_beta() -> None:
    bare, out_of_band = GA["response.create"]
    assert tr.translate_client_event(bare, "ga", "beta") == [bare]
    (out,) = tr.translate_client_event(out_of_band, "ga", "beta")
    expected = copy.deepcopy(out_of_band["response"])
    expected["modalities"] = expected.pop("output_modalities")
    assert out["response"] == expected


def test_ga_response_create_audio_output_to_beta() -> None:
    event = {
        "type": "response.create",
        "response": {
            "output_modalities": ["audio"],
            "max_output_tokens": 50,
            "audio": {"output": {"voice": "cedar", "format": {"type": "audio/pcm", "rate": 24000}}},
        },
    }
    assert tr.translate_client_event(event, "ga", "beta")[0]["response"] == {
        "modalities": ["text", "audio"],
        "max_response_output_tokens": 50,
        "voice": "cedar",
        "output_audio_format": "pcm16",
    }


def test_ga_format_beta_cannot_express_is_kept_as_is() -> None:
    fmt = {"type": "audio/pcm", "rate": 16000}
    event = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": fmt}}},
    }
    (out,) = tr.translate_client_event(event, "ga", "beta")
    assert out["session"] == {"input_audio_format": fmt}


# ---- server events, beta -> GA ---------------------------------------------------------------

RENAMES = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
}


@pytest.mark.parametrize(("beta", "ga"), RENAMES.items())
def test_renamed_server_events(beta: str, ga: str) -> None:
    beta_event, ga_event = one(beta), one(ga, "ga")
    assert tr.translate_server_event(beta_event, "beta", "ga") == [{**beta_event, "type": ga}]
    assert tr.translate_server_event(ga_event, "ga", "beta") == [{**ga_event, "type": beta}]


def test_beta_session_created_to_ga() -> None:
    (out,) = tr.translate_server_event(one("session.created"), "beta", "ga")
    assert out == {
        "event_id": "event_1234",
        "type": "session.created",
        "session": {
            "type": "realtime",
            "id": "sess_001",
            "object": "realtime.session",
            "model": "gpt-4o-realtime-preview",
            "output_modalities": ["audio"],
            "instructions": "...model instructions here...",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 200,
                    },
                },
                "output": {"voice": "sage", "format": {"type": "audio/pcm", "rate": 24000}},
            },
        },
    }


def test_beta_session_updated_text_only_to_ga() -> None:
    (out,) = tr.translate_server_event(one("session.updated"), "beta", "ga")
    session = out["session"]
    assert session["output_modalities"] == ["text"]
    assert session["max_output_tokens"] == 200
    assert session["audio"]["input"]["turn_detection"] is None
    assert "temperature" not in session


def test_beta_transcription_session_updated_to_ga() -> None:
    (out,) = tr.translate_server_event(one("transcription_session.updated"), "beta", "ga")
    assert out["type"] == "session.updated"
    assert out["session"]["type"] == "transcription"
    assert out["session"]["object"] == "realtime.transcription_session"
    assert out["session"]["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    created = {**one("transcription_session.updated"), "type": "transcription_session.created"}
    assert tr.translate_server_event(created, "beta", "ga")[0]["type"] == "session.created"


def test_beta_item_created_becomes_added_and_a_synthesised_done() -> None:
    added, done = tr.translate_server_event(one("conversation.item.created"), "beta", "ga")
    item = one("conversation.item.created")["item"]
    assert added == {
        "event_id": "event_1920",
        "type": "conversation.item.added",
        "previous_item_id": "msg_002",
        "item": item,
    }
    assert done == {
        "type": "conversation.item.done",
        "event_id": "event_1920_done",
        "previous_item_id": "msg_002",
        "item": item,
    }


def test_beta_item_created_in_progress_is_only_added() -> None:
    event = one("conversation.item.created")
    event["item"].update(status="in_progress", role="assistant")
    (added,) = tr.translate_server_event(event, "beta", "ga")
    assert added["type"] == "conversation.item.added"


def test_with_state_output_item_done_closes_an_open_item() -> None:
    state = TranslationState()
    created = one("conversation.item.created")
    created["item"].update(id="msg_007", status="in_progress", role="assistant")
    tr.translate_server_event(created, "beta", "ga", state)
    out, done = tr.translate_server_event(one("response.output_item.done"), "beta", "ga", state)
    assert out["type"] == "response.output_item.done"
    assert out["item"]["content"] == [
        {"type": "output_text", "text": "Sure, I can help with that."}
    ]
    assert done == {
        "type": "conversation.item.done",
        "event_id": "event_3536_done",
        "previous_item_id": "msg_002",
        "item": out["item"],
    }
    assert not state.open_items
    # Without an open item (e.g. an out-of-band response), nothing is synthesised.
    assert (
        len(tr.translate_server_event(one("response.output_item.done"), "beta", "ga", state)) == 1
    )


def test_with_state_function_name_is_filled_in() -> None:
    state = TranslationState()
    added = {
        "event_id": "e1",
        "type": "response.output_item.added",
        "response_id": "resp_002",
        "output_index": 0,
        "item": {
            "id": "fc_001",
            "type": "function_call",
            "status": "in_progress",
            "name": "get_weather",
            "call_id": "call_001",
            "arguments": "",
        },
    }
    assert tr.translate_server_event(added, "beta", "ga", state) == [added]
    (done,) = tr.translate_server_event(
        one("response.function_call_arguments.done"), "beta", "ga", state
    )
    assert done == {**one("response.function_call_arguments.done"), "name": "get_weather"}
    assert not state.function_names
    # Stateless, the event passes as it is.
    event = one("response.function_call_arguments.done")
    assert tr.translate_server_event(event, "beta", "ga") == [event]


def test_state_is_bounded() -> None:
    state = TranslationState()
    for i in range(1000):
        state.remember_open_item(f"item_{i}", None)
        state.remember_function(f"fc_{i}", "f")
    assert len(state.open_items) <= 256
    assert len(state.function_names) <= 256
    assert "item_999" in state.open_items


def test_beta_item_retrieved_to_ga() -> None:
    # The spec's example is typed conversation.item.created by mistake.
    event = {**one("conversation.item.retrieved"), "type": "conversation.item.retrieved"}
    event["item"]["role"] = "assistant"
    event["item"]["content"] = [{"type": "audio", "transcript": "hi", "audio": "AAAA"}]
    (out,) = tr.translate_server_event(event, "beta", "ga")
    assert out["item"]["content"] == [{"type": "output_audio", "transcript": "hi", "audio": "AAAA"}]


def test_beta_output_items_to_ga() -> None:
    (added,) = tr.translate_server_event(one("response.output_item.added"), "beta", "ga")
    assert added == one("response.output_item.added")
    (done,) = tr.translate_server_event(one("response.output_item.done"), "beta", "ga")
    assert done["item"]["content"][0]["type"] == "output_text"


@pytest.mark.parametrize("kind", ["response.content_part.added", "response.content_part.done"])
def test_content_parts_keep_text_and_audio_in_both_dialects(kind: str) -> None:
    beta_event = one(kind)
    assert tr.translate_server_event(beta_event, "beta", "ga") == [beta_event]
    ga_event = one(kind, "ga")
    assert tr.translate_server_event(ga_event, "ga", "beta") == [ga_event]
    stray = {**ga_event, "part": {"type": "output_audio", "transcript": ""}}
    (out,) = tr.translate_server_event(stray, "ga", "beta")
    assert out["part"] == {"type": "audio", "transcript": ""}


def test_beta_response_done_to_ga() -> None:
    (out,) = tr.translate_server_event(one("response.done"), "beta", "ga")
    expected = one("response.done")
    expected["response"]["output"][0]["content"][0]["type"] = "output_text"
    assert out == expected


def test_beta_response_object_with_audio_config_to_ga() -> None:
    event = {
        "type": "response.created",
        "event_id": "e",
        "response": {
            "id": "resp_1",
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "output_audio_format": "g711_ulaw",
            "temperature": 0.8,
            "max_output_tokens": "inf",
        },
    }
    (out,) = tr.translate_server_event(event, "beta", "ga")
    assert out["response"] == {
        "id": "resp_1",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"voice": "alloy", "format": {"type": "audio/pcmu"}}},
    }


# ---- server events, GA -> beta ---------------------------------------------------------------


def test_ga_session_created_to_beta() -> None:
    out, conversation = tr.translate_server_event(one("session.created", "ga"), "ga", "beta")
    assert conversation == {
        "type": "conversation.created",
        "event_id": "event_C9G5RJeJ2gF77mV7f2B1j_conv",
        "conversation": {"id": "conv_C9G5QPteg4UIbotdKLoYQ", "object": "realtime.conversation"},
    }
    session = one("session.created", "ga")["session"]
    assert out == {
        "type": "session.created",
        "event_id": "event_C9G5RJeJ2gF77mV7f2B1j",
        "session": {
            "object": "realtime.session",
            "id": "sess_C9G5QPteg4UIbotdKLoYQ",
            "model": "gpt-realtime-2025-08-28",
            "modalities": ["text", "audio"],
            "instructions": session["instructions"],
            "tools": [],
            "tool_choice": "auto",
            "max_response_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": 1756324625,
            "input_audio_format": "pcm16",
            "input_audio_transcription": None,
            "input_audio_noise_reduction": None,
            "turn_detection": session["audio"]["input"]["turn_detection"],
            "output_audio_format": "pcm16",
            "voice": "marin",
            "speed": 1,
            "include": None,
        },
    }


def test_ga_transcription_session_events_to_beta() -> None:
    session = {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": "sess_1",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
    }
    for kind in ("session.created", "session.updated"):
        (out,) = tr.translate_server_event({"type": kind, "session": session}, "ga", "beta")
        assert out["type"] == "transcription_session." + kind.split(".")[1]
        assert out["session"] == {
            "object": "realtime.transcription_session",
            "id": "sess_1",
            "input_audio_format": "pcm16",
        }


def test_ga_item_added_becomes_created_and_done_is_dropped() -> None:
    (created,) = tr.translate_server_event(one("conversation.item.added", "ga"), "ga", "beta")
    assert created == {**one("conversation.item.added", "ga"), "type": "conversation.item.created"}
    assert tr.translate_server_event(one("conversation.item.done", "ga"), "ga", "beta") == []


def test_ga_items_with_output_parts_to_beta() -> None:
    (out,) = tr.translate_server_event(one("response.done", "ga"), "ga", "beta")
    response = out["response"]
    assert response["output"][0]["content"] == [
        {
            "type": "audio",
            "transcript": "Loud and clear! I can hear you perfectly. How can I help you today?",
        }
    ]
    assert response["modalities"] == ["text", "audio"]
    assert response["voice"] == "alloy"
    assert response["output_audio_format"] == "pcm16"
    assert response["max_output_tokens"] == "inf"  # response objects use this name in beta too
    assert "audio" not in response
    assert response["usage"] == one("response.done", "ga")["response"]["usage"]


def test_ga_item_retrieved_with_beta_named_parts_is_unchanged() -> None:
    event = one("conversation.item.retrieved", "ga")
    assert tr.translate_server_event(event, "ga", "beta") == [event]


@pytest.mark.parametrize(
    "kind",
    [
        "input_audio_buffer.timeout_triggered",
        "conversation.item.input_audio_transcription.segment",
        "mcp_list_tools.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call_arguments.delta",
    ],
)
def test_ga_only_events_pass_through_to_beta(kind: str) -> None:
    event = GA[kind][0]
    (out,) = tr.translate_server_event(event, "ga", "beta")
    assert out is event


@pytest.mark.parametrize(
    "kind",
    [
        "error",
        "rate_limits.updated",
        "input_audio_buffer.committed",
        "input_audio_buffer.speech_started",
        "response.function_call_arguments.delta",
        "conversation.item.input_audio_transcription.completed",
        "output_audio_buffer.started",
    ],
)
def test_same_shape_server_events_pass_as_the_same_object(kind: str) -> None:
    assert tr.translate_server_event(BETA[kind][0], "beta", "ga")[0] is BETA[kind][0]
    assert tr.translate_server_event(GA[kind][0], "ga", "beta")[0] is GA[kind][0]


def test_conversation_created_exists_only_for_beta_clients() -> None:
    assert tr.translate_server_event(BETA["conversation.created"][0], "beta", "ga") == []
    assert tr.translate_server_event(GA["conversation.created"][0], "ga", "beta") == [
        GA["conversation.created"][0]
    ]


def test_events_with_odd_shapes_do_not_raise() -> None:
    odd: list[dict[str, Any]] = [
        {"type": "session.update", "session": None},
        {"type": "session.update", "session": {"audio": None, "modalities": "audio"}},
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": 3}}},
        {"type": "response.create", "response": {"input": "x", "audio": {"output": None}}},
        {"type": "conversation.item.create", "item": {"role": "assistant", "content": [1, None]}},
        {"type": "conversation.item.created"},
        {"type": "response.output_item.done", "item": "x"},
        {"type": "response.function_call_arguments.done", "item_id": 3},
        {"type": 12},
        {},
    ]
    for event in odd:
        for src, dst in (("beta", "ga"), ("ga", "beta")):
            tr.translate_client_event(event, src, dst, TranslationState())  # type: ignore[arg-type]
            tr.translate_server_event(event, src, dst, TranslationState())  # type: ignore[arg-type]


def test_helpers_used_by_the_session_core() -> None:
    ga = tr.client_event_to_ga(one("session.update"))
    assert ga["session"]["type"] == "realtime"
    assert tr.client_event_from_ga(ga, "ga") == [ga]
    (beta,) = tr.ga_event_to_client(ga, "beta")
    assert beta["session"]["voice"] == "sage"
