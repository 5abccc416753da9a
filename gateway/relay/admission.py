"""Admission of one WebSocket upgrade, before anything is accepted.

Every refusal here becomes an HTTP answer to the upgrade (401/403/429/503 with a JSON body), never
an accept-then-close. The order is chosen so that nothing is kept from a client that is refused:
the token is peeked (not used) while the tenant, origin and model are checked; the concurrency
lease and the token's use are then taken together, atomically, while the budget and the upstream
choice are read; a refusal by either of those gives both back, and so does an upstream that
fails, so the client can retry with the same token.

Opening a session is latency the client waits for, and on a busy replica each Redis call costs
about as much in CPU as in waiting, so the path makes as few calls, and as few serial round
trips, as the dependencies allow: the peek (the token names the tenant), then lease + redeem
(one script) alongside the budget and the choice, then the upstream handshake. The session
record is written by the lifecycle once the client has its session.created (nothing needs it
earlier). Three calls (four without the budget cache) in two round trips, where it took six
calls, one after the other, before the client saw session.created.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import orjson

from gateway.errors import (
    Draining,
    GatewayError,
    InvalidRequest,
    InvalidValue,
    MissingParameter,
    ModelNotAllowed,
    OriginNotAllowed,
    RateLimited,
    TenantDisabled,
    Unauthenticated,
    UpstreamUnavailable,
)
from gateway.protocol import shapes
from gateway.protocol.handshake import Handshake, origin_allowed
from gateway.relay.picows_peer import PicowsPeer
from gateway.relay.transport import Closed
from gateway.relay.upstream import UpstreamTarget, open_upstream
from gateway.store.hashing import new_id
from gateway.store.sessions import LeaseGrant
from gateway.store.tenants import TenantRecord
from gateway.store.tokens import TokenRecord

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.admission")

# An open upstream session: the peer, its session.created, and the seconds opening it took.
Opened: TypeAlias = tuple[PicowsPeer, bytes, float]

# Session fields that cannot be set by session.update (they are chosen by the URL).
_NOT_UPDATABLE = ("model", "object", "id", "expires_at")


@dataclasses.dataclass(slots=True)
class Admission:
    session_id: str
    tenant: TenantRecord
    token: TokenRecord | None
    model: str
    client_protocol: Literal["ga", "beta"]
    target: UpstreamTarget
    upstream: PicowsPeer
    session_created: bytes  # the upstream's session.created, showing the bound configuration
    bound_session: dict[str, Any]
    connect_seconds: float


def resolve_model(bound: Mapping[str, Any], requested: str | None) -> str:
    bound_model = bound.get("model")
    if isinstance(bound_model, str) and bound_model:
        if requested and requested != bound_model:
            raise InvalidValue(
                f"The model '{requested}' does not match the client secret's model "
                f"'{bound_model}'.",
                param="model",
            )
        return bound_model
    if not requested:
        raise MissingParameter("Missing required parameter: 'model'.", param="model")
    return requested


async def admit(svc: Services, hs: Handshake) -> Admission:
    if svc.draining:
        raise Draining("This gateway replica is shutting down. Reconnect to open a new session.")
    if hs.credential is None:
        raise Unauthenticated(
            "You didn't provide an API key or client secret. Send it as 'Authorization: Bearer "
            "<key>' or in the 'openai-insecure-api-key.<key>' subprotocol."
        )
    token: TokenRecord | None = None
    if hs.is_client_secret:
        token = await svc.store.tokens.peek(hs.credential)
        tenant = await svc.store.tenants.get(token.tenant_id)
        if tenant.disabled:
            raise TenantDisabled("This tenant is disabled.")
    else:
        tenant = await svc.store.tenants.authenticate(hs.credential)
    allowed = (token.allowed_origins if token else None) or tenant.policy.allowed_origins
    if not origin_allowed(hs.origin, allowed):
        raise OriginNotAllowed("This origin is not allowed to open sessions for this tenant.")
    bound = dict(token.session_config) if token else {}
    model = resolve_model(bound, hs.model)
    models = tenant.models or svc.settings.default_models
    if models and model not in models:
        raise ModelNotAllowed(f"The model '{model}' is not allowed for this tenant.", param="model")
    client_protocol: Literal["ga", "beta"] = (
        "beta" if hs.beta_requested or (token is not None and token.protocol == "beta") else "ga"
    )
    session_id = new_id("sess_")
    secret = hs.credential if token is not None else None
    target = await _reserve(svc, tenant, model, session_id, secret)
    try:
        upstream, created, connect_seconds = await _connect(svc, target, model, bound)
    except BaseException:
        # The slot is freed and the use given back, so the client can retry with the token.
        await _give_back(svc, tenant.id, session_id, secret)
        raise
    svc.metrics.upstream_connect.labels(target.upstream.name).observe(connect_seconds)
    svc.metrics.upstream_sessions.labels(target.upstream.name, target.credential.name).inc()
    return Admission(
        session_id=session_id,
        tenant=tenant,
        token=token,
        model=model,
        client_protocol=client_protocol,
        target=target,
        upstream=upstream,
        session_created=created,
        bound_session=bound,
        connect_seconds=connect_seconds,
    )


async def _reserve(
    svc: Services, tenant: TenantRecord, model: str, session_id: str, secret: str | None
) -> UpstreamTarget:
    """Budget, upstream choice, concurrency lease and token redeem, in one round trip.

    The lease and the redeem are one atomic script (both or neither); the budget and the
    choice are independent reads, so the three run together, and a budget or upstream refusal
    gives the lease and the use back before it is answered. So a client refused for those
    holds a slot for one round trip at most, while its own tenant is being refused (the limit
    is never exceeded), and its single-use token reads as used for that long. The refusals
    keep their order: budget, then upstream, then concurrency or the token.
    """
    svc.upstreams.candidates(model)  # "no upstream for this model" takes nothing at all
    limit = tenant.limits.max_concurrent_sessions
    # The heartbeat renews only running sessions: this lease must outlive the upstream
    # handshake (up to the connect timeout), or a slow upstream lets it lapse mid-admission.
    hold_s = svc.settings.heartbeat_ttl_seconds + svc.settings.upstream_connect_timeout_seconds
    if secret is not None:
        taking = svc.store.tokens.redeem_with_lease(secret, tenant.id, session_id, limit, hold_s)
    else:
        taking = svc.store.sessions.acquire_lease(tenant.id, session_id, limit, ttl_s=hold_s)
    try:
        refusal, target, lease = await asyncio.gather(
            svc.quota_refusal(tenant), svc.upstreams.choose(model), taking, return_exceptions=True
        )
    except asyncio.CancelledError:
        # Whether the lease was taken is unknown: drop it (harmless if it was not). The use
        # is not given back blindly: that could add a use to a token redeemed elsewhere.
        with contextlib.suppress(GatewayError):
            await svc.store.sessions.release_lease(tenant.id, session_id)
        raise
    # quota_refusal returns its refusal (a RateLimited) rather than raising it.
    refused = isinstance(refusal, BaseException) or isinstance(target, BaseException)
    if refused and isinstance(lease, LeaseGrant) and lease.granted:
        await _give_back(svc, tenant.id, session_id, secret)
    for outcome in (refusal, target, lease):
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(target, UpstreamTarget)
    assert isinstance(lease, LeaseGrant)
    if not lease.granted:
        svc.metrics.quota_refusals.labels(svc.metrics.tenant(tenant.id), "sessions").inc()
        raise RateLimited(
            f"Too many concurrent sessions for this tenant (limit {limit}).", retry_after=1
        )
    return target


async def _give_back(svc: Services, tenant_id: str, session_id: str, secret: str | None) -> None:
    """Undo the lease (and the redeem) of a session that is refused or failed after all."""
    with contextlib.suppress(GatewayError):
        await svc.store.sessions.release_lease(tenant_id, session_id)
    if secret is not None:
        with contextlib.suppress(GatewayError):
            await svc.store.tokens.refund(secret)


async def _connect(
    svc: Services, target: UpstreamTarget, model: str, bound: Mapping[str, Any]
) -> Opened:
    """The upstream session within the connect timeout, its session.created, and how long
    opening it took; failures are counted per upstream."""
    started = time.monotonic()
    try:
        # asyncio.timeout, not wait_for: in Python 3.11 wait_for runs the coroutine as a task
        # of its own, one more turn of a busy loop before the session can open.
        async with asyncio.timeout(svc.settings.upstream_connect_timeout_seconds):
            upstream, created = await _open_session(svc, target, model, bound)
    except TimeoutError:
        svc.metrics.upstream_errors.labels(target.upstream.name, "connect_timeout").inc()
        raise UpstreamUnavailable(
            f"The upstream '{target.upstream.name}' did not answer in time."
        ) from None
    except GatewayError as exc:
        svc.metrics.upstream_errors.labels(target.upstream.name, exc.code).inc()
        raise
    return upstream, created, time.monotonic() - started


async def _open_session(
    svc: Services, target: UpstreamTarget, model: str, bound: Mapping[str, Any]
) -> tuple[PicowsPeer, bytes]:
    """Connect, read session.created, apply the bound configuration, and return the
    ``session.created`` the client should see (the upstream's, showing the bound config)."""
    ws = await open_upstream(
        target,
        model,
        timeout=svc.settings.upstream_connect_timeout_seconds,
        max_frame_bytes=svc.settings.max_frame_bytes,
    )
    try:
        created_raw = await _expect(ws, ("session.created", "transcription_session.created"))
        update = {k: v for k, v in bound.items() if k not in _NOT_UPDATABLE}
        if len(update) <= 1 and set(update) <= {"type"}:
            return ws, created_raw
        if target.protocol == "beta":
            beta_session = shapes.session_to_beta(update)
            beta_session.pop("type", None)
            event = {"type": "session.update", "session": beta_session}
        else:
            event = {"type": "session.update", "session": update}
        event["event_id"] = "gw_bind_" + new_id("", 6)
        await ws.send(orjson.dumps(event))
        updated_raw = await _expect(ws, ("session.updated", "transcription_session.updated"))
        created = orjson.loads(created_raw)
        created["session"] = orjson.loads(updated_raw).get("session", created.get("session"))
        return ws, orjson.dumps(created)
    except BaseException:
        with contextlib.suppress(Exception):
            await ws.close(1000, "gateway could not set up the session")
        raise


async def _expect(ws: PicowsPeer, types: tuple[str, ...]) -> bytes:
    """The next frame, which must be one of ``types``; an upstream error event is reported."""
    try:
        data = await ws.receive()
    except Closed as closed:
        detail = "" if closed.code == 1006 else f" (close code {closed.code}: {closed.reason})"
        raise UpstreamUnavailable(
            f"The upstream closed the session while opening it{detail}."
        ) from None
    if not isinstance(data, bytes):  # a binary frame (no fast path runs while opening)
        raise UpstreamUnavailable("The upstream sent a binary frame while opening.")
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("The upstream sent an unreadable frame while opening.") from None
    kind = event.get("type") if isinstance(event, dict) else None
    if kind in types:
        return data
    if kind == "error":
        err = event.get("error") or {}
        message = err.get("message") if isinstance(err, dict) else None
        raise InvalidRequest(
            f"The upstream refused the session configuration: {message or 'unknown error'}",
            param=err.get("param") if isinstance(err, dict) else None,
        )
    raise UpstreamUnavailable(f"The upstream sent '{kind}' while opening the session.")
