"""The sessions this replica relays right now: for heartbeats, admin ends and the drain."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

from gateway.errors import GatewayError
from gateway.relay.session import RelaySession


class Holding(Protocol):
    """A side of a session that may hold received frames the relay has not taken yet."""

    @property
    def queued(self) -> int: ...


@dataclasses.dataclass(slots=True)
class LiveSession:
    tenant_id: str
    relay: RelaySession
    sides: tuple[Holding, ...] = ()
    # The tenant's concurrency limit when the session was admitted (to take a lost lease back).
    limit: int | None = None


class LiveSessions:
    def __init__(self) -> None:
        self._by_id: dict[str, LiveSession] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._by_id)

    def add(
        self,
        session_id: str,
        tenant_id: str,
        relay: RelaySession,
        sides: tuple[Holding, ...] = (),
        limit: int | None = None,
    ) -> None:
        self._by_id[session_id] = LiveSession(tenant_id, relay, sides, limit)
        self._empty.clear()

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_id

    def held_frames(self) -> int:
        """Frames received by the relay and not yet sent on, over all sessions."""
        return sum(side.queued for live in self._by_id.values() for side in live.sides)

    def remove(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)
        if not self._by_id:
            self._empty.set()

    def leases(self) -> list[tuple[str, str]]:
        return [(live.tenant_id, sid) for sid, live in self._by_id.items()]

    def limit_of(self, session_id: str) -> int | None:
        live = self._by_id.get(session_id)
        return live.limit if live is not None else None

    def end(self, session_id: str, error: GatewayError) -> bool:
        live = self._by_id.get(session_id)
        if live is None:
            return False
        live.relay.request_end(error)
        return True

    def end_tenant(self, tenant_id: str, error: GatewayError) -> int:
        ended = 0
        for live in list(self._by_id.values()):
            if live.tenant_id == tenant_id:
                live.relay.request_end(error)
                ended += 1
        return ended

    def drain(self, error: GatewayError) -> None:
        """Every session: finish the response in progress, then close with ``error``."""
        for live in list(self._by_id.values()):
            live.relay.request_end(error, after_response=True)

    def end_all(self, error: GatewayError) -> None:
        for live in list(self._by_id.values()):
            live.relay.request_end(error)

    async def wait_empty(self, timeout: float) -> bool:
        if self._empty.is_set():
            return True
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True
