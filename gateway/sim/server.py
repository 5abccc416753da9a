"""Running the simulator: in-process for tests (``SimServer``) or blocking for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn

from gateway.sim.app import SimHub, create_sim_app
from gateway.sim.config import SimConfig

log = logging.getLogger("gateway.sim")


def _uvicorn_config(config: SimConfig, hub: SimHub | None, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        create_sim_app(config, hub),
        ws="websockets-sansio",
        ws_max_size=config.max_frame_bytes,
        # Audio does not compress; deflate would only cost CPU on both ends.
        ws_per_message_deflate=False,
        lifespan="off",
        **extra,  # type: ignore[arg-type]
    )


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # In-process (tests, the gateway's built-in upstream): signals belong to the host.
        yield


class SimServer:
    """``async with SimServer(SimConfig()) as sim:`` runs the simulator on 127.0.0.1 and a
    free port in the current event loop, and stops it (connections closed with 1012, every
    task finished) on exit."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1") -> None:
        self.config = config or SimConfig()
        self.host = host
        self.hub = SimHub(self.config)
        self.port = 0
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1"

    @property
    def live_sessions(self) -> int:
        return len(self.hub.sessions)

    async def __aenter__(self) -> SimServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = int(sock.getsockname()[1])
        config = _uvicorn_config(
            self.config,
            self.hub,
            log_config=None,
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="sim-server")
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task  # raises what stopped it
                raise RuntimeError("the simulator stopped before it started")
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is None or self._task is None:
            return
        server, task = self._server, self._task
        server.should_exit = True
        # uvicorn waits for open connections (up to timeout_graceful_shutdown) and then for
        # their tasks; a peer that never completes the close handshake must not hold the host
        # (a gateway's shutdown, a test) forever: force the exit, then cancel as a last resort.
        try:
            await asyncio.wait_for(asyncio.shield(task), 8)
        except TimeoutError:
            server.force_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), 2)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def run_sim(config: SimConfig, host: str, port: int) -> None:
    """Serve the simulator until interrupted (``realtime-gateway sim``)."""
    log.warning(
        "simulated realtime upstream on ws://%s:%d/v1/realtime (keys: %d configured)",
        host,
        port,
        len(config.api_keys),
    )
    uvicorn.Server(_uvicorn_config(config, None, host=host, port=port)).run()
