"""Property-based fuzzing of the client->gateway direction of one live session.

Hypothesis generates batches of client frames, malformed and valid (random bytes, random text,
truncated JSON, JSON that is not an object, objects without or with a bad ``type``, valid event
types with random fields, curated valid events, huge strings, odd unicode and encodings). Every
batch goes through the same gateway session, whose upstream is a simulator behind a recording
proxy, so what the gateway forwarded is known exactly. For every frame, exactly one of two
things must happen, and the right one:

* refused (it is not a JSON object with a non-empty string ``type``, or it is binary): one
  ``error`` event from the gateway (``invalid_request_error``, ``invalid_event`` or
  ``unsupported_frame``, echoing the frame's ``event_id``), and nothing reaches the upstream;
* forwarded: the very same bytes reach the upstream, in order, and the gateway says nothing.

After every batch the session must still hold a normal text turn. At least 10,000 frames go
through in total; a failing batch is shrunk by Hypothesis on a fresh session.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.sim import SimConfig, SimServer
from tests.component.wsclient import (
    RecordingProxy,
    bearer,
    mint,
    session,
    sim_upstream,
    until,
    user_text,
    ws_url,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

KEY = "sk-upstream-fuzz"
BATCH = 100
EXAMPLES = 101  # x BATCH frames: over 10,000
TOTAL_REQUIRED = 10_000
POLICY_TOTAL_REQUIRED = 2_000

KNOWN_TYPES = (
    "session.update",
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
    "transcription_session.update",
)


@dataclasses.dataclass(frozen=True)
class Frame:
    data: str | bytes  # bytes: a binary frame

    def wire(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else self.data.encode()


# --- strategies ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
event_ids = st.none() | st.text(max_size=16) | st.integers() | st.just("")
bad_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(""),
    st.lists(st.text(max_size=4), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
huge = st.builds(lambda ch, n: ch * n, st.characters(codec="utf-8"), st.integers(10_000, 60_000))


def _dump(event: dict[str, Any], spaced: bool) -> str:
    """JSON text (stdlib, so big integers stay integers); spaced like json.dumps' default."""
    return json.dumps(event, ensure_ascii=False, separators=(", ", ": ") if spaced else (",", ":"))


@st.composite
def events(draw: st.DrawFn, types: st.SearchStrategy[Any]) -> dict[str, Any]:
    """An object with the given ``type`` (first or not), maybe an event_id, random fields."""
    fields = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3))
    fields.pop("type", None)
    kind = draw(types)
    event_id = draw(event_ids)
    out: dict[str, Any] = {}
    type_first = draw(st.booleans())
    if type_first:
        out["type"] = kind
    if event_id is not None:
        out["event_id"] = event_id
    out.update({k: v for k, v in fields.items() if k != "event_id"})
    if not type_first:
        out["type"] = kind
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


curated = st.one_of(
    st.builds(
        lambda text, eid, role: {
            "type": "conversation.item.create",
            "event_id": eid,
            "item": {
                "type": "message",
                "role": role,
                "content": [{"type": "input_text", "text": text}],
            },
        },
        st.text(max_size=200),
        st.text(min_size=1, max_size=12),
        st.sampled_from(["user", "system"]),
    ),
    st.builds(
        lambda audio: {"type": "input_audio_buffer.append", "audio": _b64(audio)},
        st.binary(max_size=480),
    ),
    st.builds(
        lambda n: {"type": "input_audio_buffer.append", "audio": _b64(bytes(n))},
        st.integers(0, 9600),
    ),
    st.just({"type": "input_audio_buffer.clear"}),
    st.just({"type": "input_audio_buffer.commit"}),
    st.just({"type": "response.cancel"}),
    st.builds(lambda i: {"type": "conversation.item.retrieve", "item_id": i}, st.text(max_size=20)),
    st.builds(lambda i: {"type": "conversation.item.delete", "item_id": i}, st.text(max_size=20)),
    st.builds(
        lambda session: {"type": "session.update", "session": session},
        st.fixed_dictionaries(
            {"type": st.just("realtime")},
            optional={
                "instructions": st.text(max_size=60),
                "output_modalities": st.sampled_from([["text"], ["audio"], [], ["video"]]),
                "audio": json_values,
                "tools": json_values,
                "max_output_tokens": st.integers(-5, 5000) | st.just("inf"),
                "model": st.text(max_size=20),
                "tracing": json_values,
            },
        ),
    ),
    st.builds(
        lambda response: {"type": "response.create", "response": response},
        st.fixed_dictionaries(
            {"output_modalities": st.just(["text"])},
            optional={"instructions": st.text(max_size=40), "metadata": json_values},
        ),
    ),
    st.builds(lambda response: {"type": "response.create", "response": response}, json_values),
)

CRAFTED = (
    '{"type":"response\\u002ecancel"}',  # an escaped type: legal, not sniffable
    '{"type":"input_audio_buffer.clear","type":"input_audio_buffer.clear"}',
    ' {"type":"input_audio_buffer.clear"}',
    '{"type":"input_audio_buffer.clear"}\n',
    '{"type":"input_audio_buffer.clear"}{"type":"input_audio_buffer.clear"}',
    '\ufeff{"type":"input_audio_buffer.clear"}',
    '{"type":"input_audio_buffer.clear","event_id":"\\ud800"}',
    '{"type":"input_audio_buffer.clear","n":1e999}',
    '{"type":"input_audio_buffer.clear","n":NaN}',
    '{"type":"input_audio_buffer.clear","n":123456789012345678901234567890}',
    '{"type":"input_audio_buffer.clear","deep":' + "[" * 3000 + "]" * 3000 + "}",
    "[" * 5000,
    '{"type":"' + "x" * 200 + '"}',
    '{"type":""}',
    '{"type":null,"event_id":"evt_null_type"}',
    '{"type":["response.create"],"event_id":"evt_list_type"}',
    '{"event_id":"evt_only_id"}',
    "{}",
    "null",
    '"response.create"',
    "",
    " ",
    '{"type":"input_audio_buffer.clear"',
    '{"type": "input_audio_buffer.clear", "event_id": "evt_spaced"}',
    '{"type":"\uff52\uff45\uff53\uff50\uff4f\uff4e\uff53\uff45.create"}',  # full-width
    '{"type":"input_audio_buffer.clear","event_id":"évènement-🎧-\u200b"}',
)

frames = st.one_of(
    st.binary(max_size=64).map(Frame),
    st.text(max_size=64).map(Frame),
    st.builds(
        lambda e, spaced, cut: Frame(_dump(e, spaced)[: max(1, int(len(_dump(e, spaced)) * cut))]),
        events(st.sampled_from(KNOWN_TYPES)), st.booleans(), st.floats(0.0, 0.999),
    ),
    st.one_of(scalars, st.lists(json_values, max_size=3)).map(lambda v: Frame(json.dumps(v))),
    st.builds(
        lambda e, spaced: Frame(_dump({k: v for k, v in e.items() if k != "type"}, spaced)),
        events(st.just("x")), st.booleans(),
    ),
    st.builds(
        lambda e, spaced: Frame(_dump(e, spaced)),
        events(bad_types),
        st.booleans(),
    ),
    st.builds(
        lambda e, spaced: Frame(_dump(e, spaced)),
        events(st.sampled_from(KNOWN_TYPES) | st.text(min_size=1, max_size=40)), st.booleans(),
    ),
    st.builds(lambda e, spaced: Frame(_dump(e, spaced)), curated, st.booleans()),
    st.builds(
        lambda big, kind, where: Frame(_dump(
            {"type": kind, "event_id": big} if where == 0 else
            {"type": kind, "padding": big} if where == 1 else
            {"event_id": big[:64], "no_type": big}, False)
            if where < 3 else big[: len(big) // 2]),
        huge, st.sampled_from(KNOWN_TYPES), st.integers(0, 3),
    ),
    st.sampled_from(CRAFTED).map(Frame),
)  # fmt: skip


# --- the oracle ------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def oracle(frame: Frame) -> tuple[str, str | None]:
    """("refuse" | "forward" | "either", the client event_id the gateway must echo).

    Decided with the standard library, not with the gateway's parser. "either" is for JSON
    that is valid by the RFC but that no sane parser represents (lone surrogates, numbers
    beyond a double, nesting beyond any parser's limit): the gateway may refuse or forward
    it, but it must do exactly one of the two.
    """
    if isinstance(frame.data, bytes):
        return "refuse", None
    try:
        value = json.loads(frame.data, parse_constant=_reject_constant)
    except RecursionError:
        return "either", None
    except ValueError:
        return "refuse", None
    if not isinstance(value, dict):
        return "refuse", None
    event_id = value.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        return "refuse", event_id
    try:
        orjson.loads(frame.data)
    except orjson.JSONDecodeError:
        return "either", None  # if refused as unparsable, there is no event_id to echo
    return "forward", event_id


# --- the rig: one gateway, one proxied simulator, one session ------------------------------------


@dataclasses.dataclass
class Received:
    raw: bytes
    event: dict[str, Any]


class Rig:
    def __init__(
        self, gw: GatewayHandle, proxy: RecordingProxy, credential: str, *, policed: bool
    ) -> None:
        self.gw = gw
        self.proxy = proxy
        self.key = credential
        self.policed = policed
        self.frames_sent = 0
        self.sessions_opened = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.received: list[Received] = []
        self._arrived = asyncio.Event()
        self._stack: contextlib.AsyncExitStack | None = None
        self._reader: asyncio.Task[None] | None = None
        self.ws: ClientConnection | None = None
        self._ids = itertools.count()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    async def ensure_session(self) -> None:
        if self.ws is not None and self._reader is not None and not self._reader.done():
            return
        await self.close_session()
        self._stack = contextlib.AsyncExitStack()
        self.ws = await self._stack.enter_async_context(
            session(ws_url(self.gw), additional_headers=bearer(self.key), max_size=None)
        )
        self.sessions_opened += 1
        await until(self.ws, "session.created")
        no_vad = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        await self.ws.send(orjson.dumps({"type": "session.update", "session": no_vad}).decode())
        await until(self.ws, "session.updated")
        self._reader = asyncio.create_task(self._read(self.ws))

    async def close_session(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._reader
            self._reader = None
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self.ws = None

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                data = raw.encode() if isinstance(raw, str) else raw
                self.received.append(Received(data, orjson.loads(data)))
                self._arrived.set()
        finally:
            self._arrived.set()

    async def wait_error_for(self, client_event_id: str, start: int, timeout: float = 15) -> int:
        """Index (in ``received``) of the error event echoing ``client_event_id``."""
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                for i in range(seen, len(self.received)):
                    event = self.received[i].event
                    if (
                        event["type"] == "error"
                        and event["error"].get("event_id") == client_event_id
                    ):
                        return i
                seen = len(self.received)
                assert self._reader is not None
                if self._reader.done():
                    ws = self.ws
                    raise AssertionError(
                        f"the session ended: {ws.close_code if ws else None} "
                        f"{ws.close_reason if ws else None}"
                    )
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_for(self, start: int, predicate: Any, timeout: float = 15) -> int:
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                for i in range(seen, len(self.received)):
                    if predicate(self.received[i].event):
                        return i
                seen = len(self.received)
                assert self._reader is not None
                if self._reader.done():
                    raise AssertionError("the session ended")
                self._arrived.clear()
                await self._arrived.wait()

    async def sync(self, start: int) -> tuple[bytes, int]:
        """A frame the upstream answers with an error echoing its id: when that answer is
        back, everything sent before it has been decided by the gateway and seen upstream."""
        sync_id = self.new_id("sync")
        frame = orjson.dumps(
            {"type": "conversation.item.retrieve", "event_id": sync_id, "item_id": sync_id}
        )
        assert self.ws is not None
        await self.ws.send(frame.decode())
        return frame, await self.wait_error_for(sync_id, start)

    async def text_turn(self) -> None:
        """The session is still usable: a normal text turn completes."""
        assert self.ws is not None
        ws = self.ws
        start = len(self.received)
        await ws.send('{"type":"response.cancel"}')
        await ws.send('{"type":"input_audio_buffer.clear"}')
        _, start = await self.sync(start)
        await ws.send(user_text("Are you still there?").decode())
        for _ in range(3):
            create_id = self.new_id("turn")
            create = {
                "type": "response.create",
                "event_id": create_id,
                "response": {"output_modalities": ["text"]},
            }
            await ws.send(orjson.dumps(create).decode())
            i = await self.wait_for(
                start,
                lambda e, cid=create_id: (
                    e["type"] == "response.created"
                    or (e["type"] == "error" and e["error"].get("event_id") == cid)
                ),
            )
            event = self.received[i].event
            if event["type"] == "response.created":
                rid = event["response"]["id"]
                j = await self.wait_for(
                    i,
                    lambda e, rid=rid: e["type"] == "response.done" and e["response"]["id"] == rid,
                )
                assert self.received[j].event["response"]["status"] == "completed"
                return
            # A response still running (started by a fuzzed frame): cancel it and ask again.
            start = i + 1
            await ws.send('{"type":"response.cancel"}')
            _, start = await self.sync(start)
        raise AssertionError("no text turn could be completed")


POLICY_TYPES = frozenset({"session.update", "conversation.item.create", "response.create"})
BOUND_SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "Be brief.",
    "audio": {"output": {"voice": "alloy"}},
}


class _GatewayFailures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("gateway"):
            self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.asynccontextmanager
async def _rig(redis_url: str, *, bound: bool) -> AsyncIterator[Rig]:
    async with (
        SimServer(SimConfig(api_keys=(KEY,), speed=0.0)) as sim,
        RecordingProxy(sim.http_url) as proxy,
        run_gateway(
            gateway_settings(redis_url=redis_url, upstreams=[sim_upstream(proxy.ws_url, KEY)])
        ) as gw,
    ):
        policy = {"allow_system_items": not bound, "locked_fields_mode": "refuse"}
        _, key = await gw.create_tenant(name="fuzz", policy=policy)
        credential = key
        if bound:
            credential = await mint(gw, key, {"session": BOUND_SESSION, "max_uses": 1000})
        rig = Rig(gw, proxy, credential, policed=bound)
        failures = _GatewayFailures()
        logging.getLogger().addHandler(failures)
        try:
            yield rig
        finally:
            await rig.close_session()
            logging.getLogger().removeHandler(failures)
        assert sim.hub.internal_errors == 0
        assert failures.messages == []  # e.g. "relay task failed": the gateway never crashed
    assert rig.frames_sent >= (POLICY_TOTAL_REQUIRED if bound else TOTAL_REQUIRED)
    assert rig.sessions_opened == 1, "a batch ended the session (see the failure above)"
    print(f"fuzz outcomes ({'bound' if bound else 'tenant key'}): {dict(rig.outcomes)}")
    # The generator reaches every outcome, in numbers.
    assert min(rig.outcomes[k] for k in ("forwarded", "invalid_event", "unsupported_frame")) > 100
    if bound:
        assert rig.outcomes["policy_violation"] > 0, rig.outcomes
    else:
        assert rig.outcomes["policy_violation"] == 0, rig.outcomes


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    """A server-side session (tenant key): nothing locked, so every frame is either relayed
    untouched or refused as malformed."""
    async with _rig(redis_url, bound=False) as rig:
        yield rig


@pytest.fixture
async def policed_rig(redis_url: str) -> AsyncIterator[Rig]:
    """A browser session from a client secret whose minted fields are locked, for a tenant that
    forbids system items: frames of the policed types may also be refused as
    ``policy_violation`` (never forwarded, never silently dropped)."""
    async with _rig(redis_url, bound=True) as rig:
        yield rig


def _fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@_fuzz_settings(EXAMPLES)
@given(batch=st.lists(frames, min_size=BATCH, max_size=BATCH))
async def test_fuzzed_client_frames(rig: Rig, batch: list[Frame]) -> None:
    await run_batch(rig, batch)


@_fuzz_settings(POLICY_TOTAL_REQUIRED // BATCH)
@given(batch=st.lists(frames, min_size=BATCH, max_size=BATCH))
async def test_fuzzed_client_frames_under_policy(policed_rig: Rig, batch: list[Frame]) -> None:
    await run_batch(policed_rig, batch)


async def run_batch(rig: Rig, batch: list[Frame]) -> None:
    await rig.ensure_session()
    ws = rig.ws
    assert ws is not None
    upstream = rig.proxy.connections[-1]
    start, up_mark = len(rig.received), len(upstream.to_upstream)
    binary_mark = upstream.binary_to_upstream
    for frame in batch:
        await ws.send(frame.data)
    rig.frames_sent += len(batch)
    sync_frame, answered = await rig.sync(start)

    forwarded = upstream.to_upstream[up_mark:]
    assert forwarded
    assert forwarded[-1] == sync_frame
    assert upstream.binary_to_upstream == binary_mark  # a binary frame never goes upstream
    relayed = set(upstream.from_upstream)
    gateway_errors = [
        r.event
        for r in rig.received[start:answered]
        if r.event["type"] == "error" and r.raw not in relayed
    ]
    rig.outcomes.update(check_outcomes(batch, forwarded[:-1], gateway_errors, policed=rig.policed))
    await rig.text_turn()


def check_outcomes(
    batch: list[Frame],
    forwarded: list[bytes],
    gateway_errors: list[dict[str, Any]],
    *,
    policed: bool,
) -> collections.Counter[str]:
    """Each frame was either forwarded unchanged (in order) or answered by exactly one error
    event of the gateway (in order), and the oracle agrees with which. Returns the tally."""
    tally: collections.Counter[str] = collections.Counter()
    f = e = 0
    for n, frame in enumerate(batch):
        expected, event_id = oracle(frame)
        shown = f"frame {n}: {frame.data!r:.300}"
        if f < len(forwarded) and isinstance(frame.data, str) and forwarded[f] == frame.wire():
            assert expected in ("forward", "either"), f"forwarded, should be refused: {shown}"
            f += 1
            tally["forwarded"] += 1
            continue
        assert e < len(gateway_errors), f"neither forwarded nor refused: {shown}"
        error = gateway_errors[e]
        e += 1
        assert isinstance(error["event_id"], str), shown
        assert error["event_id"], shown
        body = error["error"]
        if body.get("code") == "policy_violation":
            kind = json.loads(frame.data)["type"] if isinstance(frame.data, str) else None
            assert policed, shown
            assert expected == "forward", shown
            assert kind in POLICY_TYPES, shown
            assert (body["type"], body["event_id"]) == ("invalid_request_error", event_id), shown
            assert isinstance(body["param"], str), shown
            assert body["message"], shown
            tally["policy_violation"] += 1
            continue
        assert expected in ("refuse", "either"), f"refused, should be forwarded: {shown} {body}"
        assert body == {
            "type": "invalid_request_error",
            "code": "unsupported_frame" if isinstance(frame.data, bytes) else "invalid_event",
            "message": body["message"],
            "param": None,
            "event_id": event_id,
        }, shown
        assert isinstance(body["message"], str)
        assert body["message"]
        tally[body["code"]] += 1
    assert f == len(forwarded), (
        f"forwarded but never sent, or reordered: {forwarded[f:][:3]!r:.300}"
    )
    assert e == len(gateway_errors), f"more gateway errors than refusals: {gateway_errors[e:][:3]}"
    return tally
