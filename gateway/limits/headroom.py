"""Which upstream credential takes a new session, from the last ``rate_limits.updated`` figures.

A credential's headroom is the fraction of its ``tokens`` budget left (``requests`` too when the
upstream reports it; the smaller of the two counts). A credential never reported on has full
headroom. One whose headroom is under the floor takes no new session until its reset. Among
the rest the one with the most headroom wins; ties go to the one listed first, so the choice
is deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One reported limit of one credential."""

    limit: int | None
    remaining: int | None
    reset_at: float  # epoch seconds


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    index: int | None  # the chosen candidate, None when every one is exhausted
    retry_after: float | None  # when none is chosen: seconds until the earliest reset
    headroom: tuple[float, ...]  # per candidate, for metrics and logs


def headroom(limits: Mapping[str, Snapshot], now: float) -> tuple[float, float | None]:
    """(fraction left, reset time of the scarcest limit) for one credential."""
    worst, reset = 1.0, None
    for name in ("tokens", "requests"):
        snap = limits.get(name)
        if snap is None or snap.reset_at <= now or not snap.limit or snap.remaining is None:
            continue
        fraction = max(0.0, min(1.0, snap.remaining / snap.limit))
        if fraction < worst:
            worst, reset = fraction, snap.reset_at
    return worst, reset


def choose(candidates: Sequence[Mapping[str, Snapshot]], floor: float, now: float) -> Choice:
    rooms = [headroom(c, now) for c in candidates]
    best: int | None = None
    for i, (room, _) in enumerate(rooms):
        if room <= floor and room < 1.0:
            continue
        if best is None or room > rooms[best][0]:
            best = i
    if best is not None:
        return Choice(best, None, tuple(r for r, _ in rooms))
    resets = [reset for _, reset in rooms if reset is not None]
    retry = max(0.0, min(resets) - now) if resets else None
    return Choice(None, retry, tuple(r for r, _ in rooms))
