"""From an admitted upgrade to a finished, accounted session."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.errors import GatewayError
from gateway.metrics import close_code_label
from gateway.protocol.core import SessionCore
from gateway.protocol.policy import SessionPolicy
from gateway.relay.accounting import SessionAccounting
from gateway.relay.admission import Admission
from gateway.relay.session import Limits, RelaySession, SessionEnd
from gateway.relay.transport import Closed, QueuedPeer
from gateway.store.sessions import SessionRecord

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.session")


def _policy(adm: Admission) -> SessionPolicy:
    tenant_policy = adm.tenant.policy
    allowed = tenant_policy.allowed_client_events
    return SessionPolicy.from_bound_session(
        {k: v for k, v in adm.bound_session.items() if k not in ("type", "model")},
        lock_mode=tenant_policy.locked_fields_mode,
        allowed_client_events=frozenset(allowed) if allowed is not None else None,
        allow_system_items=tenant_policy.allow_system_items,
    )


async def run_session(svc: Services, adm: Admission, client: QueuedPeer) -> SessionEnd:
    tenant = adm.tenant
    metrics = svc.metrics
    tenant_label = metrics.tenant(tenant.id)
    core = SessionCore(
        client_protocol=adm.client_protocol,
        upstream_protocol=adm.target.protocol,
        policy=_policy(adm),
        event_ids=svc.event_id,
        rate_limits_passthrough=tenant.policy.rate_limits_passthrough,
    )
    core.model = adm.model
    accounting = SessionAccounting(svc, adm)
    accounting.counters = core.counters
    client_side, upstream_side = client, adm.upstream
    relay = RelaySession(
        session_id=adm.session_id,
        client=client_side,
        upstream=upstream_side,
        core=core,
        hooks=accounting,
        limits=Limits(tenant.limits.max_session_seconds, tenant.limits.idle_timeout_seconds),
    )
    context = {
        "session_id": adm.session_id,
        "tenant": tenant.id,
        "replica": svc.settings.replica_id,
        "upstream": adm.target.upstream.name,
        "credential": adm.target.credential.name,
        "model": adm.model,
        "client_protocol": adm.client_protocol,
    }
    started_at = time.time()
    svc.sessions.add(
        adm.session_id,
        tenant.id,
        relay,
        (client_side, upstream_side),
        limit=tenant.limits.max_concurrent_sessions,
    )
    metrics.live_sessions.labels(tenant_label).inc()
    live = True
    metrics.sessions_started.labels(tenant_label).inc()
    if adm.token is not None:
        metrics.tokens_redeemed.labels(tenant_label).inc()
    try:
        opening = core.upstream_frame(adm.session_created, time.monotonic())
        try:
            if opening.forward is not None:
                await client.send(opening.forward)
            for extra in opening.to_client:
                await client.send(extra)
        except Closed:
            pass
        except Exception as exc:
            # The client left between the upgrade and its first event, and the peer reported
            # it as something other than Closed (Starlette's WebSocketDisconnect). The relay
            # sees the disconnect on its first receive and ends the session as client_closed;
            # letting this propagate would skip the session's end record and metrics.
            log.info(
                "client gone before the session opened",
                extra={**context, "error": type(exc).__name__},
            )
        accounting.open_charge()  # after the send as well: booking it is not part of opening
        # Written once the client has its session.created: nothing needs the record earlier,
        # and before it, its Redis call cost each open about half a millisecond on a busy
        # replica. It follows the send in the same step (no other task runs in between), so
        # it reaches Redis before a client that read session.created can ask an admin list.
        await _record_start(svc, adm, started_at, context)
        log.info("session started", extra=context)
        end = await relay.run()
        metrics.live_sessions.labels(tenant_label).dec()
        live = False
        # Still listed while its usage is booked: a drain waits for this, so nothing is lost.
        await _finish(svc, adm, core, accounting, end, started_at)
    finally:
        svc.sessions.remove(adm.session_id)
        if live:
            metrics.live_sessions.labels(tenant_label).dec()
    log.info(
        "session ended",
        extra={
            **context,
            "reason": end.reason,
            "close_code": end.client_close_code,
            "upstream_close_code": end.upstream_close_code,
            "duration_s": round(time.time() - started_at, 3),
            "cost_usd": round(accounting.cost_micros / 1e6, 6),
            "total_tokens": core.usage_total.total_tokens,
        },
    )
    return end


async def _record_start(
    svc: Services, adm: Admission, started_at: float, context: dict[str, str]
) -> None:
    try:
        await svc.store.sessions.start(
            SessionRecord(
                session_id=adm.session_id,
                tenant_id=adm.tenant.id,
                replica_id=svc.settings.replica_id,
                upstream=adm.target.upstream.name,
                credential=adm.target.credential.name,
                model=adm.model,
                client_protocol=adm.client_protocol,
                upstream_protocol=adm.target.protocol,
                started_at=started_at,
            )
        )
    except GatewayError:
        # The session goes on (its lease is held); it is missing from the admin lists until
        # Redis answers and the end is recorded.
        svc.metrics.redis_errors.labels("session_start").inc()
        log.warning("could not record the session start", extra=context)


async def _finish(
    svc: Services,
    adm: Admission,
    core: SessionCore,
    accounting: SessionAccounting,
    end: SessionEnd,
    started_at: float,
) -> None:
    metrics = svc.metrics
    tenant_label = metrics.tenant(adm.tenant.id)
    metrics.sessions_ended.labels(
        tenant_label, end.reason, close_code_label(end.client_close_code)
    ).inc()
    metrics.session_duration.observe(time.time() - started_at)
    accounting.report_refused()
    if end.reason == "upstream_lost":
        metrics.upstream_errors.labels(adm.target.upstream.name, "lost").inc()
    await accounting.settle()
    counters = core.counters
    changes = {
        "client_close_code": end.client_close_code,
        "upstream_close_code": end.upstream_close_code,
        "close_reason": end.reason,
        "client_to_upstream_events": counters.client_events,
        "upstream_to_client_events": counters.upstream_events,
        "client_to_upstream_bytes": counters.client_bytes,
        "upstream_to_client_bytes": counters.upstream_bytes,
        "audio_in_seconds": round(core.audio_in_total, 3),
        "audio_out_seconds": round(core.audio_out_total, 3),
        "cost_micros": accounting.cost_micros,
        "usage": {k: v for k, v in core.usage_total.as_dict().items() if v},
    }
    try:
        await svc.store.sessions.end(adm.tenant.id, adm.session_id, changes)
    except GatewayError:
        metrics.redis_errors.labels("session_end").inc()
        # The lease then expires with the heartbeat ttl: the slot is freed either way.
        log.warning("could not record the session end", extra={"session_id": adm.session_id})
