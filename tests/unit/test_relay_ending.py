"""How a relayed session ends when things go wrong at the edges, with fake peers (no sockets).

* A send that finds its peer gone ends the session for that reason; the pump that was sending
  does not "fail" (no internal error, no error log).
* A cancel swallowed by a pump (Python 3.11's ``asyncio.wait_for``, used by redis-py for every
  command, does that when the cancel arrives as the inner call completes) does not keep the
  session open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest

from gateway.errors import Draining, RateLimited, SessionTerminated
from gateway.protocol.core import Charge, FirstDelta, SessionCore, UpstreamError
from gateway.protocol.policy import SessionPolicy
from gateway.relay.session import Limits, RelaySession
from gateway.relay.transport import BinaryFrame, Closed


class FakePeer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: asyncio.Queue[bytes | Closed] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None
        self.refuse_sends: Closed | None = None

    async def receive(self) -> bytes | BinaryFrame:
        item = await self.inbox.get()
        if isinstance(item, Closed):
            raise item
        return item

    async def send(self, frame: bytes) -> None:
        if self.refuse_sends is not None:
            raise self.refuse_sends
        self.sent.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


class Hooks:
    def __init__(self) -> None:
        self.quota_entered = asyncio.Event()
        self.swallow_cancel = False
        self.charges: list[Charge] = []

    async def check_quota(self) -> RateLimited | None:
        if self.swallow_cancel:
            self.quota_entered.set()
            # Swallowed: what asyncio.wait_for does on 3.11 when its inner call just completed.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)
        return None

    def charge(self, charge: Charge) -> None:
        self.charges.append(charge)
        return None

    async def rate_limits_seen(self, entries: list[dict[str, object]]) -> bytes | None:
        return None

    def observe(self, effect: FirstDelta | UpstreamError) -> None:
        pass

    def quota_allows_now(self) -> bool:
        return False  # always the awaited path, which these tests exercise

    def rate_limits_seen_now(self, entries: list[dict[str, object]]) -> bytes | None:
        return None

    def relayed(self, direction: str, kind: str | bytes, size: int) -> None:
        pass


def _session(hooks: Hooks) -> tuple[RelaySession, FakePeer, FakePeer]:
    client, upstream = FakePeer("client"), FakePeer("upstream")
    core = SessionCore(
        client_protocol="ga",
        upstream_protocol="ga",
        policy=SessionPolicy(),
        event_ids=lambda: "event_gw",
    )
    relay = RelaySession(
        session_id="sess_1",
        client=client,
        upstream=upstream,
        core=core,
        hooks=hooks,
        limits=Limits(),
    )
    return relay, client, upstream


async def test_upstream_gone_while_forwarding_is_upstream_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay, client, upstream = _session(Hooks())
    upstream.refuse_sends = Closed(1006, "connection lost")
    await client.inbox.put(b'{"type":"input_audio_buffer.clear"}')
    with caplog.at_level(logging.WARNING, logger="gateway"):
        end = await asyncio.wait_for(relay.run(), 5)
    assert (end.reason, end.client_close_code, end.upstream_close_code) == (
        "upstream_lost",
        1011,
        1006,
    )
    assert client.closed_with == (1011, "upstream_lost")
    assert [r for r in caplog.records if r.name.startswith("gateway")] == []


async def test_client_gone_while_relaying_is_client_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay, client, upstream = _session(Hooks())
    client.refuse_sends = Closed(1006, "connection lost")
    await upstream.inbox.put(b'{"type":"response.output_text.delta","delta":"hi"}')
    with caplog.at_level(logging.WARNING, logger="gateway"):
        end = await asyncio.wait_for(relay.run(), 5)
    assert (end.reason, end.client_close_code) == ("client_closed", 1006)
    assert upstream.closed_with is not None
    assert [r for r in caplog.records if r.name.startswith("gateway")] == []


async def test_a_swallowed_cancel_does_not_hold_the_session_open() -> None:
    hooks = Hooks()
    hooks.swallow_cancel = True
    relay, client, upstream = _session(hooks)
    run = asyncio.create_task(relay.run())
    await client.inbox.put(b'{"type":"response.create"}')
    await hooks.quota_entered.wait()  # the client pump is in the budget check
    await upstream.inbox.put(Closed(1011, "upstream crashed"))
    # (asyncio.wait, not wait_for: on 3.11 wait_for may return a result after its timeout)
    done, _ = await asyncio.wait([run], timeout=2)
    if not done:  # before the fix: open until the client sent something
        await client.inbox.put(Closed(1000, "client gave up"))
        await run
    assert done, "the session stayed open after its upstream closed"
    end = run.result()
    assert (end.reason, end.client_close_code) == ("upstream_lost", 1011)
    assert client.closed_with == (1011, "upstream_lost")


def _types(frames: list[bytes]) -> list[str]:
    return [orjson.loads(f)["type"] for f in frames]


async def test_upstream_lost_tells_the_client_before_closing() -> None:
    relay, client, upstream = _session(Hooks())
    await upstream.inbox.put(Closed(1006, "connection lost"))
    await asyncio.wait_for(relay.run(), 5)
    (notice,) = [orjson.loads(f) for f in client.sent]
    assert notice["type"] == "error"
    assert notice["error"]["code"] == "upstream_connection_lost"
    assert client.closed_with == (1011, "upstream_lost")


CREATED = b'{"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}'
DONE = (
    b'{"type":"response.done","response":{"id":"resp_1","status":"completed",'
    b'"usage":{"total_tokens":5,"input_tokens":2,"output_tokens":3}}}'
)


async def test_drain_lets_the_response_finish_but_starts_no_new_one() -> None:
    hooks = Hooks()
    relay, client, upstream = _session(hooks)
    run = asyncio.create_task(relay.run())
    await upstream.inbox.put(CREATED)
    while relay.core.active_response_id is None:
        await asyncio.sleep(0.01)
    relay.request_end(Draining("restarting"), after_response=True)
    await client.inbox.put(b'{"type":"response.create","event_id":"c1"}')
    await asyncio.sleep(0.05)
    assert not run.done()  # the response in progress may finish
    await upstream.inbox.put(DONE)
    end = await asyncio.wait_for(run, 5)
    assert (end.reason, end.client_close_code) == ("server_shutting_down", 1012)
    # the response.create was refused, not forwarded; the response finished; then the notice
    assert upstream.sent == []
    refused = orjson.loads(client.sent[1])
    assert (refused["error"]["code"], refused["error"]["event_id"]) == (
        "server_shutting_down",
        "c1",
    )
    assert _types(client.sent) == ["response.created", "error", "response.done", "error"]
    assert [c.usage.total_tokens for c in hooks.charges] == [5]


async def test_a_forced_end_cancels_the_response_and_keeps_its_usage() -> None:
    hooks = Hooks()
    relay, _, upstream = _session(hooks)
    run = asyncio.create_task(relay.run())
    await upstream.inbox.put(CREATED)
    while relay.core.active_response_id is None:
        await asyncio.sleep(0.01)
    relay.request_end(SessionTerminated("ended by an administrator"))
    while not upstream.sent:  # the gateway cancels the response upstream...
        await asyncio.sleep(0.01)
    assert _types(upstream.sent) == ["response.cancel"]
    await upstream.inbox.put(DONE.replace(b"completed", b"cancelled"))  # ...which reports usage
    end = await asyncio.wait_for(run, 5)
    assert (end.reason, end.client_close_code) == ("session_terminated", 1008)
    assert [(c.status, c.usage.total_tokens) for c in hooks.charges] == [("cancelled", 5)]
