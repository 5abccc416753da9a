"""``/healthz`` (the process answers), ``/readyz`` (it can take sessions), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.deps import services
from gateway.errors import GatewayError

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        await svc.store.ping()
        checks["redis"] = "ok"
    except GatewayError as err:
        checks["redis"] = err.code
    checks["upstream"] = "ok" if svc.upstreams.configured else "none"
    checks["draining"] = "yes" if svc.draining else "no"
    ready = checks["redis"] == "ok" and checks["upstream"] == "ok" and not svc.draining
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    svc = services(request)
    svc.refresh_gauges()
    body, content_type = svc.metrics.exposition()
    return Response(body, media_type=content_type)
