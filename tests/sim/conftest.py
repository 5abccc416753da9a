from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from gateway.sim import SimConfig, SimServer
from tests.sim.support import BETA, GA, RawClient

Connect = Callable[..., contextlib.AbstractAsyncContextManager[RawClient]]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(speed=0, seed=5)) as server:
        yield server
        assert server.hub.internal_errors == 0


def raw_connector(server: SimServer) -> Connect:
    @contextlib.asynccontextmanager
    async def open_raw(
        query: str = "model=gpt-realtime",
        key: str | None = "sk-sim",
        headers: dict[str, str] | None = None,
        path: str = "/v1/realtime",
        beta: bool = False,
        **options: Any,
    ) -> AsyncIterator[RawClient]:
        sent = dict(headers or {})
        if key is not None:
            sent.setdefault("Authorization", f"Bearer {key}")
        if beta:
            sent["OpenAI-Beta"] = "realtime=v1"
        url = f"ws://127.0.0.1:{server.port}{path}?{query}"
        options.setdefault("max_size", None)
        async with connect(url, additional_headers=sent, **options) as ws:
            yield RawClient(ws, BETA if beta else GA)

    return open_raw


@pytest.fixture
def raw(sim: SimServer) -> Connect:
    return raw_connector(sim)
