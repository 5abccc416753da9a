"""Keepalive pings for every WebSocket of this process, from one timer per event loop.

A peer can vanish without closing (a phone that lost its network, a NAT that forgot the flow):
only a ping that goes unanswered tells. picows's own auto-ping runs one task per connection (a
task, its coroutine, a sleeping future and a timer: about 1 KiB, twice per session, for the
whole session). Here one timer visits the live connections every ``INTERVAL`` seconds: one
that received nothing since the last visit is pinged, and one that still received nothing by
the next visit (not even the pong) is dropped, which its session sees as a lost connection.
So a silent peer is pinged after 20 to 40 seconds and dropped 20 seconds later, as picows's
20-second idle ping and 20-second reply timeout did, give or take one interval.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

INTERVAL = 20.0


class Pingable(Protocol):
    def keepalive(self) -> None:
        """Called every ``INTERVAL``: ping when nothing was heard, drop when that went
        unanswered (see ``PicowsPeer.keepalive``)."""
        ...


class Keepalive:
    """The live connections of one event loop and the timer that visits them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.peers: set[Pingable] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, peer: Pingable) -> None:
        self.peers.add(peer)
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self.visit)

    def discard(self, peer: Pingable) -> None:
        self.peers.discard(peer)

    def visit(self) -> None:
        self._timer = None
        for peer in list(self.peers):  # a peer dropped here leaves the set as it goes
            peer.keepalive()
        if self.peers:  # with nothing live the timer stops: no loop keeps a stray callback
            self._timer = self.loop.call_later(self.interval, self.visit)


_local = threading.local()  # one event loop per thread


def keepalive() -> Keepalive:
    """This thread's running loop's ``Keepalive`` (a new one when the loop changed: tests)."""
    loop = asyncio.get_running_loop()
    current: Keepalive | None = getattr(_local, "keepalive", None)
    if current is None or current.loop is not loop:
        current = _local.keepalive = Keepalive(loop, INTERVAL)
    return current
