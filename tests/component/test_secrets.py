"""Secrets stay where they belong: the upstream key never reaches a client, Redis or a log line;
tenant keys and client secrets are never stored or logged in clear.

The upstream key here is deliberately not shaped like any key the log scrubber knows (no `sk-`
prefix), so these tests prove that nothing logs it, not that the scrubber hides it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from gateway.logs import JsonFormatter
from gateway.sim import SimConfig, SimServer
from tests.component.wsclient import (
    bearer,
    mint,
    refusal,
    session,
    sim_upstream,
    text_turn,
    until,
    ws_url,
)
from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway

# What the gateway's logging configuration keeps quiet below WARNING (gateway.logs).
QUIET_LIBRARIES = ("uvicorn.access", "websockets", "httpx")


class Capture(logging.Handler):
    """Every record the gateway's configuration would let through, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(QUIET_LIBRARIES) and record.levelno < logging.WARNING:
            return
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        formatter = JsonFormatter("test")
        for record in self.records:
            # The raw record (before any scrubbing) and the line the gateway would write.
            yield record.getMessage()
            yield repr(record.__dict__)
            if record.exc_info:
                yield logging.Formatter().formatException(record.exc_info)
            yield formatter.format(record)


@contextlib.contextmanager
def capture_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def _all_frames(ws: ClientConnection, sink: list[str]) -> None:
    async for frame in ws:
        sink.append(frame if isinstance(frame, str) else frame.decode("latin-1"))


async def _redis_dump(redis_url: str) -> list[str]:
    """Every key and every value in Redis, as text."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    out: list[str] = []
    try:
        async for raw_key in client.scan_iter(count=500):
            key = raw_key.decode()
            out.append(key)
            kind = (await client.type(raw_key)).decode()
            value: Any
            if kind == "string":
                value = await client.get(raw_key)
            elif kind == "hash":
                value = await client.hgetall(raw_key)
            elif kind == "set":
                value = await client.smembers(raw_key)
            elif kind == "zset":
                value = await client.zrange(raw_key, 0, -1, withscores=True)
            elif kind == "list":
                value = await client.lrange(raw_key, 0, -1)
            elif kind == "stream":
                value = await client.xrange(raw_key)
            else:
                raise AssertionError(f"unexpected key type {kind} for {key}")
            out.append(repr(value))
    finally:
        await client.aclose()
    return out


async def _conversation(
    gw: GatewayHandle, frames: list[str], http_bodies: list[str]
) -> tuple[str, str]:
    """Everything a tenant and its front end do; returns (tenant key, client secret)."""
    tenant_id, key = await gw.create_tenant(name="acme")
    secret = await mint(gw, key, {"max_uses": 2})
    async with session(
        ws_url(gw), subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]
    ) as ws:
        created, before = await until(ws, "session.created")
        frames.extend(str(e) for e in [*before, created])
        done = await text_turn(ws, "Tell me your secrets.")
        frames.append(str(done))
        # An event the upstream refuses: its error event is relayed (and logged) too.
        await ws.send('{"type":"conversation.item.retrieve","item_id":"missing"}')
        error, before = await until(ws, "error")
        frames.extend(str(e) for e in [*before, error])
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            for path in ("/v1/usage", "/v1/sessions"):
                http_bodies.append((await http.get(path, headers=bearer(key))).text)
            async with gw.admin() as admin:
                for path in (
                    "/admin/tenants",
                    "/admin/sessions",
                    "/admin/usage",
                    f"/admin/tenants/{tenant_id}",
                ):
                    http_bodies.append((await admin.get(path)).text)
            for path in ("/metrics", "/readyz", "/healthz"):
                http_bodies.append((await http.get(path)).text)
    # The rest of the session as raw frames, to the close.
    async with session(ws_url(gw), additional_headers=bearer(secret)) as ws:
        await until(ws, "session.created")
        await ws.close()
        await _all_frames(ws, frames)
    # A refused upgrade: its body and log lines.
    http_bodies.append((await refusal(ws_url(gw), additional_headers=bearer(secret))).raw.decode())
    http_bodies.append(
        (await refusal(ws_url(gw), additional_headers=bearer(key + "x"))).raw.decode()
    )
    return key, secret


async def test_secrets_never_reach_clients_redis_or_logs(redis_url: str) -> None:
    upstream_key = "UPSTREAMKEY" + secrets.token_hex(16)
    async with SimServer(SimConfig(api_keys=(upstream_key,), speed=0.0)) as sim:
        settings = gateway_settings(
            redis_url=redis_url,
            upstreams=[sim_upstream(sim.ws_url, upstream_key)],
            log_level="debug",
        )
        frames: list[str] = []
        bodies: list[str] = []
        with capture_logs() as logs:
            async with run_gateway(settings) as gw:
                key, secret = await _conversation(gw, frames, bodies)
                stored = await _redis_dump(redis_url)
    assert frames
    assert bodies
    assert stored
    assert any("session started" in t for t in logs.texts())  # the capture did see the gateway
    everything_client_side = "\n".join(frames + bodies)
    assert upstream_key not in everything_client_side
    assert upstream_key[11:] not in everything_client_side
    in_redis = "\n".join(stored)
    for value in (upstream_key, key, secret, key[7:], secret[3:]):
        assert value not in in_redis
    logged = "\n".join(logs.texts())
    for value in (upstream_key, key, secret, key[7:], secret[3:]):
        assert value not in logged, value[:6]
