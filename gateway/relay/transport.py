"""The two sockets of a session, as the relay sees them.

The relay only needs: receive a text frame as bytes, send bytes as a text frame, close with a
code. Keeping that surface this small is what lets the data path move to a faster WebSocket
implementation without touching the relay or the core.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from gateway.protocol.core import Outcome


@dataclasses.dataclass(frozen=True, slots=True)
class BinaryFrame:
    """A binary frame from the client: not part of the realtime protocol."""

    size: int


@dataclasses.dataclass(slots=True)
class Closed(Exception):
    """The peer closed (or the connection was lost: code 1006)."""

    code: int
    reason: str = ""


class FrameSource(Protocol):
    async def receive(self) -> bytes | BinaryFrame | Outcome:
        """The next frame (or a frame's Outcome already computed by a fast path); raises Closed
        when the peer is gone."""
        ...


class FrameSink(Protocol):
    async def send(self, frame: bytes) -> None:
        """Send one text frame; raises Closed when the peer is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class Peer(FrameSource, FrameSink, Protocol):
    pass


class QueuedPeer(Peer, Protocol):
    """A peer that can tell how many received frames the relay has not taken yet."""

    @property
    def queued(self) -> int: ...
