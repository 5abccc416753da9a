"""picows's protocol, with a read buffer sized by the frames rather than by the bursts.

picows reads each connection into its own buffer, doubles the buffer whenever one read fills
it past 90 %, and never shrinks it. A read takes all the socket holds, so a burst (the
upstream's deltas that queued while the loop was busy, a client's appends behind a slow turn)
doubled it for the rest of the session although every frame fitted: measured with 200 talking
sessions, most upstream buffers had grown from 16 to 32 KiB for 13 KiB frames, and the read
buffers were about half of the memory a session held. Here a read is offered only the part of
the free space that keeps the buffer under that threshold; the rest of a burst stays in the
socket and is read by the next read of the same loop iteration (libuv reads again while a
read fills what it was offered). A frame that does not fit still grows the buffer: once the
unparsed part of a frame fills three quarters of it, the whole free space is offered.

The cost is two Python calls a read instead of none; the memory is per connection, for the
whole session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from picows import WSAutoPingStrategy
from picows import picows as picows_core

# picows gives every connection a child logger ("picows.gateway.<fd>") when handed a
# logging.Logger: one Logger, its dict and its cache per socket. An adapter is used as it is.
PICOWS_LOG = logging.LoggerAdapter(logging.getLogger("picows.gateway"))

_WSProtocol: Any = picows_core.WSProtocol  # type: ignore[attr-defined]  # not in the stubs
_FLOOR = 2048  # picows's smallest buffer
_SIMD_TAIL = 256  # picows keeps this much of the buffer back for its SIMD parsers
_NO_GROWTH = 90  # picows doubles the buffer when a read leaves it more than 90 % full


class BoundedReadProtocol(_WSProtocol):  # type: ignore[misc]  # picows's class is Any here
    """``WSProtocol`` whose reads never fill the buffer past picows's growth threshold.

    The buffer's size is not exposed, so it is tracked: it starts at what picows allocates and
    doubles exactly when picows's rule says it does (checked after each read, below). picows's
    auto-ping is off: its task per connection is replaced by one timer (keepalive.py); its
    auto-pong answers the peer's pings.
    """

    __slots__ = ("_free", "_size")

    def __init__(
        self,
        *,
        host_port: str | None,
        path: str | None,
        client_side: bool,
        listener_factory: Callable[..., Any],
        max_frame_bytes: int,
        extra_headers: dict[str, str] | None,
        read_buffer: int,
        handshake_timeout: float,
    ) -> None:
        super().__init__(
            host_port, path, client_side, listener_factory, PICOWS_LOG, True, handshake_timeout,
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
            max_frame_bytes, extra_headers, read_buffer,
        )  # fmt: skip
        self._size = max(read_buffer, _FLOOR) - _SIMD_TAIL
        self._free = 0

    def get_buffer(self, size_hint: int) -> memoryview:
        view: memoryview = _WSProtocol.get_buffer(self, size_hint)
        free = len(view)
        size = self._size
        if free > size:  # never expected; trust what picows shows over the tracked size
            self._size = size = free
        self._free = free
        # Leave more than picows's 10 % (and its 256-byte floor) unfilled...
        offered = free - (size >> 3) - _SIMD_TAIL - 1
        # ...unless a frame already fills most of the buffer: then it needs the room to grow.
        return view[:offered] if offered >= size >> 3 else view

    def buffer_updated(self, nbytes: int) -> None:
        size = self._size
        used = size - self._free + nbytes
        if 100 * used // size > _NO_GROWTH or size - used <= _SIMD_TAIL:
            self._size = size * 2  # picows doubles it in the call below
        _WSProtocol.buffer_updated(self, nbytes)
