"""The real gateway for tests: in-process on a free port (uvicorn, same options as `serve`), or
as a separate `realtime-gateway serve` process for signal tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.server import uvicorn_config
from gateway.services import Services
from tests.support.servers import free_port, wait_for_port

ADMIN_KEY = "adm-test-0123456789abcdef"


class GatewayHandle:
    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.settings = settings
        self.services = services
        self.port = settings.port
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1"

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )

    async def create_tenant(self, **body: Any) -> tuple[str, str]:
        """(tenant id, api key)."""
        async with self.admin() as client:
            response = await client.post("/admin/tenants", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        return data["id"], data["api_key"]


def gateway_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "port": free_port(),
        "admin_key": ADMIN_KEY,
        "hash_secret": "test-pepper-0123456789",
        "sim_speed": 0.0,
        "log_format": "json",
        "heartbeat_seconds": 0.5,
        "heartbeat_ttl_seconds": 2.0,
        "replica_id": "test-replica",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def run_gateway(
    settings: Settings, clock: Callable[[], float] = time.time
) -> AsyncIterator[GatewayHandle]:
    app = create_app(settings, clock)
    config = uvicorn_config(app, settings.model_copy(update={"host": "127.0.0.1"}), loop="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("gateway exited during start")
            await asyncio.sleep(0.01)
        yield GatewayHandle(settings, app.state.services)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


class GatewayProcess:
    """`realtime-gateway serve` as a child process (for SIGTERM / SIGKILL tests)."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = int(env["GATEWAY_PORT"])
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1"

    def start(self) -> GatewayProcess:
        exe = Path(sys.executable).parent / "realtime-gateway"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(exe), "serve"], env=self.env, stdout=self._log, stderr=self._log
        )
        wait_for_port(self.port, timeout=20)
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
