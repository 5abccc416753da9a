"""Minting client secrets: GA ``/v1/realtime/client_secrets`` and beta ``/v1/realtime/sessions``."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import services, tenant_of
from gateway.errors import InvalidRequest
from gateway.protocol.minting import (
    MintPolicy,
    MintRequest,
    beta_answer,
    ga_answer,
    parse_beta_request,
    parse_ga_request,
)
from gateway.store.hashing import new_id
from gateway.store.tenants import TenantRecord

router = APIRouter()

MAX_BODY_BYTES = 256 * 1024


async def _body(request: Request) -> object:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg}."
        ) from None


def _policy(request: Request, tenant: TenantRecord) -> MintPolicy:
    settings = services(request).settings
    return MintPolicy(
        models=tenant.models or settings.default_models,
        default_ttl=min(settings.token_default_ttl_seconds, tenant.limits.max_token_ttl_seconds),
        max_ttl=tenant.limits.max_token_ttl_seconds,
        default_max_uses=settings.token_default_max_uses,
    )


async def _mint(request: Request, tenant: TenantRecord, mint: MintRequest) -> tuple[str, int]:
    svc = services(request)
    secret, expires_at = await svc.store.tokens.mint(
        tenant.id,
        mint.session,
        protocol=mint.protocol,
        ttl_s=mint.ttl_seconds,
        max_uses=mint.max_uses,
        allowed_origins=mint.allowed_origins,
    )
    svc.metrics.tokens_minted.labels(svc.metrics.tenant(tenant.id)).inc()
    return secret, int(expires_at)


@router.post("/v1/realtime/client_secrets")
async def create_client_secret(request: Request) -> JSONResponse:
    tenant = await tenant_of(request)
    mint = parse_ga_request(await _body(request), _policy(request, tenant))
    secret, expires_at = await _mint(request, tenant, mint)
    return JSONResponse(ga_answer(secret, expires_at, mint.session, new_id("sess_")))


@router.post("/v1/realtime/sessions")
async def create_beta_session(request: Request) -> JSONResponse:
    tenant = await tenant_of(request)
    mint = parse_beta_request(await _body(request), _policy(request, tenant))
    secret, expires_at = await _mint(request, tenant, mint)
    return JSONResponse(beta_answer(secret, expires_at, mint.session, new_id("sess_")))
