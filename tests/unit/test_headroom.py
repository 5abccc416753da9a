from __future__ import annotations

from gateway.limits.headroom import Snapshot, choose

NOW = 1_000_000.0


def _snap(remaining: int, limit: int = 1000, reset_in: float = 30.0) -> dict[str, Snapshot]:
    return {"tokens": Snapshot(limit, remaining, NOW + reset_in)}


def test_most_headroom_wins() -> None:
    decision = choose([_snap(100), _snap(900), _snap(500)], floor=0.05, now=NOW)
    assert decision.index == 1


def test_unknown_credential_counts_as_full() -> None:
    assert choose([_snap(900), {}], floor=0.05, now=NOW).index == 1


def test_below_floor_takes_nothing_until_reset() -> None:
    decision = choose([_snap(10, reset_in=12.5), _snap(0, reset_in=40)], floor=0.05, now=NOW)
    assert decision.index is None
    assert decision.retry_after == 12.5
    # after the reset the figures no longer count
    assert choose([_snap(10, reset_in=12.5)], floor=0.05, now=NOW + 13).index == 0


def test_expired_snapshot_is_ignored() -> None:
    assert choose([_snap(0, reset_in=-1)], floor=0.05, now=NOW).index == 0
