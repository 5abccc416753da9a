"""What one session reports to the rest of the gateway: usage, budgets, rate limits, metrics.

Implements ``SessionHooks`` for the relay. Charges are written off the relay's path (a task per
charge through the no-loss ``ChargeBuffer``), so a slow or absent Redis never stalls frames; a
budget check first waits (briefly) for the session's own charges so that a response.create
right after a response.done sees that response's tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from gateway.config import QuotaFailMode
from gateway.errors import GatewayError, RateLimited
from gateway.limits.pricing import price_for, to_micros
from gateway.metrics import response_status_label
from gateway.protocol.core import Charge, Counters, FirstDelta, UpstreamError
from gateway.protocol.events import rate_limits_event
from gateway.protocol.usage import cost_usd
from gateway.relay.upstreams import credential_key
from gateway.store import ledger
from gateway.store.quota import QuotaStatus

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.relay.admission import Admission
    from gateway.services import Services

log = logging.getLogger("gateway.accounting")

_TOKEN_CLASSES = (
    "input_text", "input_audio", "input_image", "cached_text", "cached_audio", "cached_image",
    "output_text", "output_audio",
)  # fmt: skip


class SessionAccounting:
    def __init__(self, svc: Services, adm: Admission) -> None:
        self.svc = svc
        self.adm = adm
        self.tenant_label = svc.metrics.tenant(adm.tenant.id)
        self.price = price_for(adm.model, svc.settings.prices)
        self.cost_micros = 0
        self._pending: set[asyncio.Task[Any]] = set()
        m = svc.metrics
        self._relay_slot = m.relay.slot
        self._tokens = {c: m.tokens.labels(self.tenant_label, c) for c in _TOKEN_CLASSES}
        self._refused_seen = 0
        self.counters: Counters | None = None  # the core's, to report refused client events

    # ---- per frame (hot path: counters only) -------------------------------------------

    def relayed(self, direction: str, kind: str | bytes, size: int) -> None:
        slot = self._relay_slot(direction, kind)
        slot[0] += 1
        slot[1] += size
        counters = self.counters
        if counters is not None and counters.refused_client_events != self._refused_seen:
            self.report_refused()

    def report_refused(self) -> None:
        """Count the client events the core refused since the last report."""
        counters = self.counters
        if counters is None:
            return
        new = counters.refused_client_events - self._refused_seen
        if new > 0:
            self.svc.metrics.refused_events.inc(new)
            self._refused_seen = counters.refused_client_events

    def observe(self, effect: FirstDelta | UpstreamError) -> None:
        if isinstance(effect, FirstDelta):
            self.svc.metrics.first_delta.observe(effect.seconds)
        elif effect.error_type == "invalid_request_error":
            # The upstream answering a client's mistake is not an upstream failure: no metric
            # (it would page someone), and only at debug level (a client can send many).
            log.debug(
                "upstream refused a client event",
                extra={"session_id": self.adm.session_id, "code": effect.code},
            )
        else:
            self.svc.metrics.upstream_errors.labels(
                self.adm.target.upstream.name, "error_event"
            ).inc()
            log.info(
                "upstream error event",
                extra={"session_id": self.adm.session_id, "code": effect.code},
            )

    # ---- per response -------------------------------------------------------------------

    def charge(self, charge: Charge) -> asyncio.Task[Any]:
        usage = charge.usage
        cost = cost_usd(usage, self.price) if self.price is not None else 0.0
        micros = to_micros(cost)
        self.cost_micros += micros
        booked = ledger.Charge(
            tenant_id=self.adm.tenant.id,
            model=self.adm.model,
            at=self.svc.clock(),
            tokens=usage.total_tokens,
            usage={k: v for k, v in usage.as_dict().items() if v},
            audio_in_seconds=charge.audio_in_seconds,
            audio_out_seconds=charge.audio_out_seconds,
            cost_micros=micros,
            responses=1 if charge.response_id else 0,
        )
        self.svc.store.quota.charged(booked)  # this replica's budget view counts it now
        self._snapshot_status()  # and the budget gauges show it
        task = asyncio.create_task(self._book(booked), name="charge")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        self._metrics_for(charge, cost)
        return task

    def open_charge(self) -> None:
        """The session itself is counted in the ledger (sessions per day)."""
        booked = ledger.Charge(
            tenant_id=self.adm.tenant.id, model=self.adm.model, at=self.svc.clock(), sessions=1
        )
        task = asyncio.create_task(self._book(booked), name="charge")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _book(self, booked: ledger.Charge) -> None:
        """Book through the no-loss buffer; a charge Redis did not take now is a Redis error
        (it waits in the buffer, shown by ``buffered_charges``)."""
        if not await self.svc.charges.charge(booked):
            self.svc.metrics.redis_errors.labels("charge").inc()

    def _metrics_for(self, charge: Charge, cost: float) -> None:
        m = self.svc.metrics
        for name, value in charge.usage.as_dict().items():
            if value and name in self._tokens:
                self._tokens[name].inc(value)
        if charge.audio_in_seconds:
            m.audio_seconds.labels(self.tenant_label, "in").inc(charge.audio_in_seconds)
        if charge.audio_out_seconds:
            m.audio_seconds.labels(self.tenant_label, "out").inc(charge.audio_out_seconds)
        if cost:
            m.cost.labels(self.tenant_label).inc(cost)
        if charge.status and charge.response_id:
            m.responses.labels(response_status_label(charge.status)).inc()

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait for this session's charges to be booked or buffered."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._pending, return_exceptions=True), timeout
                )

    async def check_quota(self) -> RateLimited | None:
        await self.settle(timeout=1.0)
        status = await self._status()
        if status is None or status.allowed:
            return None
        exhausted = [i.name for i in status.items if i.exhausted]
        for name in exhausted:
            self.svc.metrics.quota_refusals.labels(self.tenant_label, name).inc()
        return RateLimited(
            f"This tenant is over its budget ({', '.join(exhausted)}). "
            f"Try again in {status.retry_after_s or 1:.0f} seconds.",
            retry_after=status.retry_after_s or 1.0,
        )

    async def _status(self) -> QuotaStatus | None:
        """None when the budget cannot be read and the fail mode says go on."""
        tenant = self.adm.tenant
        try:
            status = await self.svc.store.quota.check(tenant.id, tenant.limits)
        except GatewayError:
            self.svc.metrics.redis_errors.labels("quota_check").inc()
            if self.svc.settings.quota_fail_mode is QuotaFailMode.CLOSED:
                return QuotaStatus(allowed=False, retry_after_s=5.0, items=())
            return None
        record_budget(self.svc.metrics, self.tenant_label, status)
        return status

    # ---- the same, without waiting (the relay's synchronous fast path) -----------------

    def _status_now(self) -> QuotaStatus | None:
        """The budget from this replica's fresh snapshot, or None when only Redis can tell
        (stale snapshot, or a charge of this session still being booked)."""
        if self._pending:
            return None
        return self._snapshot_status()

    def _snapshot_status(self) -> QuotaStatus | None:
        tenant = self.adm.tenant
        status = self.svc.store.quota.check_now(tenant.id, tenant.limits)
        if status is not None:
            record_budget(self.svc.metrics, self.tenant_label, status)
        return status

    def quota_allows_now(self) -> bool:
        """True when the tenant may start a response, known without waiting. False means
        "ask ``check_quota``": a refusal always takes the awaited path (metrics, message)."""
        status = self._status_now()
        return status is not None and status.allowed

    def rate_limits_seen_now(self, entries: list[dict[str, object]]) -> bytes | None:
        """``rate_limits_seen`` when ``quota_allows_now()`` has just said True."""
        self._record_rate_limits(entries)
        if self.adm.tenant.policy.rate_limits_passthrough:
            return None
        return self._figures_event(self._status_now())

    async def rate_limits_seen(self, entries: list[dict[str, object]]) -> bytes | None:
        self._record_rate_limits(entries)
        if self.adm.tenant.policy.rate_limits_passthrough:
            return None
        return self._figures_event(await self._status())

    def _figures_event(self, status: QuotaStatus | None) -> bytes | None:
        entries = tenant_rate_limits(status)
        # A tenant without limits has no figures to show: it gets no rate_limits.updated at all
        # (never the organisation's).
        return rate_limits_event(self.svc.event_id(), entries) if entries else None

    def _record_rate_limits(self, entries: list[dict[str, object]]) -> None:
        target = self.adm.target
        for entry in entries:
            name, limit, remaining = entry.get("name"), entry.get("limit"), entry.get("remaining")
            if isinstance(name, str) and name in (
                "requests",
                "tokens",
                "input_tokens",
                "output_tokens",
            ):
                labels = (target.upstream.name, target.credential.name, name)
                if isinstance(remaining, int | float):
                    self.svc.metrics.upstream_ratelimit_remaining.labels(*labels).set(remaining)
                if isinstance(limit, int | float):
                    self.svc.metrics.upstream_ratelimit_limit.labels(*labels).set(limit)
        # Written for the other replicas' credential choice, coalesced per credential.
        self.svc.rate_limit_figures.note(credential_key(target), entries)


def record_budget(metrics: Metrics, tenant_label: str, status: QuotaStatus) -> None:
    """The tenant's token budget left, per window, as last computed."""
    for item in status.items:
        if item.name in ("tokens_per_minute", "tokens_per_day"):
            window = "minute" if item.name == "tokens_per_minute" else "day"
            metrics.tenant_tokens_remaining.labels(tenant_label, window).set(item.remaining)


def tenant_rate_limits(status: QuotaStatus | None) -> list[dict[str, Any]]:
    """The tenant's own figures as ``rate_limits.updated`` entries, in OpenAI's order
    (``requests``, then ``tokens``: the tightest token window the tenant has)."""
    if status is None:
        return []
    windows = [status.item("tokens_per_minute"), status.item("tokens_per_day")]
    # The window that refuses first: least left; when equal (both spent), the later reset.
    tokens = min(
        (i for i in windows if i is not None),
        key=lambda i: (i.remaining, -i.reset_seconds),
        default=None,
    )
    shown = (("requests", status.item("requests_per_day")), ("tokens", tokens))
    return [
        {
            "name": name,
            "limit": int(item.limit),
            "remaining": int(item.remaining),
            "reset_seconds": round(item.reset_seconds, 3),
        }
        for name, item in shown
        if item is not None
    ]
