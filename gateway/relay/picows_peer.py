"""One side of a session over picows (a Cython WebSocket implementation), as a ``Peer``.

picows hands frames to a listener callback; the relay awaits ``receive()``. The bridge is a
list and one future: frames that arrive while the pump is busy queue up and are taken without
a task switch each, so under load the pump drains bursts in a tight loop. The queue is bounded:
past ``high_water`` frames or ``QUEUE_HIGH_BYTES`` the socket is no longer read (TCP pushes back
on the sender, and the bytes wait in the kernel rather than in this process) until the pump
has caught up. Sends write straight into the transport; when its buffer is full
(``pause_writing``) the sender waits, so backpressure reaches the other side too.

Memory is per connection for the whole session, so the peer holds little: slots, a list for
the queue (an empty deque is 600 bytes), and no write buffer of its own size (see
``_send_text``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from multidict import CIMultiDict, CIMultiDictProxy
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from gateway.protocol.core import Outcome
from gateway.relay.keepalive import Keepalive, keepalive
from gateway.relay.transport import BinaryFrame, Closed

_LOST = Closed(1006, "connection lost")

# picows copies a frame into a write buffer of the connection's own, which grows to the
# largest frame sent and stays: on the upstream hop (masked, so always copied) that is an
# audio append, 6.4 KiB per session. Frames that would grow it are copied instead into one
# buffer per thread, which picows then frames and masks in place and writes (anything the
# socket does not take at once it copies, so the buffer is free again on return).
_HEADROOM = 14  # the longest frame header, written in front of the payload
_OWN_BUFFER = 900  # picows's write buffer starts at 1 KiB: up to here a frame fits it as is
_SERVER_COPIES = 8192  # picows's server side writes larger frames without copying them
_scratch = threading.local()
# picows keeps the upgrade's request and response on the transport for the connection's life,
# about 1 KiB of header strings per side that nothing reads once connected: they are replaced
# by this (read-only, so that nothing can fill it).
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
# A bound in frames alone let a pump that waits (a charge being booked, a slow client) queue
# 256 audio deltas of 13 KiB: 3 MiB for one session, and under a load spike the whole
# process's memory grew for good (freed heap is not given back). Five deltas are plenty to
# smooth a pause of the pump; beyond that the kernel holds the data.
QUEUE_HIGH_BYTES = 64 * 1024
QUEUE_LOW_BYTES = QUEUE_HIGH_BYTES // 4


def _send_text(transport: WSTransport, frame: bytes) -> None:
    if len(frame) <= _OWN_BUFFER or (len(frame) > _SERVER_COPIES and not transport.is_client_side):
        transport.send(WSMsgType.TEXT, frame)
        return
    buffer: bytearray | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = bytearray(_HEADROOM)
    buffer[_HEADROOM:] = frame
    transport.send_reuse_external_bytearray(WSMsgType.TEXT, buffer, _HEADROOM)


def _size_of(frame: bytes | BinaryFrame | Outcome) -> int:
    """What a queued frame holds in memory (a binary frame's payload is not kept)."""
    if isinstance(frame, bytes):
        return len(frame)
    if isinstance(frame, Outcome) and frame.forward is not None:
        return len(frame.forward)
    return 0


class PicowsPeer(WSListener):
    __slots__ = (
        "_closed",
        "_frames",
        "_heard",
        "_high",
        "_keepalive",
        "_low",
        "_max_message",
        "_parts",
        "_parts_binary",
        "_parts_size",
        "_pinged",
        "_queued_bytes",
        "_reading_paused",
        "_transport",
        "_waiter",
        "_writable",
        "fast",
    )

    def __init__(self, high_water: int = 256, max_message: int = 16 * 1024 * 1024) -> None:
        super().__init__()
        self._max_message = max_message
        self._parts_size = 0
        # Usually empty or one frame: a list is cheaper to hold than a deque, and popping
        # from its front is cheap at the queue's bound.
        self._frames: list[bytes | BinaryFrame | Outcome] = []
        self._queued_bytes = 0
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
        self._keepalive: Keepalive | None = None
        self._heard = False  # a frame arrived since the last keepalive visit
        self._pinged = False

    # ---- picows callbacks ---------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        for message in (transport.request, transport.response):
            if message is not None:
                message.headers = _NO_HEADERS  # type: ignore[assignment]  # read-only on purpose
        self._keepalive = keepalive()
        self._keepalive.add(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._heard = True
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
        # PING is answered by picows itself (auto pong); a PONG only counts as heard.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._keepalive is not None:
            self._keepalive.discard(self)
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

    def keepalive(self) -> None:
        """The keepalive's visit (see keepalive.py): ping a silent peer, drop one that stayed
        silent since it was pinged."""
        transport = self._transport
        if transport is None:
            return
        if self._heard:
            self._heard = self._pinged = False
        elif not self._pinged:
            self._pinged = True
            transport.send_ping()
        else:
            transport.send_close(WSCloseCode.GOING_AWAY, b"no reply to ping")
            transport.disconnect(False)  # no graceful close: the peer is not reading

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
        _send_text(self._transport, frame)

    async def receive(self) -> bytes | BinaryFrame | Outcome:
        frames = self._frames
        while not frames:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        frame = frames.pop(0)
        self._queued_bytes -= _size_of(frame)
        if (
            self._reading_paused
            and len(frames) <= self._low
            and self._queued_bytes <= QUEUE_LOW_BYTES
        ):
            self._reading_paused = False
            if self._transport is not None:
                self._transport.underlying_transport.resume_reading()
        return frame

    async def send(self, frame: bytes) -> None:
        transport = self._transport
        if self._closed is not None or transport is None:
            raise self._closed or _LOST
        _send_text(transport, frame)
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
        self._queued_bytes += _size_of(frame)
        self._wake()
        if (
            not self._reading_paused
            and (len(self._frames) >= self._high or self._queued_bytes >= QUEUE_HIGH_BYTES)
            and self._transport
        ):
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
