"""What a session holds on its two picows connections: read buffers sized by frames, no write
buffer of its own, no task for keepalive, and frames intact through all of it.

Real sockets on loopback, a picows server side and client side as the gateway opens them
(``BoundedReadProtocol``, ``PicowsPeer``), without the app.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from picows import (
    WSAutoPingStrategy,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_connect,
)
from picows import picows as picows_core

from gateway.relay import keepalive as keepalive_module
from gateway.relay import upstream as upstream_module
from gateway.relay.picows_peer import QUEUE_HIGH_BYTES, PicowsPeer
from gateway.relay.picows_protocol import BoundedReadProtocol
from gateway.relay.transport import Closed
from gateway.relay.upstream import connect

WSProtocol: Any = picows_core.WSProtocol  # type: ignore[attr-defined]


class Collector(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.transport: WSTransport | None = None
        self.arrived = asyncio.Event()
        self.expected = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.frames.append(frame.get_payload_as_bytes())
            if len(self.frames) >= self.expected:
                self.arrived.set()


def server_protocol(listener: WSListener, read_buffer: int, bounded: bool = True) -> Any:
    def accept(request: WSUpgradeRequest) -> WSListener:
        return listener

    if bounded:
        return BoundedReadProtocol(
            host_port=None,
            path=None,
            client_side=False,
            listener_factory=accept,
            max_frame_bytes=1 << 24,
            extra_headers=None,
            read_buffer=read_buffer,
            handshake_timeout=5.0,
        )
    return WSProtocol(
        None, None, False, accept, logging.getLogger("picows.test"), True, 5.0, False, 20.0,
        20.0, WSAutoPingStrategy.PING_WHEN_IDLE, True, 1 << 24, None, read_buffer,
    )  # fmt: skip


@asynccontextmanager
async def server(factory: Callable[[], Any]) -> AsyncIterator[tuple[int, list[Any]]]:
    made: list[Any] = []

    def make() -> Any:
        made.append(factory())
        return made[-1]

    srv = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], made
    finally:
        srv.close()


def free_space(protocol: Any) -> int:
    """The size of picows's read buffer, seen when it holds nothing."""
    return len(WSProtocol.get_buffer(protocol, -1))


@pytest.mark.parametrize("bounded", [True, False])
async def test_a_burst_of_frames_does_not_grow_the_read_buffer(bounded: bool) -> None:
    # 40 appends-sized frames written at once: far more than the 8 KiB buffer. picows alone
    # doubles its buffer to hold the burst (the control case); bounded, it stays 8 KiB.
    collector = Collector()
    collector.expected = 40
    async with server(lambda: server_protocol(collector, 8 * 1024 + 256, bounded)) as (port, made):
        transport, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{port}/")
        frames = [os.urandom(3200).hex().encode() for _ in range(40)]  # 6,400 bytes each
        for frame in frames:
            transport.send(WSMsgType.TEXT, frame)
        await asyncio.wait_for(collector.arrived.wait(), 5)
        transport.disconnect()
        assert collector.frames == frames
        if bounded:
            assert free_space(made[0]) == 8 * 1024
        else:
            assert free_space(made[0]) > 8 * 1024


async def test_a_frame_larger_than_the_buffer_grows_it_and_arrives_whole() -> None:
    collector = Collector()
    collector.expected = 2
    async with server(lambda: server_protocol(collector, 8 * 1024 + 256)) as (port, made):
        transport, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{port}/")
        big, small = os.urandom(15000).hex().encode(), b'{"type":"x"}'
        transport.send(WSMsgType.TEXT, big)
        transport.send(WSMsgType.TEXT, small)
        await asyncio.wait_for(collector.arrived.wait(), 5)
        transport.disconnect()
        assert collector.frames == [big, small]
        assert free_space(made[0]) >= 30000


@pytest.mark.parametrize("size", [0, 10, 900, 901, 6400, 8192, 8193, 13000, 300_000])
async def test_frames_of_every_size_cross_both_sides_intact(size: int) -> None:
    # The client side masks and the server side does not; sizes around picows's own 1 KiB
    # write buffer, the per-thread one, and the server's no-copy threshold.
    server_peer = PicowsPeer()
    async with server(lambda: server_protocol(server_peer, 8 * 1024 + 256)) as (port, _):
        client_peer = PicowsPeer()
        await connect(
            f"ws://127.0.0.1:{port}/", {}, client_peer, timeout=5, max_frame_bytes=1 << 24
        )
        payload = base64.b64encode(os.urandom(size))[:size]
        other = b"x" * (size // 2)
        await client_peer.send(payload)
        client_peer.send_nowait(other)
        assert await server_peer.receive() == payload
        assert await server_peer.receive() == other
        await server_peer.send(payload)
        server_peer.send_nowait(other)
        assert await client_peer.receive() == payload
        assert await client_peer.receive() == other
        await client_peer.close(1000, "done")


class FakePeer:
    def __init__(self) -> None:
        self.visits = 0

    def keepalive(self) -> None:
        self.visits += 1


async def test_one_timer_visits_the_peers_and_stops_when_none_is_left() -> None:
    loop = asyncio.get_running_loop()
    ka = keepalive_module.Keepalive(loop, 0.02)
    first, second = FakePeer(), FakePeer()
    ka.add(first)
    ka.add(second)
    for _ in range(100):  # at least two visits each (a loaded machine may be slow)
        if min(first.visits, second.visits) >= 2:
            break
        await asyncio.sleep(0.02)
    assert first.visits >= 2
    assert second.visits >= 2
    ka.discard(first)
    ka.discard(second)
    await asyncio.sleep(0.05)
    visits = (first.visits, second.visits)
    await asyncio.sleep(0.05)
    assert (first.visits, second.visits) == visits  # the timer stopped with nothing live


async def _raw_handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    answer = await loop.sock_recv(sock, 4096)
    assert answer.startswith(b"HTTP/1.1 101")
    return sock


async def test_a_peer_that_never_answers_is_dropped_and_one_that_answers_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keepalive_module, "INTERVAL", 0.05)
    silent_peer, lively_peer = PicowsPeer(), PicowsPeer()
    peers = iter([silent_peer, lively_peer])
    async with server(lambda: server_protocol(next(peers), 8 * 1024 + 256)) as (port, _):
        silent = await _raw_handshake(port)  # completes the upgrade, then reads nothing
        lively, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{port}/")  # answers pings
        with pytest.raises(Closed) as closed:
            await asyncio.wait_for(silent_peer.receive(), 2)
        assert closed.value.code == 1006
        await asyncio.sleep(0.3)  # several visits: pinged, answered, pinged again
        assert lively_peer.writable
        lively.disconnect()
        silent.close()


async def test_a_pump_that_does_not_take_frames_stops_the_reading_at_the_byte_bound() -> None:
    # 100 deltas of 13 KiB (1.3 MiB) sent to a peer whose pump is busy: it stops reading past
    # QUEUE_HIGH_BYTES (give or take one read), the rest waits in the kernel, and all arrive.
    server_peer = PicowsPeer()
    async with server(lambda: server_protocol(server_peer, 16 * 1024)) as (port, _):
        transport, _ = await ws_connect(WSListener, f"ws://127.0.0.1:{port}/")
        frames = [os.urandom(6500).hex().encode() for _ in range(100)]
        for frame in frames:
            transport.send(WSMsgType.TEXT, frame)
        await asyncio.sleep(0.3)
        assert 0 < server_peer.queued < 100
        held = sum(len(frame) for frame in frames[: server_peer.queued])
        assert held <= QUEUE_HIGH_BYTES + 16 * 1024
        assert [await server_peer.receive() for _ in frames] == frames
        transport.disconnect()


@pytest.fixture
def tls_pair(tmp_path: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for localhost, and a client
    context that trusts only it."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


async def test_frames_cross_a_tls_upstream_intact(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS goes through aiofastnet's transport, which is handed the per-thread send buffer:
    # what it cannot send at once it must have copied before the next frame reuses it.
    server_ctx, client_ctx = tls_pair
    monkeypatch.setattr(upstream_module, "_SSL", client_ctx)
    server_peer = PicowsPeer()
    srv = await asyncio.get_running_loop().create_server(
        lambda: server_protocol(server_peer, 8 * 1024 + 256), "127.0.0.1", 0, ssl=server_ctx
    )
    try:
        port = srv.sockets[0].getsockname()[1]
        client_peer = PicowsPeer()
        await connect(
            f"wss://localhost:{port}/", {}, client_peer, timeout=5, max_frame_bytes=1 << 24
        )
        frames = [os.urandom(n).hex().encode() for n in (3200, 6500, 150_000, 3200, 450)]
        for frame in frames:
            client_peer.send_nowait(frame)
        assert [await server_peer.receive() for _ in frames] == frames
        for frame in frames:
            server_peer.send_nowait(frame)
        assert [await client_peer.receive() for _ in frames] == frames
        await client_peer.close(1000, "done")
    finally:
        srv.close()
