"""Everything one gateway process holds, wired once by the app's lifespan.

Background work owned here: the replica heartbeat (which renews this replica's session leases),
the control subscriber (admin ends from any replica arrive over Redis pub/sub), the charge
buffer's flusher, and, when no upstream is configured, the built-in simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.config import Credential, QuotaFailMode, Settings, UpstreamConfig, UpstreamKind
from gateway.errors import (
    Draining,
    GatewayError,
    RateLimited,
    SessionSlotLost,
    SessionTerminated,
)
from gateway.metrics import Metrics
from gateway.relay.accounting import record_budget
from gateway.relay.registry import LiveSessions
from gateway.relay.upstreams import UpstreamPool
from gateway.store import ChargeBuffer, ControlCommand, Store, TenantRecord, open_store
from gateway.store.ratelimits import LatestFigures
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.services")

DRAIN_RESERVE_S = 3.0


class Services:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        # Wall clock for budgets, ledger days and rate-limit resets; tests inject their own so
        # that a quota window can roll over without sleeping.
        self.clock = clock
        self.metrics = Metrics(settings.metrics_tenant_label_cap)
        self.sessions = LiveSessions()
        self.draining = False
        self.demo_key: str | None = None
        self._store: Store | None = None
        self._upstreams: UpstreamPool | None = None
        self._figures: LatestFigures | None = None
        self._sim: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[Any]] = set()

    # ---- wiring -----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        assert self._store is not None, "services not started"
        return self._store

    @property
    def charges(self) -> ChargeBuffer:
        return self.store.charges

    @property
    def rate_limit_figures(self) -> LatestFigures:
        assert self._figures is not None, "services not started"
        return self._figures

    @property
    def upstreams(self) -> UpstreamPool:
        assert self._upstreams is not None, "services not started"
        return self._upstreams

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``work`` as a task this process owns (kept referenced, stopped at shutdown)."""
        task = asyncio.create_task(work, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def event_id(self) -> str:
        return "event_" + secrets.token_urlsafe(15)

    async def start(self) -> None:
        self._store = await open_store(self.settings, clock=self.clock)
        upstreams = list(self.settings.upstreams)
        if not upstreams:
            upstreams = [await self._start_builtin_simulator()]
        self._upstreams = UpstreamPool(
            upstreams,
            self.store.ratelimits,
            floor_fraction=self.settings.upstream_tokens_floor_fraction,
            clock=self.clock,
        )
        self._figures = LatestFigures(
            self.store.ratelimits,
            interval=self.settings.rate_limits_write_seconds,
            clock=self.clock,
            on_error=lambda: self.metrics.redis_errors.labels("ratelimits_record").inc(),
        )
        for tenant in self.settings.tenants:
            await self.store.tenants.ensure_bootstrap(tenant)
        if self.settings.demo:
            self.demo_key = await self._demo_tenant()
        self.store.charges.start()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._control(), name="control"),
        ]

    async def stop(self) -> None:
        # After a drain the time left is short (the drain used the budget the orchestrator
        # gives before it kills the process): do not wait as long again.
        wait_s, flush_s = (0.5, 1.0) if self.draining else (3.0, 5.0)
        if self.sessions:
            self.sessions.end_all(Draining("This gateway replica is stopping. Reconnect."))
            await self.sessions.wait_empty(wait_s)
        await stop_tasks([*self._tasks, *self._spawned])
        if self._figures is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._figures.flush(), flush_s)
        if self._store is not None:
            with contextlib.suppress(GatewayError):
                await self._store.sessions.remove_replica(self.settings.replica_id)
            await self._store.close(flush_within_s=flush_s)
        if self._sim is not None:
            await self._sim.__aexit__(None, None, None)

    async def _start_builtin_simulator(self) -> UpstreamConfig:
        from gateway.sim import SimConfig, SimServer

        key = "sk-sim-" + secrets.token_urlsafe(24)
        sim = SimServer(
            SimConfig(
                api_keys=(key,), speed=self.settings.sim_speed,
                refuse_beta=self.settings.sim_refuse_beta,
            )
        )  # fmt: skip
        # The embedded server's uvicorn config sets the process-wide uvicorn loggers to
        # WARNING, which would silence this gateway's own server logs: put them back.
        uvicorn_loggers = [logging.getLogger(f"uvicorn.{n}") for n in ("error", "access", "asgi")]
        levels = [logger.level for logger in uvicorn_loggers]
        try:
            await sim.__aenter__()
        finally:
            for logger, level in zip(uvicorn_loggers, levels, strict=True):
                logger.setLevel(level)
        self._sim = sim
        log.warning(
            "no upstream configured: serving sessions from the built-in simulator at %s "
            "(set GATEWAY_UPSTREAM_URL and GATEWAY_UPSTREAM_API_KEY for a real one)",
            sim.ws_url,
        )
        from pydantic import SecretStr

        return UpstreamConfig(
            name="simulator",
            kind=UpstreamKind.SIM,
            url=sim.ws_url,
            credentials=[Credential(name="builtin", api_key=SecretStr(key))],
        )

    async def _demo_tenant(self) -> str:
        try:
            await self.store.tenants.get("demo")
        except GatewayError:
            _, key = await self.store.tenants.create("Demo tenant", tenant_id="demo")
            return key
        return await self.store.tenants.rotate_key("demo")

    # ---- admission helpers --------------------------------------------------------------

    async def quota_refusal(self, tenant: TenantRecord) -> RateLimited | None:
        try:
            status = await self.store.quota.check(tenant.id, tenant.limits)
        except GatewayError:
            self.metrics.redis_errors.labels("quota_check").inc()
            if self.settings.quota_fail_mode is QuotaFailMode.CLOSED:
                raise
            return None
        record_budget(self.metrics, self.metrics.tenant(tenant.id), status)
        if status.allowed:
            return None
        exhausted = [i.name for i in status.items if i.exhausted]
        for name in exhausted:
            self.metrics.quota_refusals.labels(self.metrics.tenant(tenant.id), name).inc()
        return RateLimited(
            f"This tenant is over its budget ({', '.join(exhausted)}).",
            retry_after=status.retry_after_s or 1.0,
        )

    # ---- ending sessions from anywhere --------------------------------------------------

    async def end_session(self, tenant_id: str, session_id: str, reason: str) -> int:
        """End a session wherever it lives: here directly, elsewhere through pub/sub.

        Returns the number of replicas the request reached (1 when the session is here).
        """
        if self.sessions.end(session_id, SessionTerminated(f"The session was {reason}.")):
            log.info(
                "session end requested",
                extra={"session_id": session_id, "tenant": tenant_id, "reason": reason},
            )
            return 1
        reached = await self.store.control.publish_end_session(tenant_id, session_id, reason)
        log.info(
            "session end published",
            extra={
                "session_id": session_id, "tenant": tenant_id, "reason": reason,
                "replicas_reached": reached,
            },
        )  # fmt: skip
        return reached

    async def end_tenant_sessions(self, tenant_id: str, reason: str) -> int:
        """End every session of a tenant on every replica; returns the replicas reached."""
        self.sessions.end_tenant(tenant_id, SessionTerminated(f"The session was {reason}."))
        reached = await self.store.control.publish_end_tenant(tenant_id, reason)
        log.info(
            "tenant sessions end published",
            extra={"tenant": tenant_id, "reason": reason, "replicas_reached": reached},
        )
        return reached

    async def tenant_changed(self, tenant_id: str) -> None:
        """A tenant's record changed here: forget it locally and tell the other replicas."""
        self.store.tenants.invalidate(tenant_id)
        await self.store.control.publish_tenant_changed(tenant_id)

    def _on_command(self, command: ControlCommand) -> None:
        if command.action in ("tenant_changed", "end_tenant"):
            self.store.tenants.invalidate(command.tenant_id)
            if command.action == "tenant_changed":
                return
        error = SessionTerminated(f"The session was {command.reason or 'ended'}.")
        if command.action == "end_session" and command.session_id:
            if self.sessions.end(command.session_id, error):
                log.info(
                    "session end requested",
                    extra={
                        "session_id": command.session_id, "tenant": command.tenant_id,
                        "reason": command.reason, "via": "control",
                    },
                )  # fmt: skip
        elif command.action == "end_tenant":
            ended = self.sessions.end_tenant(command.tenant_id, error)
            if ended:
                log.info(
                    "tenant sessions end requested",
                    extra={
                        "tenant": command.tenant_id, "reason": command.reason,
                        "sessions": ended, "via": "control",
                    },
                )  # fmt: skip

    # ---- background loops ---------------------------------------------------------------

    async def _heartbeat(self) -> None:
        sessions = self.store.sessions
        interval = self.settings.heartbeat_seconds
        ttl = self.settings.heartbeat_ttl_seconds
        while True:
            try:
                lost = await sessions.renew_leases(
                    self.settings.replica_id, self.sessions.leases(), ttl
                )
                # A lease that vanished (Redis restarted, or it expired while Redis was out of
                # reach) belongs to a session that is still live here: take it back, within
                # the tenant's limit. If another session took the slot meanwhile, this one
                # ends (the client may reconnect) so the limit holds.
                for tenant_id, session_id in lost:
                    limit = self.sessions.limit_of(session_id)
                    grant = await sessions.acquire_lease(tenant_id, session_id, limit, ttl)
                    if not grant.granted:
                        self.sessions.end(
                            session_id,
                            SessionSlotLost(
                                "This session lost its slot while the gateway's store was "
                                "unreachable. Reconnect to continue."
                            ),
                        )
            except GatewayError:
                self.metrics.redis_errors.labels("heartbeat").inc()
            await asyncio.sleep(interval)

    async def _control(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.store.control.subscribe() as subscription:
                    delay = 0.1
                    async for command in subscription:
                        self._on_command(command)
            except GatewayError:
                self.metrics.redis_errors.labels("control").inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control subscriber failed; restarting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ---- drain ----------------------------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """Stop taking sessions; let each finish its response in progress, then close it with
        1012 and an error event telling the client to reconnect; all within ``seconds``.

        The last part of the budget (a quarter, at most ``DRAIN_RESERVE_S``) is kept for
        ending the sessions still in a response, booking their usage and stopping the server,
        so that the process is gone before the orchestrator's grace period ends.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        reserve = min(DRAIN_RESERVE_S, seconds / 4)
        self.draining = True
        self.metrics.draining.set(1)
        log.info("draining", extra={"live_sessions": len(self.sessions), "drain_s": seconds})
        notice = Draining("This gateway replica is restarting. Reconnect to continue.")
        self.sessions.drain(notice)
        if not await self.sessions.wait_empty(max(0.0, seconds - reserve)):
            log.warning(
                "drain: ending sessions still in a response",
                extra={"live_sessions": len(self.sessions)},
            )
            self.sessions.end_all(notice)
            await self.sessions.wait_empty(max(0.0, deadline - loop.time() - reserve / 2))
        try:
            left = await asyncio.wait_for(
                self.store.charges.flush(), max(0.1, deadline - loop.time() - reserve / 4)
            )
        except TimeoutError:
            left = self.store.charges.pending
        if left:
            log.error("drain: charges still buffered", extra={"buffered": left})
        with contextlib.suppress(GatewayError):
            await self.store.sessions.remove_replica(self.settings.replica_id)
        log.info("drained", extra={"live_sessions": len(self.sessions)})

    def refresh_gauges(self) -> None:
        """Gauges read at scrape time rather than kept up to date per frame."""
        self.metrics.relay_queue_depth.set(self.sessions.held_frames())
        if self._store is not None:
            charges = self._store.charges
            self.metrics.buffered_charges.set(charges.pending)
            self.metrics.charges_dropped_now(charges.dropped)
