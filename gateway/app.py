"""``create_app(settings)``: the FastAPI app; its lifespan wires store, upstreams and metrics."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api import admin, health, realtime, tenant, tokens
from gateway.api.errors import install_error_handlers
from gateway.config import Settings
from gateway.quickstart import quickstart_text
from gateway.services import Services


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> FastAPI:
    services = Services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        if services.demo_key is not None:
            sys.stdout.write(quickstart_text(settings, services.demo_key))
            sys.stdout.flush()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="realtime-gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (health, tokens, tenant, admin, realtime):
        app.include_router(module.router)
    return app
