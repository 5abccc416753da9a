"""The client side of a session over a Starlette WebSocket (uvicorn's implementation)."""

from __future__ import annotations

import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.relay.transport import BinaryFrame, Closed


class StarletteClientPeer:
    __slots__ = ("_ws",)

    # uvicorn buffers inside its protocol; what it holds is not visible from here.
    queued = 0

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    async def receive(self) -> bytes | BinaryFrame:
        try:
            message = await self._ws.receive()
        except (RuntimeError, OSError):
            raise Closed(1006, "connection lost") from None
        if message["type"] == "websocket.disconnect":
            raise Closed(int(message.get("code") or 1005), str(message.get("reason") or ""))
        text = message.get("text")
        if isinstance(text, str):
            return text.encode()
        data = message.get("bytes") or b""
        return BinaryFrame(len(data))

    async def send(self, frame: bytes) -> None:
        if self._ws.application_state is not WebSocketState.CONNECTED:
            raise Closed(1006, "connection closed")
        try:
            await self._ws.send({"type": "websocket.send", "text": frame.decode()})
        except (RuntimeError, OSError, WebSocketDisconnect):
            raise Closed(1006, "connection lost") from None

    async def close(self, code: int, reason: str) -> None:
        if self._ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await self._ws.close(code, reason[:120])
