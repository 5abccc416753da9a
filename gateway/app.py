"""``create_app(settings)``: the FastAPI app; its lifespan wires store, upstreams and metrics."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api import admin, health, realtime, tenant, tokens
from gateway.api.errors import install_error_handlers
from gateway.api.mint_route import mint_routes
from gateway.config import Settings
from gateway.quickstart import quickstart_text
from gateway.services import Services


class GatewayApp(FastAPI):
    """FastAPI, with a few hot ``POST`` routes answered before its middleware and router.

    ``fast_routes`` maps a path to a bare ASGI endpoint (the mint routes: see
    ``api.mint_route`` for why). Everything else, and those paths with another method or
    behind a root path, goes through FastAPI as usual.
    """

    fast_routes: Mapping[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.fast_routes.get(scope["path"])
            if route is not None:
                scope["app"] = self  # as Starlette sets it: request.app.state.services
                await route(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> FastAPI:
    services = Services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        if services.demo_key is not None:
            sys.stdout.write(quickstart_text(settings, services.demo_key))
            sys.stdout.flush()
        # What exists now (modules, app, store) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it. Measured under 3,000
        # mints/s: a full collection about every second, each stopping every session for
        # 50-70 ms (~7% of the CPU in GC); frozen, 2-5 ms each. Unfrozen at shutdown, so
        # that a process that runs several apps in turn (the tests) can collect the ones that
        # ended.
        gc.freeze()
        try:
            yield
        finally:
            await services.stop()
            gc.unfreeze()

    app = GatewayApp(
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
    app.fast_routes = mint_routes(services)
    return app
