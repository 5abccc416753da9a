"""The simulator's pure parts, without sockets."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.beta.realtime.session import Session as BetaSession
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

from gateway.sim.audio import (
    alaw_decode_sample,
    alaw_encode_sample,
    duration_ms,
    silence,
    speech_like,
    to_samples,
    tone,
    ulaw_decode_sample,
    ulaw_encode_sample,
)
from gateway.sim.config import SimConfig
from gateway.sim.conversation import Item, Part
from gateway.sim.faults import FaultAction, Faults, FaultSyntaxError, FaultTracker, parse_faults
from gateway.sim.model import plan_reply
from gateway.sim.ratelimits import RateLimitBook
from gateway.sim.session import CLIENT_EVENTS, SessionSetup, SimSession
from gateway.sim.shapes import SessionConfig, apply_update, render_beta, render_ga
from gateway.sim.usage import PromptCache
from gateway.sim.vad import EnergyVad, SpeechStarted, SpeechStopped, VadSettings
from gateway.sim.wire import SimRequestError
from tests.sim.support import BETA, GA, check_usage, rms

# --- audio and VAD -------------------------------------------------------------------------


def test_audio_helpers() -> None:
    assert silence(100) == bytes(4800)
    speech = speech_like(1000, seed=1)
    assert len(speech) == 48000
    assert speech == speech_like(1000, seed=1)
    assert speech != speech_like(1000, seed=2)
    assert rms(speech) > 3000
    assert rms(tone(100)) > 5000
    assert duration_ms(48000, "pcm16") == duration_ms(8000, "g711_ulaw") == 1000


@pytest.mark.parametrize("sample", [-32768, -12345, -100, 0, 7, 100, 1000, 12345, 32767])
def test_g711_round_trips_closely(sample: int) -> None:
    for encode, decode in (
        (ulaw_encode_sample, ulaw_decode_sample),
        (alaw_encode_sample, alaw_decode_sample),
    ):
        assert abs(decode(encode(sample)) - sample) <= max(16, abs(sample) // 16)


def feed(vad: EnergyVad, pcm: bytes, step_ms: int = 100) -> list[Any]:
    events: list[Any] = []
    for start in range(0, len(pcm), step_ms * 48):
        events += vad.feed(to_samples(pcm[start : start + step_ms * 48], "pcm16"))
    return events


def test_vad_finds_one_utterance_with_padding() -> None:
    vad = EnergyVad(VadSettings(0.5, 300, 500), 24000)
    events = feed(vad, silence(1000) + speech_like(1500, seed=4) + silence(1000))
    assert len(events) == 2
    started, stopped = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(stopped, SpeechStopped)
    assert 700 <= started.audio_start_ms <= 720  # onset at 1000 ms minus 300 ms of padding
    assert 2950 <= stopped.audio_end_ms <= 3080  # end at 2500 ms plus 500 ms of silence


def test_vad_ignores_silence_and_quiet_speech_under_a_high_threshold() -> None:
    assert feed(EnergyVad(VadSettings(), 24000), silence(2000)) == []
    assert feed(EnergyVad(VadSettings(threshold=1.0), 24000), speech_like(1000)) == []


# --- faults --------------------------------------------------------------------------------


def test_fault_syntax() -> None:
    base = Faults.from_config(SimConfig(fail_responses=True))
    faults = parse_faults(["close_after:3:4001, near_exhausted", "stall_after:9"], base)
    assert faults == Faults(
        close_after=(3, 4001), stall_after=9, near_exhausted=True, fail_responses=True
    )
    assert parse_faults(["close_after:2"], Faults()).close_after == (2, 1011)
    assert parse_faults(["none", "refuse:503"], base) == Faults(refuse_status=503)
    for bad in ("close_after:0", "refuse:200", "stall_after:x", "boom", "malformed_after"):
        with pytest.raises(FaultSyntaxError):
            parse_faults([bad], Faults())


def test_fault_tracker_counts_events_of_each_response() -> None:
    tracker = FaultTracker(Faults(close_after=(3, 1013), malformed_after=1))
    assert tracker.after_sent("session.updated") == []
    assert [f.action for f in tracker.after_sent("response.created")] == [FaultAction.MALFORMED]
    assert tracker.after_sent("rate_limits.updated") == []
    fired = tracker.after_sent("response.output_item.added")
    assert [(f.action, f.close_code) for f in fired] == [(FaultAction.CLOSE, 1013)]


# --- rate limits ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_book_reserves_settles_and_resets() -> None:
    clock = FakeClock()
    book = RateLimitBook(10, 1000, 60, clock)
    first = book.reserve("k", 300)
    assert first.rate_limits == [
        {"name": "requests", "limit": 10, "remaining": 9, "reset_seconds": 60.0},
        {"name": "tokens", "limit": 1000, "remaining": 700, "reset_seconds": 60.0},
    ]
    book.settle("k", first, 100)  # used less than reserved: the rest comes back
    clock.now += 15.5
    second = book.reserve("k", 850)
    assert second.rate_limits[1]["remaining"] == 50
    assert second.rate_limits[1]["reset_seconds"] == 44.5
    refused = book.reserve("k", 100)
    assert not refused.ok
    assert refused.retry_after == 44.5
    assert book.reserve("other", 100).ok  # budgets are per key
    clock.now += 45
    assert book.reserve("k", 900).rate_limits[1]["remaining"] == 100  # a new window


# --- session shapes ------------------------------------------------------------------------


def session_config() -> SessionConfig:
    return SessionConfig("sess_1", "gpt-realtime", 1_800_000_000, "alloy")


def test_ga_update_merges_and_renders_a_valid_session() -> None:
    cfg = apply_update(session_config(), {"type": "realtime", "instructions": "A"}, "ga")
    cfg = apply_update(
        cfg,
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}},
        },
        "ga",
    )
    rendered = render_ga(cfg)
    assert rendered["instructions"] == "A"  # kept: only present fields change
    assert rendered["audio"]["input"]["turn_detection"]["threshold"] == 0.7
    assert rendered["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
    RealtimeSessionCreateRequest.model_validate(rendered)
    cleared = apply_update(
        cfg, {"type": "realtime", "audio": {"input": {"turn_detection": None}}}, "ga"
    )
    assert render_ga(cleared)["audio"]["input"]["turn_detection"] is None


def test_beta_update_and_render() -> None:
    cfg = apply_update(
        session_config(),
        {"modalities": ["text"], "voice": "sage", "input_audio_format": "g711_alaw"},
        "beta",
    )
    rendered = render_beta(cfg)
    assert (rendered["modalities"], rendered["voice"]) == (["text"], "sage")
    assert render_ga(cfg)["audio"]["input"]["format"] == {"type": "audio/pcma"}
    BetaSession.model_validate({**rendered, "model": "gpt-realtime"})
    with pytest.raises(SimRequestError) as refused:
        apply_update(cfg, {"type": "realtime"}, "beta")  # a GA field on beta
    assert (refused.value.code, refused.value.param) == ("unknown_parameter", "session.type")


def test_update_is_all_or_nothing_and_voice_locks_after_audio() -> None:
    cfg = session_config()
    with pytest.raises(SimRequestError):
        apply_update(cfg, {"type": "realtime", "instructions": "B", "max_output_tokens": 0}, "ga")
    assert cfg.instructions != "B"
    patch = {"type": "realtime", "audio": {"output": {"voice": "verse"}}}
    assert apply_update(cfg, patch, "ga").voice == "verse"
    with pytest.raises(SimRequestError) as locked:
        apply_update(cfg, patch, "ga", voice_locked=True)
    assert locked.value.code == "cannot_update_voice"


# --- usage and the model -------------------------------------------------------------------


def message(item_id: str, text: str, role: str = "user") -> Item:
    return Item(item_id, "message", role=role, content=[Part("input_text", text=text)])


def test_prompt_cache_counts_the_unchanged_prefix() -> None:
    cache = PromptCache()
    items = [message("a", "hello " * 20)]
    first = cache.account("inst", [], items)
    assert first.cached.total == 0
    cache.remember("inst", [], items)
    items.append(message("b", "more"))
    second = cache.account("inst", [], items)
    assert second.total > first.total
    assert second.cached.total == first.total
    assert cache.account("changed", [], items).cached.total == 0  # new instructions: no prefix


def test_model_rules() -> None:
    import random

    weather = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    rng = random.Random(0)
    call = plan_reply([message("a", "weather for Oslo?")], [weather], "auto", rng)
    assert (call.kind, call.tool, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        {"city": "Oslo"},
    )
    assert plan_reply([message("a", "hi")], [weather], "auto", rng).kind == "message"
    assert plan_reply([message("a", "hi")], [weather], "required", rng).kind == "function_call"
    assert plan_reply([message("a", "weather?")], [weather], "none", rng).kind == "message"


# --- the whole session machine on arbitrary input ------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5000)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KNOWN_KEYS = [
    "session",
    "audio",
    "item",
    "item_id",
    "response",
    "response_id",
    "content_index",
    "audio_end_ms",
    "previous_item_id",
    "event_id",
]
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(list(CLIENT_EVENTS))},
    optional={key: json_values for key in KNOWN_KEYS},
)
valid_ish = st.sampled_from(
    [
        {"type": "response.create"},
        {"type": "response.cancel"},
        {"type": "input_audio_buffer.append", "audio": "AA=="},
        {"type": "input_audio_buffer.append", "audio": "AAAAAAAAAAAAAAAAAAAA"},
        {"type": "input_audio_buffer.commit"},
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "weather?"}],
            },
        },
        {
            "type": "session.update",
            "session": {"type": "realtime", "tools": [{"type": "function", "name": "get_weather"}]},
        },
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}},
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(json_values, event_like, valid_ish), min_size=1, max_size=8),
    st.sampled_from(["ga", "beta"]),
)
def test_any_input_yields_only_valid_events(frames: list[Any], protocol: str) -> None:
    validate = GA if protocol == "ga" else BETA
    model = "gpt-realtime" if protocol == "ga" else "gpt-4o-realtime-preview"
    setup = SessionSetup(protocol, SimConfig(speed=0), Faults(), "sk-sim", model, 1, 1.8e9)  # type: ignore[arg-type]
    session = SimSession(setup, RateLimitBook(10_000, 10_000_000, 60, FakeClock()))
    emitted = session.open()
    for frame in frames:
        emitted += session.receive(orjson.dumps(frame))
        for _ in range(10_000):
            step = session.next_step()
            if step is None:
                break
            emitted.append(step.event)
        assert session.next_step() is None
    for event in emitted:
        validate(orjson.dumps(event))
        if event["type"] == "response.done" and event["response"].get("usage"):
            check_usage(event["response"]["usage"])
