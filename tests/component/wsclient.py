"""Raw clients for the component tests: a `websockets` realtime client, minting, refusals, and
a recording proxy that sits between the gateway and a simulator and keeps what crossed it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from gateway.config import Credential, UpstreamConfig, UpstreamKind
from tests.support.gateway import GatewayHandle

TIMEOUT = 10.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ws_url(gateway: GatewayHandle, query: str = "model=gpt-realtime") -> str:
    return f"{gateway.ws_url}/realtime" + (f"?{query}" if query else "")


async def mint(gateway: GatewayHandle, key: str, body: dict[str, Any] | None = None) -> str:
    """A GA client secret minted with the tenant key (``body`` defaults to a text session)."""
    if body is None:
        body = {"session": {"type": "realtime", "model": "gpt-realtime"}}
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=TIMEOUT) as http:
        response = await http.post("/v1/realtime/client_secrets", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    value: str = response.json()["value"]
    assert value.startswith("ek_")
    return value


@dataclasses.dataclass(frozen=True)
class Refusal:
    status: int
    headers: Headers
    body: dict[str, Any]
    raw: bytes

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.body["error"]
        return err


def error_body(code: str, error_type: str, param: str | None, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def refusal(url: str, **kwargs: Any) -> Refusal:
    """Open a WebSocket that must be refused with an HTTP answer; return that answer."""
    try:
        ws = await connect(url, open_timeout=TIMEOUT, **kwargs)
    except InvalidStatus as exc:
        response = exc.response
        assert response.headers.get("content-type", "").startswith("application/json"), (
            response.headers
        )
        body = orjson.loads(response.body)
        return Refusal(response.status_code, response.headers, body, response.body)
    await ws.close()
    raise AssertionError(f"{url} was accepted, expected an HTTP refusal")


@contextlib.asynccontextmanager
async def session(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """An accepted realtime WebSocket, closed on exit."""
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("compression", None)
    async with connect(url, **kwargs) as ws:
        yield ws


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    event: dict[str, Any] = orjson.loads(raw)
    return event


async def until(
    ws: ClientConnection, kind: str, timeout: float = TIMEOUT
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read events until one of type ``kind``; returns it and everything read before it."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await recv(ws, timeout)
            if event["type"] == kind:
                return event, seen
            seen.append(event)


def user_text(text: str, event_id: str | None = None) -> bytes:
    event: dict[str, Any] = {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }
    if event_id is not None:
        event["event_id"] = event_id
    return orjson.dumps(event)


async def text_turn(
    ws: ClientConnection, text: str, response: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Add a user message, ask for a response; returns its ``response.done`` event.

    Any ``error`` event on the way fails the turn."""
    await ws.send(user_text(text).decode())
    create: dict[str, Any] = {"type": "response.create"}
    if response is not None:
        create["response"] = response
    await ws.send(orjson.dumps(create).decode())
    done, before = await until(ws, "response.done")
    errors = [e for e in before if e["type"] == "error"]
    assert not errors, errors
    return done


async def expect_close(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Read (and drop) frames until the server closes; returns the close code and reason."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def usage_of(gateway: GatewayHandle, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=TIMEOUT) as http:
        response = await http.get("/v1/usage", headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Poll a condition that becomes true through I/O the test does not drive."""
    async with asyncio.timeout(timeout):
        while not await _maybe_await(predicate()):
            await asyncio.sleep(0.02)


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


def sim_upstream(url: str, key: str, *, models: list[str] | None = None) -> UpstreamConfig:
    """Gateway settings for one simulator-kind upstream at ``url`` (``ws://host:port/v1``)."""
    return UpstreamConfig(
        name="sim",
        kind=UpstreamKind.SIM,
        url=url,
        credentials=[Credential(name="c", api_key=SecretStr(key))],
        models=models or [],
    )


# --- a recording proxy in front of an upstream ---------------------------------------------------


@dataclasses.dataclass
class ProxiedConnection:
    request: Request
    to_upstream: list[bytes] = dataclasses.field(default_factory=list)
    from_upstream: list[bytes] = dataclasses.field(default_factory=list)
    binary_to_upstream: int = 0
    downstream: ServerConnection | None = None
    upstream: ClientConnection | None = None
    closed_by_upstream: tuple[int, str] | None = None


class RecordingProxy:
    """A WebSocket proxy the gateway uses as its upstream: it opens the same path on ``target``
    with the same headers and relays both ways, keeping every frame and handshake.

    An upstream refusal is answered as the same HTTP status (the upgrade is decided before the
    gateway's side is accepted). ``kill()`` drops every TCP connection without a close frame,
    as a crashed upstream would.
    """

    def __init__(self, target_http: str) -> None:
        self.target = target_http.replace("http://", "ws://")
        self.connections: list[ProxiedConnection] = []
        self._pending: dict[int, tuple[ProxiedConnection, ClientConnection]] = {}
        self._server: Server | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> RecordingProxy:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._open_upstream,
            max_size=None,
            compression=None,
            ping_interval=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for _, upstream in self._pending.values():
            await upstream.close()

    def kill(self) -> None:
        for conn in self.connections:
            for side in (conn.downstream, conn.upstream):
                if side is not None:
                    side.transport.abort()

    async def _open_upstream(self, ws: ServerConnection, request: Request) -> Response | None:
        headers = {
            k: v
            for k, v in request.headers.raw_items()
            if k.lower() in ("authorization", "api-key", "openai-beta", "x-sim-fault")
        }
        record = ProxiedConnection(request)
        self.connections.append(record)
        try:
            upstream = await connect(
                self.target + request.path,
                additional_headers=headers,
                max_size=None,
                compression=None,
                ping_interval=None,
            )
        except InvalidStatus as exc:
            return exc.response
        record.upstream = upstream
        self._pending[id(ws)] = (record, upstream)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        record, upstream = self._pending.pop(id(ws))
        record.downstream = ws

        async def down_to_up() -> None:
            async for frame in ws:
                if isinstance(frame, bytes):
                    record.binary_to_upstream += 1
                    await upstream.send(frame)
                else:
                    record.to_upstream.append(frame.encode())
                    await upstream.send(frame)

        async def up_to_down() -> None:
            async for frame in upstream:
                data = frame.encode() if isinstance(frame, str) else frame
                record.from_upstream.append(data)
                await ws.send(frame)

        tasks = [asyncio.create_task(down_to_up()), asyncio.create_task(up_to_down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                    await task
            rcvd = upstream.protocol.close_rcvd
            if rcvd is not None:
                record.closed_by_upstream = (rcvd.code, rcvd.reason)
                with contextlib.suppress(ConnectionClosed, OSError):
                    await ws.close(rcvd.code, rcvd.reason)
            with contextlib.suppress(ConnectionClosed, OSError):
                await ws.close()
            with contextlib.suppress(ConnectionClosed, OSError):
                await upstream.close()


__all__ = [
    "TIMEOUT",
    "ProxiedConnection",
    "RecordingProxy",
    "Refusal",
    "bearer",
    "error_body",
    "expect_close",
    "mint",
    "recv",
    "refusal",
    "session",
    "sim_upstream",
    "text_turn",
    "until",
    "usage_of",
    "user_text",
    "wait_for",
    "ws_url",
]
