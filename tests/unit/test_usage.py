"""Usage metering: parsing every usage shape, audio durations, exact cost."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ModelPrice
from gateway.protocol.usage import (
    Usage,
    audio_seconds,
    b64_decoded_len,
    base64_decoded_len,
    bytes_per_second,
    cost_decimal,
    cost_usd,
    parse_usage,
)

# ../shared/reference/realtime-protocol.md section 4.2, verbatim.
GA_USAGE = {
    "total_tokens": 253,
    "input_tokens": 132,
    "output_tokens": 121,
    "input_token_details": {
        "text_tokens": 119,
        "audio_tokens": 13,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
}
BETA_USAGE = {
    "total_tokens": 275,
    "input_tokens": 127,
    "output_tokens": 148,
    "input_token_details": {
        "cached_tokens": 384,
        "text_tokens": 119,
        "audio_tokens": 8,
        "cached_tokens_details": {"text_tokens": 128, "audio_tokens": 256},
    },
    "output_token_details": {"text_tokens": 36, "audio_tokens": 112},
}
OLDEST_USAGE = {"total_tokens": 50, "input_tokens": 20, "output_tokens": 30}


# ---- parse_usage ---------------------------------------------------------------------------


def test_ga_shape_stores_uncached_and_cached_apart() -> None:
    usage = parse_usage(GA_USAGE)
    assert usage == Usage(
        input_text=119 - 64, input_audio=13, cached_text=64, output_text=30, output_audio=91
    )
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (132, 121, 253)
    assert usage.cached_tokens == 64


def test_beta_example_with_inconsistent_numbers_trusts_cached_and_clamps_uncached() -> None:
    # The spec's own example reports 384 cached of 127 input tokens: not validated.
    usage = parse_usage(BETA_USAGE)
    assert usage == Usage(cached_text=128, cached_audio=256, output_text=36, output_audio=112)


def test_beta_cached_total_without_details_goes_to_text_then_audio() -> None:
    usage = parse_usage(
        {
            "input_tokens": 100,
            "input_token_details": {"cached_tokens": 70, "text_tokens": 50, "audio_tokens": 50},
        }
    )
    assert usage == Usage(input_text=0, input_audio=30, cached_text=50, cached_audio=20)
    assert usage.input_tokens == 100


def test_beta_cached_total_larger_than_all_classes_keeps_the_remainder_as_cached_text() -> None:
    usage = parse_usage({"input_token_details": {"cached_tokens": 10, "text_tokens": 3}})
    assert usage == Usage(cached_text=10)


def test_oldest_shape_attributes_totals_to_text() -> None:
    assert parse_usage(OLDEST_USAGE) == Usage(input_text=20, output_text=30)


def test_details_that_are_all_zero_fall_back_to_totals() -> None:
    usage = parse_usage(
        {
            "input_tokens": 7,
            "output_tokens": 5,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 0},
            "output_token_details": {},
        }
    )
    assert usage == Usage(input_text=7, output_text=5)


def test_unknown_fields_are_ignored() -> None:
    assert parse_usage({**OLDEST_USAGE, "reasoning_tokens": 9, "type": "tokens"}) == parse_usage(
        OLDEST_USAGE
    )


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        "usage",
        42,
        {},
        {"input_tokens": "12", "output_tokens": None},
        {"input_tokens": -5, "output_tokens": True},
        {"input_tokens": math.nan, "output_tokens": math.inf},
        {"input_token_details": [1, 2], "output_token_details": "x"},
        {"input_token_details": {"cached_tokens_details": "x", "cached_tokens": {}}},
    ],
)
def test_garbage_counts_as_zero(garbage: object) -> None:
    assert parse_usage(garbage) == Usage.ZERO


def test_integral_floats_are_counted() -> None:
    assert parse_usage({"input_tokens": 3.0, "output_tokens": 2.5}) == Usage(input_text=3)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "input_tokens",
                    "output_tokens",
                    "input_token_details",
                    "output_token_details",
                    "cached_tokens_details",
                    "text_tokens",
                    "audio_tokens",
                    "image_tokens",
                    "cached_tokens",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(_json)
def test_parse_usage_never_raises_and_counts_are_non_negative_ints(obj: object) -> None:
    usage = parse_usage(obj)
    for value in usage.as_dict().values():
        assert type(value) is int
        assert value >= 0


@st.composite
def _consistent_ga_usage(draw: st.DrawFn) -> dict[str, Any]:
    text, audio, image = (draw(st.integers(0, 10**6)) for _ in range(3))
    c_text, c_audio, c_image = (draw(st.integers(0, n)) for n in (text, audio, image))
    out_text, out_audio = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    return {
        "input_tokens": text + audio + image,
        "output_tokens": out_text + out_audio,
        "input_token_details": {
            "text_tokens": text,
            "audio_tokens": audio,
            "image_tokens": image,
            "cached_tokens": c_text + c_audio + c_image,
            "cached_tokens_details": {
                "text_tokens": c_text,
                "audio_tokens": c_audio,
                "image_tokens": c_image,
            },
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


@given(_consistent_ga_usage())
def test_consistent_usage_keeps_every_total(raw: dict[str, Any]) -> None:
    usage = parse_usage(raw)
    details = raw["input_token_details"]
    assert usage.input_tokens == raw["input_tokens"]
    assert usage.output_tokens == raw["output_tokens"]
    assert usage.cached_tokens == details["cached_tokens"]
    assert usage.input_text + usage.cached_text == details["text_tokens"]
    assert usage.input_audio + usage.cached_audio == details["audio_tokens"]


# ---- the Usage value -----------------------------------------------------------------------


def test_add_and_storage_round_trip() -> None:
    a, b = parse_usage(GA_USAGE), parse_usage(OLDEST_USAGE)
    total = a + b
    assert total.total_tokens == a.total_tokens + b.total_tokens
    assert Usage.from_dict(total.as_dict()) == total
    assert Usage.ZERO + a == a
    assert sum([a, b], Usage.ZERO) == total


def test_from_dict_is_tolerant() -> None:
    assert Usage.from_dict({"input_text": 3, "output_audio": "x", "nope": 1}) == Usage(input_text=3)


def test_usage_is_immutable() -> None:
    with pytest.raises(AttributeError):
        Usage.ZERO.input_text = 1  # type: ignore[misc]


# ---- cost ----------------------------------------------------------------------------------

GPT_REALTIME = ModelPrice(
    input_text=4.0,
    input_audio=32.0,
    cached_text=0.4,
    cached_audio=0.4,
    output_text=16.0,
    output_audio=64.0,
)


def test_cost_of_the_ga_example_by_hand() -> None:
    # uncached text 55 x $4 + audio 13 x $32 + cached text 64 x $0.40
    # + output text 30 x $16 + output audio 91 x $64, per million tokens:
    # 220 + 416 + 25.6 + 480 + 5824 = 6965.6 -> $0.0069656
    usage = parse_usage(GA_USAGE)
    assert cost_decimal(usage, GPT_REALTIME) == Decimal("0.0069656")
    assert cost_usd(usage, GPT_REALTIME) == 0.0069656


def test_cached_tokens_are_never_charged_twice() -> None:
    only_cached = parse_usage(
        {
            "input_tokens": 1000,
            "input_token_details": {
                "text_tokens": 1000,
                "cached_tokens": 1000,
                "cached_tokens_details": {"text_tokens": 1000},
            },
        }
    )
    assert cost_decimal(only_cached, GPT_REALTIME) == Decimal("0.0004")


def test_image_tokens_are_priced_as_text_input() -> None:
    usage = Usage(input_image=1_000_000, cached_image=1_000_000)
    assert cost_decimal(usage, GPT_REALTIME) == Decimal("4.4")


def test_cost_accepts_any_object_with_the_price_attributes() -> None:
    @dataclass
    class Flat:
        input_text: float = 1.1
        input_audio: float = 0.0
        cached_text: float = 0.0
        cached_audio: float = 0.0
        output_text: float = 0.0
        output_audio: float = 0.0

    # 3 x 1.1 is 3.3000000000000003 in floats; the decimal arithmetic says 3.3.
    assert cost_decimal(Usage(input_text=3_000_000), Flat()) == Decimal("3.3")


def test_zero_usage_costs_nothing() -> None:
    assert cost_usd(Usage.ZERO, GPT_REALTIME) == 0.0


# ---- audio ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audio_format", "per_second"),
    [
        ("pcm16", 48_000),
        ("g711_ulaw", 8_000),
        ("g711_alaw", 8_000),
        ({"type": "audio/pcm", "rate": 24000}, 48_000),
        ({"type": "audio/pcm"}, 48_000),
        ({"type": "audio/pcm", "rate": 16000}, 32_000),
        ({"type": "audio/pcmu"}, 8_000),
        ({"type": "audio/pcma"}, 8_000),
        # Unknown or missing: the default of both APIs.
        (None, 48_000),
        ("opus", 48_000),
        ({"type": "audio/pcm", "rate": "fast"}, 48_000),
        ({}, 48_000),
    ],
)
def test_bytes_per_second(audio_format: object, per_second: int) -> None:
    assert bytes_per_second(audio_format) == per_second
    assert audio_seconds(per_second // 10, audio_format) == pytest.approx(0.1)


def test_negative_byte_counts_are_zero_seconds() -> None:
    assert audio_seconds(-10, "pcm16") == 0.0


@given(st.binary(max_size=200))
def test_base64_decoded_len_matches_real_decoding(raw: bytes) -> None:
    padded = base64.b64encode(raw)
    assert base64_decoded_len(len(padded), padded.count(b"=")) == len(raw)
    assert b64_decoded_len(padded) == len(raw)
    assert b64_decoded_len(padded.decode()) == len(raw)
    unpadded = padded.rstrip(b"=")
    assert base64_decoded_len(len(unpadded), 0) == len(raw)


def test_a_100_ms_pcm16_delta() -> None:
    delta = base64.b64encode(bytes(4800))  # 100 ms at 24 kHz, 16-bit mono
    assert len(delta) == 6400
    assert audio_seconds(b64_decoded_len(delta), "pcm16") == pytest.approx(0.1)
    assert base64_decoded_len(0, 0) == 0
