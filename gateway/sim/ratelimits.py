"""Per-key rate-limit budget, shared by all connections of one key in one simulator.

A response reserves one request and its expected tokens when it starts (what
``rate_limits.updated`` reports); when it ends the reservation is corrected to what was
really used. Windows are fixed: they start with the first reservation and last
``reset_seconds``. The clock is injected (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Window:
    started: float
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    ok: bool
    tokens: int  # reserved (0 when refused)
    window_started: float
    rate_limits: list[dict[str, Any]]
    retry_after: float


class RateLimitBook:
    def __init__(
        self,
        requests_limit: int,
        tokens_limit: int,
        reset_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.requests_limit = requests_limit
        self.tokens_limit = tokens_limit
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def _window(self, key: str) -> _Window:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.reset_seconds:
            window = self._windows[key] = _Window(started=now)
        return window

    def reserve(self, key: str, tokens: int, *, near_exhausted: bool = False) -> Reservation:
        window = self._window(key)
        reset = max(0.0, window.started + self.reset_seconds - self._clock())
        ok = (
            window.requests + 1 <= self.requests_limit
            and window.tokens + tokens <= self.tokens_limit
        )
        if ok:
            window.requests += 1
            window.tokens += tokens
        requests_left = max(0, self.requests_limit - window.requests)
        tokens_left = max(0, self.tokens_limit - window.tokens)
        if near_exhausted:
            # Fault: report almost nothing left (1 %), as a key about to hit its limit would.
            requests_left = min(requests_left, self.requests_limit // 100)
            tokens_left = min(tokens_left, self.tokens_limit // 100)
        limits = [
            _limit("requests", self.requests_limit, requests_left, reset),
            _limit("tokens", self.tokens_limit, tokens_left, reset),
        ]
        return Reservation(ok, tokens if ok else 0, window.started, limits, round(reset, 3))

    def settle(self, key: str, reservation: Reservation, used: int) -> None:
        """Replace the reserved tokens by the used ones, if the window is still the same."""
        window = self._windows.get(key)
        if window is None or not reservation.ok or window.started != reservation.window_started:
            return
        window.tokens = max(0, window.tokens - reservation.tokens + used)


def _limit(name: str, limit: int, remaining: int, reset: float) -> dict[str, Any]:
    return {"name": name, "limit": limit, "remaining": remaining, "reset_seconds": round(reset, 3)}
