from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.sniff import NotAnEvent, base64_field_bytes, parse_event, sniff_type


def test_type_first_is_read_without_parsing() -> None:
    frame = b'{"type":"response.output_audio.delta","event_id":"e1","delta":"AAAA"}'
    assert sniff_type(frame) == b"response.output_audio.delta"


def test_json_dumps_spacing_is_read() -> None:
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": "QUJD"}).encode()
    assert sniff_type(frame) == b"input_audio_buffer.append"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"event_id":"x","type":"response.done"}',  # type not first: caller parses
        b'{"type":1}',
        b'{"type":"a\\"b"}',
        b"[1,2]",
        b"",
        b'{"type":"' + b"x" * 200,
    ],
)
def test_other_layouts_fall_back(frame: bytes) -> None:
    assert sniff_type(frame) is None


@given(st.text(min_size=1, max_size=60).filter(lambda t: '"' not in t and "\\" not in t))
def test_sniff_agrees_with_a_parse(kind: str) -> None:
    frame = json.dumps({"type": kind, "x": 1}, ensure_ascii=False).encode()
    sniffed = sniff_type(frame)
    assert sniffed is None or sniffed.decode() == kind


def test_base64_field_bytes() -> None:
    frame = b'{"type":"response.output_audio.delta","delta":"QUJDRA==","item_id":"i"}'
    assert base64_field_bytes(frame, b"delta") == 4  # "ABCD"
    assert base64_field_bytes(b'{"type":"x","delta": "QUJD"}', b"delta") == 3
    assert base64_field_bytes(frame, b"missing") == 0


@pytest.mark.parametrize(
    ("frame", "message", "event_id"),
    [
        (b"{not json", "We could not parse the JSON body of your event", None),
        (b"[]", "An event must be a JSON object.", None),
        (b'{"event_id":"c1"}', "The 'type' field is missing.", "c1"),
        (b'{"event_id":"c2","type":5}', "The 'type' field must be a non-empty string.", "c2"),
    ],
)
def test_parse_event_refusals(frame: bytes, message: str, event_id: str | None) -> None:
    with pytest.raises(NotAnEvent) as caught:
        parse_event(frame)
    assert str(caught.value).startswith(message)
    assert caught.value.event_id == event_id
