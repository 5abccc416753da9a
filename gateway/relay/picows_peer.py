"""One side of a session over picows (a Cython WebSocket implementation), as a ``Peer``.

picows hands frames to a listener callback; the relay awaits ``receive()``. The bridge is a
deque and one future: frames that arrive while the pump is busy queue up and are taken without
a task switch each, so under load the pump drains bursts in a tight loop. The queue is bounded:
past ``high_water`` frames the socket is no longer read (TCP pushes back on the sender) until
the pump has caught up. Sends write straight into the transport; when its buffer is full
(``pause_writing``) the sender waits, so backpressure reaches the other side too.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from gateway.protocol.core import Outcome
from gateway.relay.transport import BinaryFrame, Closed

_LOST = Closed(1006, "connection lost")


class PicowsPeer(WSListener):
    def __init__(self, high_water: int = 256, max_message: int = 16 * 1024 * 1024) -> None:
        super().__init__()
        self._max_message = max_message
        self._parts_size = 0
        self._frames: collections.deque[bytes | BinaryFrame | Outcome] = collections.deque()
        # Set by the relay: relays a frame inside this callback when it can (see session.py).
        self.fast: Callable[[bytes], Outcome | None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed: Closed | None = None
        self._transport: WSTransport | None = None
        self._parts: list[bytes] = []
        self._parts_binary = False
        self._writable: asyncio.Future[None] | None = None
        self._high = high_water
        self._low = high_water // 4
        self._reading_paused = False

    # ---- picows callbacks ---------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            if frame.fin:
                payload = frame.get_payload_as_bytes()
                fast = self.fast
                # Only while the pump waits with nothing queued, so that order holds.
                if fast is not None and self._waiter is not None and not self._frames:
                    rest = fast(payload)
                    if rest is not None:
                        self._push(rest)
                    return
                self._push(payload)
            else:
                self._start_parts(frame, binary=False)
        elif kind is WSMsgType.CONTINUATION:
            if not self._parts:
                return  # a continuation of nothing: ignore it (protocol noise)
            self._parts.append(frame.get_payload_as_bytes())
            self._parts_size += len(self._parts[-1])
            if self._parts_size > self._max_message:
                self._too_big(transport)
            elif frame.fin:
                message = b"".join(self._parts)
                self._parts = []
                self._push(BinaryFrame(len(message)) if self._parts_binary else message)
        elif kind is WSMsgType.BINARY:
            if frame.fin:
                self._push(BinaryFrame(len(frame.get_payload_as_memoryview())))
            else:
                self._start_parts(frame, binary=True)
        elif kind is WSMsgType.CLOSE:
            code = frame.get_close_code().value
            if self._closed is None:
                self._closed = Closed(1005 if code == 0 else code, frame.get_close_reason() or "")
                # Complete the close handshake, then let the socket go.
                transport.send_close(WSCloseCode(code) if code else WSCloseCode.OK)
                transport.disconnect()
            self._wake()
        # PING is answered by picows itself (auto pong); PONG needs nothing.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._closed is None:
            self._closed = _LOST
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def abandon(self) -> None:
        """The client left before picows took the socket: behave as a lost connection."""
        self._closed = self._closed or _LOST
        self._wake()

    # ---- the Peer interface -------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._closed is None and self._writable is None and self._transport is not None

    def send_nowait(self, frame: bytes) -> None:
        """Send without waiting; only called after ``writable`` said yes."""
        assert self._transport is not None
        self._transport.send(WSMsgType.TEXT, frame)

    async def receive(self) -> bytes | BinaryFrame | Outcome:
        frames = self._frames
        while not frames:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        frame = frames.popleft()
        if self._reading_paused and len(frames) <= self._low:
            self._reading_paused = False
            if self._transport is not None:
                self._transport.underlying_transport.resume_reading()
        return frame

    async def send(self, frame: bytes) -> None:
        transport = self._transport
        if self._closed is not None or transport is None:
            raise self._closed or _LOST
        transport.send(WSMsgType.TEXT, frame)
        if self._writable is not None:
            await self._writable
            if self._closed is not None and self._closed is _LOST:
                raise _LOST

    async def close(self, code: int, reason: str) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._closed is None:
            self._closed = Closed(code, reason)
            transport.send_close(WSCloseCode(code), reason.encode()[:120])
        transport.disconnect()

    # ---- internals ----------------------------------------------------------------------

    def _start_parts(self, frame: WSFrame, *, binary: bool) -> None:
        self._parts = [frame.get_payload_as_bytes()]
        self._parts_size, self._parts_binary = len(self._parts[0]), binary

    def _too_big(self, transport: WSTransport) -> None:
        """A fragmented message past the size limit: close 1009, as for one big frame."""
        self._parts, self._parts_size = [], 0
        if self._closed is None:
            self._closed = Closed(1009, "message too big")
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            transport.disconnect()
        self._wake()

    def _push(self, frame: bytes | BinaryFrame | Outcome) -> None:
        self._frames.append(frame)
        self._wake()
        if not self._reading_paused and len(self._frames) >= self._high and self._transport:
            self._reading_paused = True
            self._transport.underlying_transport.pause_reading()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def queued(self) -> int:
        """Frames received and not yet taken by the relay (for the queue-depth metric)."""
        return len(self._frames)
