"""The operator's API under ``/admin`` (admin key): tenants, sessions and usage of all tenants."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import require_admin, services
from gateway.api.views import day_range, session_view, tenant_view, usage_view
from gateway.config import TenantLimits
from gateway.errors import NotFound
from gateway.store.tenants import TenantPolicy

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = Field(default="", max_length=200)
    models: list[str] | None = None
    limits: TenantLimits | None = None
    policy: TenantPolicy | None = None


class TenantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    models: list[str] | None = None
    limits: TenantLimits | None = None
    policy: TenantPolicy | None = None


@router.post("/tenants", status_code=201)
async def create_tenant(request: Request, body: TenantCreate) -> JSONResponse:
    record, key = await services(request).store.tenants.create(
        body.name, tenant_id=body.id, models=body.models, limits=body.limits, policy=body.policy
    )
    # The key is shown once, here, and never again.
    return JSONResponse({**tenant_view(record), "api_key": key}, 201)


@router.get("/tenants")
async def list_tenants(request: Request) -> JSONResponse:
    records = await services(request).store.tenants.list_tenants()
    return JSONResponse({"object": "list", "data": [tenant_view(r) for r in records]})


@router.get("/tenants/{tenant_id}")
async def get_tenant(request: Request, tenant_id: str) -> JSONResponse:
    return JSONResponse(tenant_view(await services(request).store.tenants.get(tenant_id)))


@router.patch("/tenants/{tenant_id}")
async def patch_tenant(request: Request, tenant_id: str, body: TenantPatch) -> JSONResponse:
    changes: dict[str, Any] = body.model_dump(exclude_none=True, exclude_unset=True)
    svc = services(request)
    record = await svc.store.tenants.update(
        tenant_id,
        name=body.name if "name" in changes else None,
        models=body.models if "models" in changes else None,
        limits=body.limits if "limits" in changes else None,
        policy=body.policy if "policy" in changes else None,
    )
    await svc.tenant_changed(tenant_id)
    return JSONResponse(tenant_view(record))


@router.post("/tenants/{tenant_id}/disable")
async def disable_tenant(request: Request, tenant_id: str) -> JSONResponse:
    svc = services(request)
    record = await svc.store.tenants.disable(tenant_id)
    await svc.tenant_changed(tenant_id)
    await svc.end_tenant_sessions(tenant_id, "tenant disabled")
    return JSONResponse(tenant_view(record))


@router.post("/tenants/{tenant_id}/enable")
async def enable_tenant(request: Request, tenant_id: str) -> JSONResponse:
    svc = services(request)
    record = await svc.store.tenants.enable(tenant_id)
    await svc.tenant_changed(tenant_id)
    return JSONResponse(tenant_view(record))


@router.post("/tenants/{tenant_id}/rotate-key")
async def rotate_key(request: Request, tenant_id: str) -> JSONResponse:
    svc = services(request)
    key = await svc.store.tenants.rotate_key(tenant_id)
    await svc.tenant_changed(tenant_id)
    return JSONResponse({"object": "tenant.key", "tenant_id": tenant_id, "api_key": key})


@router.get("/sessions")
async def list_sessions(request: Request, tenant: str | None = None) -> JSONResponse:
    records = await services(request).store.sessions.list_live(tenant)
    return JSONResponse({"object": "list", "data": [session_view(r) for r in records]})


@router.get("/sessions/{session_id}")
async def get_session(request: Request, session_id: str) -> JSONResponse:
    record = await services(request).store.sessions.find(session_id)
    if record is None:
        raise NotFound(f"No session '{session_id}'.", param="session_id")
    return JSONResponse(session_view(record))


@router.delete("/sessions/{session_id}")
async def end_session(request: Request, session_id: str) -> JSONResponse:
    svc = services(request)
    record = await svc.store.sessions.find(session_id)
    if record is None or record.ended_at is not None:
        raise NotFound(f"No live session '{session_id}'.", param="session_id")
    await svc.end_session(record.tenant_id, session_id, "ended by an administrator")
    return JSONResponse({"object": "realtime.gateway_session", "id": session_id, "ending": True})


@router.delete("/tenants/{tenant_id}/sessions")
async def end_tenant_sessions(request: Request, tenant_id: str) -> JSONResponse:
    svc = services(request)
    await svc.store.tenants.get(tenant_id)
    await svc.end_tenant_sessions(tenant_id, "ended by an administrator")
    return JSONResponse({"object": "tenant.sessions", "tenant_id": tenant_id, "ending": True})


@router.get("/usage")
async def usage(
    request: Request, tenant: str | None = None, start: str | None = None, end: str | None = None
) -> JSONResponse:
    svc = services(request)
    from_day, to_day = day_range(start, end, dt.datetime.now(dt.UTC).date())
    tenant_ids = [tenant] if tenant else [t.id for t in await svc.store.tenants.list_tenants()]
    data = [usage_view(t, await svc.store.ledger.read(t, from_day, to_day)) for t in tenant_ids]
    return JSONResponse({"object": "list", "data": data})
