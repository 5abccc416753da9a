"""Which price applies to a model: an exact entry, else the longest configured prefix
(``gpt-realtime-2025-08-28`` is priced as ``gpt-realtime``), else none (cost 0, and a warning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

P = TypeVar("P")


def price_for(model: str, prices: Mapping[str, P]) -> P | None:
    if model in prices:
        return prices[model]
    best: str | None = None
    for name in prices:
        if model.startswith(name) and (best is None or len(name) > len(best)):
            best = name
    return prices[best] if best is not None else None


def to_micros(usd: float) -> int:
    """Money is booked as integer micro-dollars so that sums never drift."""
    return round(usd * 1_000_000)
