"""Which upstream credential takes a new session, from the last ``rate_limits.updated`` figures.

A credential's headroom is the fraction of its ``tokens`` budget left (``requests`` too when the
upstream reports it; the smaller of the two counts). A credential never reported on has full
headroom. One whose headroom is under the floor takes no new session until its reset (the
reset of every limit under the floor, when both are). Among the rest the one with the most
headroom wins; ties go to the one listed first, so the choice is deterministic.
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


_NAMES = ("tokens", "requests")


def _fractions(limits: Mapping[str, Snapshot], now: float) -> list[tuple[float, float]]:
    """(fraction left, reset time) of each limit still in force."""
    out = []
    for name in _NAMES:
        snap = limits.get(name)
        if snap is None or snap.reset_at <= now or not snap.limit or snap.remaining is None:
            continue
        out.append((max(0.0, min(1.0, snap.remaining / snap.limit)), snap.reset_at))
    return out


def _under(fraction: float, floor: float) -> bool:
    return fraction <= floor and fraction < 1.0


def headroom(limits: Mapping[str, Snapshot], now: float) -> float:
    """The fraction left of one credential's scarcest limit (1.0 when none is reported)."""
    return min((fraction for fraction, _ in _fractions(limits, now)), default=1.0)


def usable_at(limits: Mapping[str, Snapshot], floor: float, now: float) -> float | None:
    """When a credential under the floor takes sessions again: once *every* one of its limits
    under the floor has reset (the scarcest one resetting first is not enough). None when no
    limit is under the floor."""
    resets = [reset for fraction, reset in _fractions(limits, now) if _under(fraction, floor)]
    return max(resets) if resets else None


def choose(candidates: Sequence[Mapping[str, Snapshot]], floor: float, now: float) -> Choice:
    rooms = [headroom(c, now) for c in candidates]
    best: int | None = None
    for i, room in enumerate(rooms):
        if _under(room, floor):
            continue
        if best is None or room > rooms[best]:
            best = i
    if best is not None:
        return Choice(best, None, tuple(rooms))
    usable = [at for at in (usable_at(c, floor, now) for c in candidates) if at is not None]
    retry = max(0.0, min(usable) - now) if usable else None
    return Choice(None, retry, tuple(rooms))
