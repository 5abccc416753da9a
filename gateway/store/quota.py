"""Tenant budgets: tokens per minute, tokens per day, audio seconds per day.

The counters are written by the ledger's charge script (one atomic script per charge, so they
agree across replicas). Here they are read and compared with the tenant's limits.

Tokens per minute uses fixed 60 s windows keyed by their start (``{t:X}:tpm:<start>``), not a
sliding window: one INCRBY per charge, a key that expires by itself, and an exact
Retry-After (the end of the window) that a client can act on. The known cost is that a tenant
can spend up to twice its budget across a window boundary; since usage is only known after a
response (``response.done``) a budget is already a post-hoc check that can overshoot by one
response, and the upstream's own limits stay in force, so exactness at the boundary buys
little for a second counter per charge.

Days are UTC days; a day's budget resets at 00:00 UTC. Audio seconds count input and output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Literal

from gateway.config import TenantLimits
from gateway.store import keys
from gateway.store.connection import RedisClient, translated
from gateway.store.ledger import (
    AUDIO_IN_MS,
    AUDIO_OUT_MS,
    RESPONSES,
    TOKENS,
    WINDOW_S,
    Charge,
    utc_day,
    window_start,
)

QuotaName = Literal[
    "tokens_per_minute", "tokens_per_day", "audio_seconds_per_day", "requests_per_day"
]


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaItem:
    name: QuotaName
    limit: float
    used: float
    reset_seconds: float  # until this counter starts again from zero

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaStatus:
    allowed: bool
    retry_after_s: float | None  # when every exhausted counter has reset; None when allowed
    items: tuple[QuotaItem, ...]  # one per limit the tenant has (unlimited ones left out)

    def item(self, name: QuotaName) -> QuotaItem | None:
        return next((i for i in self.items if i.name == name), None)


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaUsage:
    """The raw counters at one instant."""

    tokens_minute: int
    tokens_day: int
    audio_ms_day: int
    responses_day: int = 0


def decide(limits: TenantLimits, used: QuotaUsage, now: float) -> QuotaStatus:
    """Pure: compare counters with limits."""
    to_minute_end = window_start(now) + WINDOW_S - now
    to_day_end = 86400 - (now % 86400)
    candidates: list[tuple[QuotaName, float | None, float, float]] = [
        ("tokens_per_minute", limits.tokens_per_minute, used.tokens_minute, to_minute_end),
        ("tokens_per_day", limits.tokens_per_day, used.tokens_day, to_day_end),
        ("audio_seconds_per_day", limits.audio_seconds_per_day, used.audio_ms_day / 1000,
         to_day_end),
        ("requests_per_day", limits.requests_per_day, used.responses_day, to_day_end),
    ]  # fmt: skip
    items = tuple(
        QuotaItem(name, float(limit), float(value), reset)
        for name, limit, value, reset in candidates
        if limit is not None
    )
    waits = [i.reset_seconds for i in items if i.exhausted]
    return QuotaStatus(
        allowed=not waits,
        retry_after_s=max(waits) if waits else None,
        items=items,
    )


@dataclasses.dataclass(slots=True)
class _Snapshot:
    """One tenant's counters as last read, plus this replica's charges since."""

    usage: QuotaUsage
    window: int  # the minute window and the day the counters belong to
    day: str
    read_at: float  # monotonic


class QuotaStore:
    """Reads budgets. With ``cache_seconds`` > 0, a tenant's counters are read from Redis at
    most that often per replica; between reads, this replica's own charges are added to the
    snapshot as they are made (``charged``), so a session always sees its own usage at once
    and other replicas' usage at most ``cache_seconds`` late.

    Why: a budget is checked twice per turn (the response starting, the rate-limit figures
    shown to the tenant) in every session; read each time, the same counters cost one round
    trip per check: with 200 talking sessions of one tenant, about a seventh of the gateway's
    Python time (py-spy). A budget is already post hoc (usage is only known at
    ``response.done``), so a bounded lag on other replicas' charges changes no decision a
    turn could not already overshoot.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._r = client
        self._clock = clock
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._snapshots: dict[str, _Snapshot] = {}
        # Bumped by every local charge: a read that raced one is used once, not kept.
        self._generation: dict[str, int] = {}

    def charged(self, charge: Charge) -> None:
        """This replica is booking ``charge``: count it in the tenant's snapshot now."""
        tenant = charge.tenant_id
        self._generation[tenant] = self._generation.get(tenant, 0) + 1
        snap = self._snapshots.get(tenant)
        if snap is None:
            return
        if window_start(charge.at) != snap.window or utc_day(charge.at) != snap.day:
            del self._snapshots[tenant]  # the charge belongs to another window: read again
            return
        used = snap.usage
        audio_ms = round(charge.audio_in_seconds * 1000) + round(charge.audio_out_seconds * 1000)
        snap.usage = QuotaUsage(
            tokens_minute=used.tokens_minute + charge.tokens,
            tokens_day=used.tokens_day + charge.tokens,
            audio_ms_day=used.audio_ms_day + audio_ms,
            responses_day=used.responses_day + charge.responses,
        )

    async def usage(self, tenant_id: str, now: float | None = None) -> QuotaUsage:
        at = self._clock() if now is None else now
        if self._cache_seconds <= 0:
            return await self._read(tenant_id, at)
        window, day = window_start(at), utc_day(at)
        snap = self._snapshots.get(tenant_id)
        if (
            snap is not None
            and snap.window == window
            and snap.day == day
            and self._monotonic() - snap.read_at < self._cache_seconds
        ):
            return snap.usage
        generation = self._generation.get(tenant_id, 0)
        read_at = self._monotonic()
        used = await self._read(tenant_id, at)
        if self._generation.get(tenant_id, 0) == generation:
            self._snapshots[tenant_id] = _Snapshot(used, window, day, read_at)
        else:
            self._snapshots.pop(tenant_id, None)  # a local charge raced the read
        return used

    @translated
    async def _read(self, tenant_id: str, at: float) -> QuotaUsage:
        day = utc_day(at)
        pipe = self._r.pipeline(transaction=False)
        pipe.get(keys.tokens_minute(tenant_id, window_start(at)))
        pipe.hmget(keys.ledger_day(tenant_id, day), [TOKENS, AUDIO_IN_MS, AUDIO_OUT_MS, RESPONSES])
        minute, (tokens, audio_in, audio_out, responses) = await pipe.execute()
        return QuotaUsage(
            tokens_minute=int(minute or 0),
            tokens_day=int(tokens or 0),
            audio_ms_day=int(audio_in or 0) + int(audio_out or 0),
            responses_day=int(responses or 0),
        )

    def check_now(
        self, tenant_id: str, limits: TenantLimits, now: float | None = None
    ) -> QuotaStatus | None:
        """The decision without a round trip, when the snapshot is fresh; else None."""
        at = self._clock() if now is None else now
        if _unlimited(limits):
            return _ALLOWED
        snap = self._snapshots.get(tenant_id)
        if (
            snap is None
            or self._monotonic() - snap.read_at >= self._cache_seconds
            or snap.window != window_start(at)
            or snap.day != utc_day(at)
        ):
            return None
        return decide(limits, snap.usage, at)

    async def check(
        self, tenant_id: str, limits: TenantLimits, now: float | None = None
    ) -> QuotaStatus:
        at = self._clock() if now is None else now
        if _unlimited(limits):
            return _ALLOWED
        return decide(limits, await self.usage(tenant_id, at), at)


_ALLOWED = QuotaStatus(allowed=True, retry_after_s=None, items=())


def _unlimited(limits: TenantLimits) -> bool:
    return (
        limits.tokens_per_minute is None
        and limits.tokens_per_day is None
        and limits.audio_seconds_per_day is None
        and limits.requests_per_day is None
    )
