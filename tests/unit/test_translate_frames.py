"""The bytes-level fast path gives the same JSON as parse + translate + dump."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol import translate as tr
from tests.unit.test_translate_examples import BETA, GA

Event = dict[str, Any]

AUDIO_B64 = base64.b64encode(bytes(range(256)) * 19)[:6400].decode()  # ~100 ms of pcm16


def _slow(frame: bytes, src: tr.Dialect, dst: tr.Dialect, *, server: bool) -> list[Event]:
    fn = tr.translate_server_event if server else tr.translate_client_event
    return fn(orjson.loads(frame), src, dst)


def _fast(frame: bytes, src: tr.Dialect, dst: tr.Dialect, *, server: bool) -> list[Event]:
    fn = tr.translate_server_frame if server else tr.translate_client_frame
    return [orjson.loads(out) for out in fn(frame, src, dst)]


# ---- serialisations a peer may use --------------------------------------------------------------


def _dumps_variants(event: Event) -> list[bytes]:
    return [
        orjson.dumps(event),
        json.dumps(event).encode(),  # ", " and ": "
        json.dumps(event, indent=2, ensure_ascii=False).encode(),
        json.dumps(event, separators=(",", ":")).encode(),
        b" \r\n\t" + json.dumps(event).encode(),
    ]


_KNOWN_TYPES = sorted({*BETA, *GA, "transcription_session.created", "session.close", "x.unknown"})
_text = st.text(max_size=8)  # any unicode, quotes and backslashes included
_value = (
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | _text | st.lists(_text, max_size=2)
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Events of any type, with the type at any position and fields that may need escaping."""
    kind = draw(st.sampled_from(_KNOWN_TYPES))
    fields: list[tuple[str, Any]] = [("type", kind)]
    if draw(st.booleans()):
        fields.append(("event_id", draw(_text)))
    fields.append(("delta", draw(st.sampled_from([AUDIO_B64, "", 'a"b\\c']))))
    fields += draw(
        st.lists(st.tuples(st.sampled_from(["x_a", "x_b", "item_id"]), _value), max_size=3)
    )
    order = draw(st.permutations(fields))
    event = dict(order)
    variant = draw(st.sampled_from(_dumps_variants(event)))
    return variant


@given(frames(), st.sampled_from([("beta", "ga"), ("ga", "beta"), ("ga", "ga")]), st.booleans())
def test_frame_translation_equals_event_translation(
    frame: bytes, direction: tuple[tr.Dialect, tr.Dialect], server: bool
) -> None:
    src, dst = direction
    assert _fast(frame, src, dst, server=server) == _slow(frame, src, dst, server=server)


@pytest.mark.parametrize("kind", sorted({*BETA, *GA}))
def test_every_example_frame_equals_event_translation(kind: str) -> None:
    for table, src, dst in ((BETA, "beta", "ga"), (GA, "ga", "beta")):
        for event in table.get(kind, []):
            for frame in _dumps_variants(event):
                for server in (True, False):
                    fast = _fast(frame, src, dst, server=server)  # type: ignore[arg-type]
                    assert fast == _slow(frame, src, dst, server=server)  # type: ignore[arg-type]


# ---- the fast path really is taken --------------------------------------------------------------


def _delta(kind: str, *, event_id_first: bool = False) -> bytes:
    body = {
        "type": kind,
        "event_id": "event_4950",
        "response_id": "resp_001",
        "item_id": "msg_008",
        "output_index": 0,
        "content_index": 0,
        "delta": AUDIO_B64,
    }
    if event_id_first:
        body = {"event_id": body.pop("event_id"), **body}
    return orjson.dumps(body)


@pytest.mark.parametrize("event_id_first", [False, True])
def test_audio_delta_is_renamed_on_the_bytes(event_id_first: bool) -> None:
    frame = _delta("response.output_audio.delta", event_id_first=event_id_first)
    (out,) = tr.translate_server_frame(frame, "ga", "beta")
    assert out == frame.replace(b'"response.output_audio.delta"', b'"response.audio.delta"')
    (back,) = tr.translate_server_frame(out, "beta", "ga")
    assert back == frame


def test_pretty_printed_frame_is_renamed_on_the_bytes() -> None:
    frame = b'{ "type" : "response.audio_transcript.delta",\n "delta": "hi" }'
    assert tr.translate_server_frame(frame, "beta", "ga") == [
        b'{ "type" : "response.output_audio_transcript.delta",\n "delta": "hi" }'
    ]


def test_untouched_frames_keep_their_bytes() -> None:
    append = orjson.dumps({"type": "input_audio_buffer.append", "audio": AUDIO_B64})
    assert tr.translate_client_frame(append, "beta", "ga")[0] is append
    started = b'{"event_id":"e","type":"output_audio_buffer.started","response_id":"r"}'
    assert tr.translate_server_frame(started, "ga", "beta")[0] is started
    # Parsed (type not first) but untouched: the original bytes are forwarded.
    late = b'{"item": {"type": "x"}, "type": "conversation.item.delete", "item_id": "i"}'
    assert tr.translate_client_frame(late, "ga", "beta")[0] is late


def test_escaped_type_takes_the_slow_path_correctly() -> None:
    frame = rb'{"type":"response.output\u005faudio.delta","delta":"AAAA"}'
    assert tr.sniff_type_span(frame) is None
    (out,) = tr.translate_server_frame(frame, "ga", "beta")
    assert orjson.loads(out) == {"type": "response.audio.delta", "delta": "AAAA"}


def test_nested_type_is_not_mistaken_for_the_top_level_one() -> None:
    frame = b'{"item":{"type":"response.audio.delta"},"type":"x.unknown"}'
    assert tr.sniff_type_span(frame) is None
    assert tr.translate_server_frame(frame, "beta", "ga") == [frame]
    frame2 = b'{"event_id":"a\\"type\\":\\"response.audio.delta","type":"x.unknown"}'
    assert tr.translate_server_frame(frame2, "beta", "ga") == [frame2]


def test_frames_that_become_two_or_none() -> None:
    created = orjson.dumps(BETA["conversation.item.created"][0])
    added, done = (orjson.loads(f) for f in tr.translate_server_frame(created, "beta", "ga"))
    assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
    ga_done = orjson.dumps(GA["conversation.item.done"][0])
    assert tr.translate_server_frame(ga_done, "ga", "beta") == []


def test_state_reaches_the_parsed_frames() -> None:
    state = tr.TranslationState()
    added = {
        "type": "response.output_item.added",
        "event_id": "e",
        "item": {"id": "fc_001", "type": "function_call", "name": "get_weather"},
    }
    tr.translate_server_frame(orjson.dumps(added), "beta", "ga", state)
    done = orjson.dumps(BETA["response.function_call_arguments.done"][0])
    (out,) = tr.translate_server_frame(done, "beta", "ga", state)
    assert orjson.loads(out)["name"] == "get_weather"


@pytest.mark.parametrize(
    "frame", [b"", b"not json", b"[1,2]", b'"s"', b'{"type":"session.update",']
)
def test_malformed_frames_pass_through(frame: bytes) -> None:
    assert tr.translate_client_frame(frame, "beta", "ga") == [frame]
    assert tr.translate_server_frame(frame, "ga", "beta") == [frame]


def test_malformed_body_after_a_renamable_type_is_renamed_not_validated() -> None:
    frame = b'{"type":"response.audio.delta","delta":'
    assert tr.translate_server_frame(frame, "beta", "ga") == [
        b'{"type":"response.output_audio.delta","delta":'
    ]


# ---- the helpers the session core uses ----------------------------------------------------------


def test_rename_server_frame() -> None:
    frame = _delta("response.output_audio.delta")
    renamed = tr.rename_server_frame(frame, b"response.output_audio.delta", "ga")
    assert renamed == frame.replace(b"response.output_audio.delta", b"response.audio.delta")
    passthrough = b'{"type":"rate_limits.updated","rate_limits":[]}'
    assert tr.rename_server_frame(passthrough, b"rate_limits.updated", "ga") is passthrough
    needs_parse = orjson.dumps(GA["response.done"][0])
    assert tr.rename_server_frame(needs_parse, b"response.done", "ga") is None


def test_rename_event_type_bytes_with_any_table() -> None:
    table = {b"a.b": b"c.d.e"}
    assert tr.rename_event_type_bytes(b'{"type":"a.b","x":1}', table) == b'{"type":"c.d.e","x":1}'
    assert tr.rename_event_type_bytes(b'{"type":"z","x":1}', table) is None
    assert tr.rename_event_type_bytes(b'{"x":{},"type":"a.b"}', table) is None


def test_sniff_type_span_positions() -> None:
    for frame in (
        b'{"type":"t"}',
        b'{"event_id":"e","type":"t"}',
        b'{"a":1,"b":null,"c":true,"type":"t"}',
        b' { "a" : -1.5e3 , "type" : "t" }',
    ):
        span = tr.sniff_type_span(frame)
        assert span is not None
        assert frame[span[0] : span[1]] == b"t"
    assert tr.sniff_type_span(b'{"a":1,"b":2,"c":3,"d":4,"type":"t"}') is None  # too far: parse
