"""A tenant's own view: ``GET /v1/usage``, ``GET /v1/sessions``, ``DELETE /v1/sessions/{id}``."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import services, tenant_of
from gateway.api.views import day_range, session_view, usage_view
from gateway.errors import NotFound

router = APIRouter()


@router.get("/v1/usage")
async def usage(request: Request, start: str | None = None, end: str | None = None) -> JSONResponse:
    tenant = await tenant_of(request)
    svc = services(request)
    from_day, to_day = day_range(start, end, dt.datetime.now(dt.UTC).date())
    days = await svc.store.ledger.read(tenant.id, from_day, to_day)
    return JSONResponse(usage_view(tenant.id, days))


@router.get("/v1/sessions")
async def list_sessions(request: Request) -> JSONResponse:
    tenant = await tenant_of(request)
    records = await services(request).store.sessions.list_live(tenant.id)
    return JSONResponse({"object": "list", "data": [session_view(r) for r in records]})


@router.delete("/v1/sessions/{session_id}")
async def end_session(request: Request, session_id: str) -> JSONResponse:
    tenant = await tenant_of(request)
    svc = services(request)
    record = await svc.store.sessions.find(session_id)
    # Another tenant's session is answered exactly like a missing one: no existence leak.
    if record is None or record.tenant_id != tenant.id or record.ended_at is not None:
        raise NotFound(f"No live session '{session_id}'.", param="session_id")
    await svc.end_session(tenant.id, session_id, "ended by the tenant")
    return JSONResponse({"object": "realtime.gateway_session", "id": session_id, "ending": True})
