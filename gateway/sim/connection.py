"""One WebSocket connection driving one ``SimSession``: the I/O shell around the pure core.

Four tasks, all owned here and all gone when this returns: the reader feeds client frames to
the session; the driver pulls response steps and paces them; the writer is the only task that
sends, in the order events were produced, and applies the connection's faults; a timer ends
the session at its maximum duration. The connection ends when the reader (client left) or the
writer (the simulator closed) finishes; an unexpected exception closes it with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.sim.faults import FaultAction, Faults, FaultTracker
from gateway.sim.session import SimSession
from gateway.sim.wire import Event

log = logging.getLogger("gateway.sim")

MALFORMED_FRAME = '{"type":"response.output_audio.delta","delta":"AAAA'  # cut mid-JSON
OUTBOX_SOFT_LIMIT = 64  # events produced ahead of the socket before producers wait


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str = ""


Outgoing = Event | Close


class Outbox:
    """Events in production order; producers wait for room, so a slow client slows them."""

    def __init__(self, soft_limit: int = OUTBOX_SOFT_LIMIT) -> None:
        self._items: deque[Outgoing] = deque()
        self._soft_limit = soft_limit
        self._filled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def push(self, *items: Outgoing) -> None:
        self._items.extend(items)
        if self._items:
            self._filled.set()
        if len(self._items) >= self._soft_limit:
            self._room.clear()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def pop(self) -> Outgoing:
        while not self._items:
            self._filled.clear()
            await self._filled.wait()
        item = self._items.popleft()
        if len(self._items) < self._soft_limit:
            self._room.set()
        return item


class Connection:
    def __init__(
        self,
        ws: WebSocket,
        session: SimSession,
        faults: Faults,
        max_seconds: float,
    ) -> None:
        self.ws = ws
        self.session = session
        self.faults = faults
        self.max_seconds = max_seconds
        self.outbox = Outbox()
        self._work = asyncio.Event()

    async def run(self) -> None:
        self.outbox.push(*self.session.open())
        tasks = {
            asyncio.create_task(self._reader(), name="sim-reader"),
            asyncio.create_task(self._writer(), name="sim-writer"),
            asyncio.create_task(self._driver(), name="sim-driver"),
            asyncio.create_task(self._timer(), name="sim-timer"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.session.close()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _reader(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes")
            if frame is None:
                continue
            await self.outbox.wait_room()
            self.outbox.push(*self.session.receive(frame))
            if self.session.responding:
                self._work.set()

    async def _driver(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            await self.outbox.wait_room()
            step = self.session.next_step()
            if step is None:
                self._work.clear()
                await self._work.wait()
                continue
            self.outbox.push(step.event)
            if step.pace > 0:
                # A schedule, not a sleep per chunk: pacing does not drift with send times.
                deadline = max(deadline, loop.time()) + step.pace
                await asyncio.sleep(deadline - loop.time())

    async def _timer(self) -> None:
        await asyncio.sleep(self.max_seconds)
        self.outbox.push(
            self.session.expire(), Close(1000, "invalid_request_error.session_expired")
        )
        await asyncio.Event().wait()  # the writer ends the connection once it has sent those

    async def _writer(self) -> None:
        tracker = FaultTracker(self.faults)
        # Discarding (a stall fault, or a client that is gone) still drains the outbox, so
        # the reader never waits for room and always gets to see the disconnect.
        discard = False
        while True:
            item = await self.outbox.pop()
            if discard:
                continue
            try:
                if isinstance(item, Close):
                    await self.ws.close(item.code, item.reason)
                    return
                await self.ws.send_text(orjson.dumps(item).decode())
                for fired in tracker.after_sent(item["type"]):
                    if fired.action is FaultAction.MALFORMED:
                        await self.ws.send_text(MALFORMED_FRAME)
                    elif fired.action is FaultAction.CLOSE:
                        await self.ws.close(fired.close_code, "sim fault: close_after")
                        return
                    else:
                        discard = True  # stall: a hung upstream, the socket stays open
            except (WebSocketDisconnect, OSError) as exc:
                log.debug("sim client went away while sending: %r", exc)
                discard = True


async def close_quietly(ws: WebSocket, code: int, reason: str = "") -> None:
    with contextlib.suppress(Exception):
        await ws.close(code, reason)
