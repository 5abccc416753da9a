"""The configured upstreams and their credentials, and the choice of one for a new session."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.config import UpstreamConfig
from gateway.errors import GatewayError, NoUpstream, RateLimited
from gateway.limits.headroom import Snapshot, choose
from gateway.relay.upstream import UpstreamTarget
from gateway.store.ratelimits import RateLimitStore


def credential_key(target: UpstreamTarget) -> str:
    """The name under which a credential's rate limits are shared between replicas."""
    return f"{target.upstream.name}.{target.credential.name}"


class UpstreamPool:
    def __init__(
        self,
        upstreams: Sequence[UpstreamConfig],
        ratelimits: RateLimitStore,
        *,
        floor_fraction: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._targets = [
            UpstreamTarget(upstream, credential)
            for upstream in upstreams
            for credential in upstream.credentials
        ]
        self._ratelimits = ratelimits
        self._floor = floor_fraction

    @property
    def configured(self) -> bool:
        return bool(self._targets)

    @property
    def targets(self) -> list[UpstreamTarget]:
        return list(self._targets)

    def candidates(self, model: str) -> list[UpstreamTarget]:
        """The targets that serve ``model``; NoUpstream when none does (no I/O: admission
        asks this before it takes anything)."""
        candidates = [
            t for t in self._targets if not t.upstream.models or model in t.upstream.models
        ]
        if not candidates:
            raise NoUpstream(f"No upstream is configured for the model '{model}'.")
        return candidates

    async def choose(self, model: str) -> UpstreamTarget:
        candidates = self.candidates(model)
        if len(candidates) == 1 and self._floor <= 0:
            return candidates[0]
        now = self._clock()
        try:
            seen = await self._ratelimits.read([credential_key(t) for t in candidates], now)
        except GatewayError:
            return candidates[0]  # no figures to go by: any credential is as good as another
        snapshots = [
            {
                name: Snapshot(e.limit, e.remaining, e.reset_at)
                for name, e in seen.get(credential_key(t), {}).items()
            }
            for t in candidates
        ]
        decision = choose(snapshots, self._floor, now)
        if decision.index is None:
            raise RateLimited(
                "Every upstream credential for this model is out of budget until its reset.",
                retry_after=decision.retry_after or 1.0,
            )
        return candidates[decision.index]
