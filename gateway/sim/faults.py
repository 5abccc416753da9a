"""Fault injection: the per-connection fault set and the counter that decides when one fires.

Pure: parsing and counting only; the connection layer carries out the actions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from gateway.sim.config import SimConfig

FAULT_QUERY_PARAM = "sim_fault"
FAULT_HEADER = "x-sim-fault"


class FaultSyntaxError(ValueError):
    """A ``sim_fault`` value that does not parse; the upgrade is refused with 400."""


@dataclass(frozen=True, slots=True)
class Faults:
    refuse_status: int | None = None
    close_after: tuple[int, int] | None = None  # (K events, close code)
    stall_after: int | None = None
    malformed_after: int | None = None
    near_exhausted: bool = False
    fail_responses: bool = False

    @classmethod
    def from_config(cls, config: SimConfig) -> Faults:
        return cls(
            refuse_status=config.refuse_status,
            close_after=config.close_after_events,
            stall_after=config.stall_after_events,
            malformed_after=config.malformed_after_events,
            near_exhausted=config.near_exhausted_rate_limits,
            fail_responses=config.fail_responses,
        )


def _int(text: str, spec: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FaultSyntaxError(f"not an integer in fault {spec!r}: {text!r}") from None
    if not low <= value <= high:
        raise FaultSyntaxError(f"{value} out of range {low}..{high} in fault {spec!r}")
    return value


def parse_faults(specs: list[str], base: Faults) -> Faults:
    """Apply fault specs (each may be a comma-separated list) on top of ``base``."""
    faults = base
    for raw in specs:
        for spec in (part.strip() for part in raw.split(",")):
            if spec:
                faults = _apply_one(spec, faults)
    return faults


def _apply_one(spec: str, faults: Faults) -> Faults:
    name, *args = spec.split(":")
    if name == "none" and not args:
        return Faults()
    if name == "refuse" and len(args) == 1:
        return replace(faults, refuse_status=_int(args[0], spec, 400, 599))
    if name == "close_after" and len(args) in (1, 2):
        code = _int(args[1], spec, 1000, 4999) if len(args) == 2 else 1011
        return replace(faults, close_after=(_int(args[0], spec, 1, 1_000_000), code))
    if name == "stall_after" and len(args) == 1:
        return replace(faults, stall_after=_int(args[0], spec, 1, 1_000_000))
    if name == "malformed_after" and len(args) == 1:
        return replace(faults, malformed_after=_int(args[0], spec, 1, 1_000_000))
    if name == "near_exhausted" and not args:
        return replace(faults, near_exhausted=True)
    if name == "fail_response" and not args:
        return replace(faults, fail_responses=True)
    raise FaultSyntaxError(f"unknown fault {spec!r}")


class FaultAction(enum.Enum):
    CLOSE = "close"
    STALL = "stall"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Fired:
    action: FaultAction
    close_code: int = 1011


class FaultTracker:
    """Counts the events of the current response (response.created .. response.done) as they
    are sent, and says which fault fires after the K-th one. Each fault fires at most once
    per response; close and stall end the useful life of the connection anyway."""

    def __init__(self, faults: Faults) -> None:
        self._faults = faults
        self._count = 0
        self._in_response = False

    def after_sent(self, event_type: str) -> list[Fired]:
        if event_type == "response.created":
            self._in_response, self._count = True, 0
        if not self._in_response:
            return []
        self._count += 1
        if event_type == "response.done":
            self._in_response = False
        fired: list[Fired] = []
        faults = self._faults
        if faults.malformed_after == self._count:
            fired.append(Fired(FaultAction.MALFORMED))
        if faults.close_after is not None and faults.close_after[0] == self._count:
            fired.append(Fired(FaultAction.CLOSE, faults.close_after[1]))
        if faults.stall_after == self._count:
            fired.append(Fired(FaultAction.STALL))
        return fired
