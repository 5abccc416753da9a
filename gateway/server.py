"""The uvicorn configuration of a gateway process, in one place (``serve`` and the tests)."""

from __future__ import annotations

from typing import Any, Literal

import uvicorn
from fastapi import FastAPI

from gateway.config import Settings
from gateway.relay.picows_edge import realtime_edge
from gateway.services import Services


def uvicorn_config(
    app: FastAPI, settings: Settings, *, loop: Literal["uvloop", "none"] = "uvloop", **extra: Any
) -> uvicorn.Config:
    services: Services = app.state.services
    ws: Any = realtime_edge(services) if settings.data_path == "picows" else "websockets-sansio"
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=loop,
        http="httptools",
        ws=ws,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=settings.compression,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        **extra,
    )
