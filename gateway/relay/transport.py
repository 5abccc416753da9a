"""The two sockets of a session, as the relay sees them.

The relay only needs: receive a text frame as bytes, send bytes as a text frame, close with a
code. Keeping that surface this small is what lets the data path move to a faster WebSocket
implementation without touching the relay or the core.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed


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
    async def receive(self) -> bytes | BinaryFrame:
        """The next frame; raises Closed when the peer is gone."""
        ...


class FrameSink(Protocol):
    async def send(self, frame: bytes) -> None:
        """Send one text frame; raises Closed when the peer is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class Peer(FrameSource, FrameSink, Protocol):
    pass


class UpstreamPeer:
    """The upstream side over a ``websockets`` client connection."""

    __slots__ = ("_ws",)

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def receive(self) -> bytes | BinaryFrame:
        try:
            # decode=False: text frames arrive as the UTF-8 bytes they were sent as; no decode.
            data = await self._ws.recv(decode=False)
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        return data if isinstance(data, bytes) else bytes(data)

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame, text=True)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason[:120])


def _closed(exc: ConnectionClosed) -> Closed:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return Closed(1006, "connection lost")
    return Closed(frame.code, frame.reason)
