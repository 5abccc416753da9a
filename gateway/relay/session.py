"""One live session: two pumps, a supervisor, and a clean close.

``RelaySession.run`` owns every task it starts. The client->upstream pump and the
upstream->client pump each move frames through the ``SessionCore`` and carry out its outcome;
the supervisor ends the session when either pump stops, when the session's duration or idle
limit is hit, or when someone asks (admin end, drain). Whatever ends it, both sides are closed
with a code that says why, and the usage not yet charged is charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any, NoReturn, Protocol

import orjson

from gateway.errors import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    GatewayError,
    IdleTimeout,
    RateLimited,
    SessionLimitReached,
    UnsupportedFrame,
    UpstreamLost,
)
from gateway.protocol.core import (
    AutoResponse,
    Charge,
    FirstDelta,
    Outcome,
    RateLimitsSeen,
    SessionCore,
    UpstreamError,
)
from gateway.protocol.events import cancel_event, error_event
from gateway.relay.transport import BinaryFrame, Closed, Peer
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.relay")

CHARGE_WAIT_S = 0.25  # how long a response.done waits for its charge to be booked
CANCEL_WAIT_S = 1.0  # how long a forced end waits for the cancelled response's usage


class SessionHooks(Protocol):
    """What the relay needs from the rest of the gateway, per session."""

    async def check_quota(self) -> RateLimited | None:
        """None when the tenant may start a response now."""
        ...

    def charge(self, charge: Charge) -> asyncio.Future[Any] | None:
        """Account a charge without blocking and without ever losing it (buffered when Redis is
        down). Returns the booking in progress, which the caller may wait on, or None."""
        ...

    async def rate_limits_seen(self, entries: list[dict[str, object]]) -> bytes | None:
        """Record the upstream's figures; return the event to show the client instead, if any."""
        ...

    def observe(self, effect: FirstDelta | UpstreamError) -> None: ...

    def quota_allows_now(self) -> bool:
        """True when a response may start, known without waiting (else: ``check_quota``)."""
        ...

    def rate_limits_seen_now(self, entries: list[dict[str, object]]) -> bytes | None:
        """``rate_limits_seen`` without waiting; only right after ``quota_allows_now()``."""
        ...

    def relayed(self, direction: str, kind: str | bytes, size: int) -> None: ...


@dataclasses.dataclass(slots=True)
class SessionEnd:
    """How the session ended: for the record, the log and the metrics."""

    reason: str
    client_close_code: int
    upstream_close_code: int | None = None
    detail: str = ""


@dataclasses.dataclass(slots=True)
class Limits:
    max_duration: float | None = None
    idle_timeout: float | None = None


class RelaySession:
    def __init__(
        self,
        *,
        session_id: str,
        client: Peer,
        upstream: Peer,
        core: SessionCore,
        hooks: SessionHooks,
        limits: Limits,
    ) -> None:
        self.session_id = session_id
        self.client = client
        self.upstream = upstream
        self.core = core
        self.hooks = hooks
        self.limits = limits
        self._now = time.monotonic
        self.started = self._now()
        self._stop = asyncio.Event()
        self._end: SessionEnd | None = None
        self._end_error: GatewayError | None = None
        self._after_response = False
        self._response_done = asyncio.Event()  # set at each response.done

    # ---- control from outside (admin end, drain, tests) -----------------------------------

    def request_end(self, error: GatewayError, *, after_response: bool = False) -> None:
        """Ask the session to end with ``error`` (sent as an error event, then its close code).

        With ``after_response`` a response in progress is allowed to finish first (drain).
        """
        if self._end_error is None:
            self._end_error = error
            self._after_response = after_response
        elif not after_response:
            self._after_response = False  # a drain that ran out of time: end now
        self._stop.set()

    @property
    def ending(self) -> bool:
        return self._end_error is not None

    # ---- the session ------------------------------------------------------------------------

    async def run(self) -> SessionEnd:
        # Both sides must be able to send synchronously for either fast path to be used.
        if _fast_capable(self.client) and _fast_capable(self.upstream):
            self.client.fast = self._fast_client  # type: ignore[attr-defined]
            self.upstream.fast = self._fast_upstream  # type: ignore[attr-defined]
        pumps = [
            asyncio.create_task(self._client_pump(), name=f"client-pump:{self.session_id}"),
            asyncio.create_task(self._upstream_pump(), name=f"upstream-pump:{self.session_id}"),
        ]
        supervisor = asyncio.create_task(self._supervise(), name=f"supervise:{self.session_id}")
        try:
            done, _ = await asyncio.wait([*pumps, supervisor], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    log.error(
                        "relay task failed",
                        exc_info=exc,
                        extra={"session_id": self.session_id},
                    )
                    self._set_end(SessionEnd("internal_error", CLOSE_INTERNAL, detail=repr(exc)))
        finally:
            await stop_tasks([*pumps, supervisor])
        end = self._end or SessionEnd("unknown", CLOSE_INTERNAL)
        await self._close_both(end)
        final = self.core.final_charge()
        if final is not None:
            self.hooks.charge(final)
        return end

    def _set_end(self, end: SessionEnd) -> None:
        if self._end is None:
            self._end = end

    async def _close_both(self, end: SessionEnd) -> None:
        if end.reason == "upstream_lost":
            lost = UpstreamLost(
                "The connection to the upstream was lost. Reconnect to start a new session."
            )
            with contextlib.suppress(Closed, Exception):
                await asyncio.wait_for(
                    self.client.send(error_event(lost, self.core.event_ids())), 2
                )
        with contextlib.suppress(Closed, Exception):
            await asyncio.wait_for(self.client.close(end.client_close_code, end.reason), 2)
        with contextlib.suppress(Closed, Exception):
            await asyncio.wait_for(self.upstream.close(CLOSE_NORMAL, "client session ended"), 2)

    async def _client_pump(self) -> None:
        with contextlib.suppress(_PeerGone):
            await self._client_frames()

    async def _client_frames(self) -> None:
        core, upstream, client, hooks, now = (
            self.core,
            self.upstream,
            self.client,
            self.hooks,
            self._now,
        )
        while True:
            try:
                frame = await client.receive()
            except Closed as closed:
                self._set_end(SessionEnd("client_closed", closed.code, detail=closed.reason))
                return
            if isinstance(frame, BinaryFrame):
                err = UnsupportedFrame(
                    "Binary frames are not supported: send JSON events as text frames."
                )
                core.counters.refused_client_events += 1
                await self._send(client, error_event(err, core.event_ids()))
                continue
            if isinstance(frame, Outcome):
                outcome = frame  # already through the core, in the receiving callback
            else:
                outcome = core.client_frame(frame, now())
                hooks.relayed("client_to_upstream", outcome.kind, len(frame))
            if outcome.needs_quota and outcome.forward is not None:
                refusal = self._draining_refusal() or await hooks.check_quota()
                if refusal is not None:
                    event_id = _event_id_of(outcome.forward)
                    await self._send(client, core.refuse_response(refusal, event_id))
                    continue
            await self._apply(outcome, toward=upstream, back=client)
            # Not kept alive while waiting for the next frame (an append is 6.4 KB).
            del frame, outcome

    async def _upstream_pump(self) -> None:
        with contextlib.suppress(_PeerGone):
            await self._upstream_frames()

    async def _upstream_frames(self) -> None:
        core, upstream, client, hooks, now = (
            self.core,
            self.upstream,
            self.client,
            self.hooks,
            self._now,
        )
        while True:
            try:
                frame = await upstream.receive()
            except Closed as closed:
                self._upstream_closed(closed)
                return
            if isinstance(frame, BinaryFrame):
                continue  # not part of the protocol; nothing to relay
            if isinstance(frame, Outcome):
                outcome = frame  # already through the core, in the receiving callback
            else:
                outcome = core.upstream_frame(frame, now())
                hooks.relayed("upstream_to_client", outcome.kind, len(frame))
            if outcome.effects:
                await self._effects(outcome)
            await self._apply(outcome, toward=client, back=upstream)
            if self._after_response and core.active_response_id is None:
                self._stop.set()
            # Not kept alive while waiting for the next frame (an audio delta is 13 KB).
            del frame, outcome

    # ---- the synchronous fast path ----------------------------------------------------------
    #
    # A peer that can relay inside its receive callback (picows) offers each frame here first,
    # while its pump is idle and nothing is queued (so order holds). A frame that needs no
    # awaiting (no budget check, no effect, both sides writable) is relayed on the spot: no
    # task switch, no queue. Anything else comes back as an Outcome that the peer queues for
    # the pump, which finishes it exactly as if it had taken the frame itself.

    def _fast_client(self, frame: bytes) -> Outcome | None:
        outcome = self.core.client_frame(frame, self._now())
        self.hooks.relayed("client_to_upstream", outcome.kind, len(frame))
        if self._end is not None:
            return outcome
        if outcome.needs_quota and (self._after_response or not self.hooks.quota_allows_now()):
            return outcome  # the pump answers: a refusal, a drain, or a budget to read
        if not self._send_now(outcome, self.upstream):
            return outcome
        return None

    def _fast_upstream(self, frame: bytes) -> Outcome | None:
        outcome = self.core.upstream_frame(frame, self._now())
        self.hooks.relayed("upstream_to_client", outcome.kind, len(frame))
        if self._after_response or self._end is not None:
            return outcome
        if outcome.effects and not self._effects_now(outcome):
            return outcome
        if not self._send_now(outcome, self.client):
            return outcome  # its effects are done: the pump only sends it
        return None

    def _effects_now(self, outcome: Outcome) -> bool:
        """Carry out the outcome's effects here if none needs awaiting, and clear them; else
        do nothing and say False. A charge is always awaited (booked before response.done
        goes on); a budget answer only when this replica's snapshot cannot give it."""
        hooks = self.hooks
        for effect in outcome.effects:
            if isinstance(effect, Charge):
                return False
            if isinstance(effect, AutoResponse | RateLimitsSeen) and not hooks.quota_allows_now():
                return False
        for effect in outcome.effects:
            if isinstance(effect, RateLimitsSeen):
                shown = hooks.rate_limits_seen_now(effect.entries)
                if shown is not None:
                    outcome.to_client.append(shown)
            elif isinstance(effect, FirstDelta | UpstreamError):
                hooks.observe(effect)
            # AutoResponse: the budget allows it, nothing to do.
        outcome.effects = []
        return True

    def _send_now(self, outcome: Outcome, toward: Peer) -> bool:
        """Send everything of ``outcome`` synchronously if every peer it touches is writable."""
        up, client = self.upstream, self.client
        if not toward.writable:  # type: ignore[attr-defined]
            return False
        if outcome.to_upstream and not up.writable:  # type: ignore[attr-defined]
            return False
        if outcome.to_client and not client.writable:  # type: ignore[attr-defined]
            return False
        if outcome.forward is not None:
            toward.send_nowait(outcome.forward)  # type: ignore[attr-defined]
        for extra in outcome.to_upstream:
            up.send_nowait(extra)  # type: ignore[attr-defined]
        for extra in outcome.to_client:
            client.send_nowait(extra)  # type: ignore[attr-defined]
        return True

    async def _apply(self, outcome: Outcome, *, toward: Peer, back: Peer) -> None:
        peer = toward  # the one a Closed comes from (a try costs nothing until it raises)
        try:
            if outcome.forward is not None:
                await toward.send(outcome.forward)
            if outcome.to_upstream:
                peer = self.upstream
                for extra in outcome.to_upstream:
                    await peer.send(extra)
            if outcome.to_client:
                peer = self.client
                for extra in outcome.to_client:
                    await peer.send(extra)
        except Closed as closed:
            self._peer_gone(peer, closed)

    async def _send(self, peer: Peer, frame: bytes) -> None:
        try:
            await peer.send(frame)
        except Closed as closed:
            self._peer_gone(peer, closed)

    def _peer_gone(self, peer: Peer, closed: Closed) -> NoReturn:
        """A send found ``peer`` closed: that is how the session ends (as if its receive had
        seen it), not a failure of the pump that was sending."""
        if peer is self.upstream:
            self._upstream_closed(closed)
        else:
            self._set_end(SessionEnd("client_closed", closed.code, detail=closed.reason))
        raise _PeerGone from None

    async def _effects(self, outcome: Outcome) -> None:
        for effect in outcome.effects:
            if isinstance(effect, Charge):
                # Booked before the response.done goes on, so a replica killed right after
                # cannot lose a turn its client saw; bounded, because the charge buffer keeps
                # the charge anyway when Redis is slow or away.
                self._response_done.set()
                booking = self.hooks.charge(effect)
                if booking is not None:
                    await asyncio.wait([booking], timeout=CHARGE_WAIT_S)
            elif isinstance(effect, RateLimitsSeen):
                shown = await self.hooks.rate_limits_seen(effect.entries)
                if shown is not None:
                    outcome.to_client.append(shown)
            elif isinstance(effect, AutoResponse):
                refusal = self._draining_refusal() or await self.hooks.check_quota()
                if refusal is not None:
                    cancel, notice = self.core.cancel_auto_response(refusal)
                    outcome.to_upstream.append(cancel)
                    outcome.to_client.append(notice)
            else:
                self.hooks.observe(effect)

    def _draining_refusal(self) -> GatewayError | None:
        """While the session waits for its response in progress to finish (drain), it starts
        no new one: that response would only be cut."""
        return self._end_error if self._after_response else None

    def _upstream_closed(self, closed: Closed) -> None:
        code = closed.code
        if code in (1000, 1001):
            client_code, reason = CLOSE_NORMAL, "upstream_closed"
        elif code == 1006 or code == 1011:
            # Lost or failed upstream: a code the SDKs treat as recoverable.
            client_code, reason = CLOSE_INTERNAL, "upstream_lost"
        elif 3000 <= code <= 4999 or code in (1008, 1009, 1003, 1007):
            client_code, reason = code, "upstream_closed"  # meaningful to the client as is
        else:
            client_code, reason = CLOSE_INTERNAL, "upstream_lost"
        self._set_end(SessionEnd(reason, client_code, code, closed.reason))

    async def _supervise(self) -> None:
        limits = self.limits
        while True:
            timeout = self._next_deadline()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for
                    await self._stop.wait()
            now = self._now()
            if self._end_error is not None:
                if self._after_response and self.core.active_response_id is not None:
                    self._stop.clear()
                    continue
                await self._end_with(self._end_error)
                return
            if limits.max_duration is not None and now - self.started >= limits.max_duration:
                await self._end_with(
                    SessionLimitReached(
                        f"Your session hit the maximum duration of {limits.max_duration:g} seconds."
                    )
                )
                return
            idle_for = now - max(self.core.last_activity, self.started)
            if limits.idle_timeout is not None and idle_for >= limits.idle_timeout:
                await self._end_with(
                    IdleTimeout(f"The session was idle for {limits.idle_timeout:g} seconds.")
                )
                return

    def _next_deadline(self) -> float | None:
        now = self._now()
        deadlines = []
        if self.limits.max_duration is not None:
            deadlines.append(self.started + self.limits.max_duration - now)
        if self.limits.idle_timeout is not None:
            last = max(self.core.last_activity, self.started)
            deadlines.append(last + self.limits.idle_timeout - now)
        if not deadlines:
            return None
        return max(0.0, min(deadlines))

    async def _end_with(self, error: GatewayError) -> None:
        await self._cancel_response_in_progress()
        with contextlib.suppress(Closed, Exception):
            await asyncio.wait_for(self.client.send(error_event(error, self.core.event_ids())), 2)
        self._set_end(
            SessionEnd(error.code, error.close_code or CLOSE_NORMAL, detail=error.message)
        )

    async def _cancel_response_in_progress(self) -> None:
        """Ending while a response streams: cancel it upstream and wait briefly for its
        response.done, which carries the usage of what was generated (otherwise lost)."""
        if self.core.active_response_id is None:
            return
        self._response_done.clear()
        with contextlib.suppress(Closed, Exception):
            await self.upstream.send(cancel_event(self.core.event_ids(), None))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._response_done.wait(), CANCEL_WAIT_S)


def _fast_capable(peer: Peer) -> bool:
    return hasattr(peer, "fast") and hasattr(peer, "send_nowait")


class _PeerGone(Exception):
    """Raised out of a send whose peer is closed, once the session's end is recorded; the pump
    that was sending stops quietly."""


def _event_id_of(frame: bytes) -> str | None:
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None
