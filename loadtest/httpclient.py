"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for minting tokens fast.

httpx costs a few hundred microseconds of Python per request; minting at thousands per second
from one core needs a client that only writes pre-built request bytes and reads the status
line, Content-Length and body.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import orjson


class HttpError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


def build_post(host: str, port: int, path: str, bearer: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {bearer}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


class HttpConnection:
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, raw: bytes) -> Reply:
        if self._reader is None or self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = _content_length(head)
        body = await self._reader.readexactly(length) if length else b""
        if b"\r\nconnection: close" in head.lower():
            await self.close()
        return Reply(status, body)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # the server may have closed first
                await writer.wait_closed()


def _content_length(head: bytes) -> int:
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        if b"transfer-encoding: chunked" in lowered:
            raise HttpError("chunked responses are not supported by this client")
        return 0
    end = lowered.find(b"\r\n", at + 2)
    return int(lowered[at + 17 : end].strip())


async def mint_tokens(
    host: str, port: int, key: str, body: bytes, count: int, concurrency: int = 16
) -> list[str]:
    """``count`` client secrets (the ``value`` of each answer); raises on any refusal."""
    raw = build_post(host, port, "/v1/realtime/client_secrets", key, body)
    tokens: list[str] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        conn = await HttpConnection(host, port).open()
        try:
            while remaining > 0:
                remaining -= 1
                reply = await conn.request(raw)
                if reply.status != 200:
                    raise HttpError(f"minting answered {reply.status}: {reply.body[:300]!r}")
                tokens.append(orjson.loads(reply.body)["value"])
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    return tokens
