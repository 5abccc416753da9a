"""Minting client secrets: GA ``/v1/realtime/client_secrets`` and beta ``/v1/realtime/sessions``.

The work is done by ``Minter``, which knows no web framework: a tenant and the raw request body
in, the answer's JSON bytes out, refusals raised as ``GatewayError``. Two thin adapters call
it: the bare ASGI endpoint of ``mint_route`` (what serves the two routes; see there why) and
the FastAPI routes below, kept so that the OpenAPI schema lists them and the router still
answers other methods with 405.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

import orjson
from fastapi import APIRouter, Request, Response

from gateway.api.deps import services, tenant_of
from gateway.errors import InvalidRequest
from gateway.protocol.minting import (
    MintPolicy,
    beta_answer,
    ga_answer,
    parse_beta_request,
    parse_ga_request,
)
from gateway.store.hashing import new_id
from gateway.store.tenants import TenantRecord
from gateway.store.tokens import Protocol

if TYPE_CHECKING:
    from gateway.services import Services

# Route path -> the request and answer shapes it speaks.
PATHS: Final[dict[str, Protocol]] = {
    "/v1/realtime/client_secrets": "ga",
    "/v1/realtime/sessions": "beta",
}

MAX_BODY_BYTES = 256 * 1024

router = APIRouter()


def body_too_large() -> InvalidRequest:
    return InvalidRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.")


def parse_body(raw: bytes) -> object:
    if len(raw) > MAX_BODY_BYTES:
        raise body_too_large()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg}."
        ) from None


def dump_json(answer: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(answer)
    except orjson.JSONEncodeError:
        # orjson refuses nesting deeper than 254 levels, which a bound session (tools,
        # prompt variables) may have: the standard library has no such limit.
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


class Minter:
    """Both mint endpoints, whatever serves HTTP: validate, store the hashed token, answer."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc
        # The policy of the tenant minted for last: the tenant cache hands out the same record
        # object for a second, so a busy tenant's policy is built once, not per mint.
        self._last: tuple[TenantRecord, MintPolicy] | None = None

    async def mint(self, tenant: TenantRecord, protocol: Protocol, raw: bytes) -> bytes:
        """The answer body for ``raw`` (the request body) minted for ``tenant``."""
        body = parse_body(raw)
        policy = self._policy(tenant)
        mint = (
            parse_ga_request(body, policy) if protocol == "ga" else parse_beta_request(body, policy)
        )
        svc = self._svc
        secret, expires_at = await svc.store.tokens.mint(
            tenant.id,
            mint.session,
            protocol=mint.protocol,
            ttl_s=mint.ttl_seconds,
            max_uses=mint.max_uses,
            allowed_origins=mint.allowed_origins,
        )
        svc.metrics.tokens_minted.labels(svc.metrics.tenant(tenant.id)).inc()
        render = ga_answer if protocol == "ga" else beta_answer
        return dump_json(render(secret, int(expires_at), mint.session, new_id("sess_")))

    def _policy(self, tenant: TenantRecord) -> MintPolicy:
        settings = self._svc.settings
        return MintPolicy(
            models=tenant.models or settings.default_models,
            default_ttl=min(
                settings.token_default_ttl_seconds, tenant.limits.max_token_ttl_seconds
            ),
            max_ttl=tenant.limits.max_token_ttl_seconds,
            default_max_uses=settings.token_default_max_uses,
        )


async def _answer(request: Request, protocol: Protocol) -> Response:
    tenant = await tenant_of(request)
    raw = await request.body()
    answer = await Minter(services(request)).mint(tenant, protocol, raw)
    return Response(answer, media_type="application/json")


@router.post("/v1/realtime/client_secrets")
async def create_client_secret(request: Request) -> Response:
    return await _answer(request, "ga")


@router.post("/v1/realtime/sessions")
async def create_beta_session(request: Request) -> Response:
    return await _answer(request, "beta")
