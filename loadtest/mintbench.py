"""Token-minting throughput: ``POST /v1/realtime/client_secrets`` against the gateway.

Two measurements, both with keep-alive connections and pre-built request bytes:

* closed loop: ``connections`` clients each send their next request as soon as the previous
  answer arrives, for ``seconds``: the most mints a second the gateway can do, and the
  latency at that load (which includes waiting in the gateway's own queue);
* open loop: requests are due at a fixed ``rate`` whatever happens; the latency of each is
  counted from when it was due, so a stall shows in the tail instead of hiding (coordinated
  omission).

The client's own garbage collector is held off while it measures: its full collections stop
this process for tens of milliseconds, which would show as the gateway's tail latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass

from loadtest.httpclient import HttpConnection, build_post


@dataclass(frozen=True, slots=True)
class MintResult:
    mode: str
    seconds: float
    ok: int
    failed: int
    per_second: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    connections: int
    offered_per_second: float | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 3)


def _result(
    mode: str,
    seconds: float,
    latencies: list[float],
    failed: int,
    connections: int,
    offered: float | None = None,
) -> MintResult:
    return MintResult(
        mode=mode,
        seconds=round(seconds, 3),
        ok=len(latencies),
        failed=failed,
        per_second=round(len(latencies) / seconds, 1),
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        max_ms=round(max(latencies), 3) if latencies else None,
        connections=connections,
        offered_per_second=offered,
    )


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def closed_loop(
    host: str, port: int, key: str, body: bytes, connections: int, seconds: float
) -> MintResult:
    raw = build_post(host, port, "/v1/realtime/client_secrets", key, body)
    latencies: list[float] = []
    failed = 0
    conns = [await HttpConnection(host, port).open() for _ in range(connections)]
    end = time.perf_counter() + seconds

    async def client(conn: HttpConnection) -> None:
        nonlocal failed
        while time.perf_counter() < end:
            started = time.perf_counter()
            reply = await conn.request(raw)
            if reply.status == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failed += 1

    started = time.perf_counter()
    try:
        with _no_gc():
            await asyncio.gather(*(client(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return _result("closed", time.perf_counter() - started, latencies, failed, connections)


async def open_loop(
    host: str, port: int, key: str, body: bytes, rate: float, seconds: float, connections: int = 64
) -> MintResult:
    raw = build_post(host, port, "/v1/realtime/client_secrets", key, body)
    latencies: list[float] = []
    failed = 0
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await HttpConnection(host, port).open())

    async def one(due: float) -> None:
        nonlocal failed
        conn = await idle.get()  # waiting for a free connection counts in the latency
        try:
            reply = await conn.request(raw)
        finally:
            idle.put_nowait(conn)
        if reply.status == 200:
            latencies.append((time.perf_counter() - due) * 1000)
        else:
            failed += 1

    total = int(rate * seconds)
    with _no_gc():
        start = time.perf_counter()
        tasks = []
        for index in range(total):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)  # requests due within a millisecond go out together
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    while not idle.empty():
        await idle.get_nowait().close()
    return _result("open", elapsed, latencies, failed, connections, offered=rate)
