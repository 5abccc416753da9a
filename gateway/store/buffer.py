"""No-loss charging: charges that cannot reach Redis are kept in memory and written later.

A live session must not stop (or lose its bill) because Redis blinked. ``charge()`` tries at
once; when the store is unavailable the charge joins an in-memory queue that a background
task drains, with backoff, once Redis answers again. Every charge carries a unique id and the
ledger script ignores ids it has applied, so a charge whose first attempt did reach Redis
(the reply was lost) is never counted twice.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from gateway.errors import StoreUnavailable
from gateway.store.ledger import Charge, Ledger
from gateway.tasks import stop_tasks

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 200_000  # ~100 MB at worst; beyond this memory matters more


class ChargeBuffer:
    def __init__(
        self,
        ledger: Ledger,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        retry_min_s: float = 0.05,
        retry_max_s: float = 2.0,
    ) -> None:
        self._ledger = ledger
        self._pending: collections.deque[Charge] = collections.deque()
        self._max_pending = max_pending
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # charges lost to the memory bound (a metric; should stay 0)

    @property
    def pending(self) -> int:
        """Charges waiting for Redis (for metrics and readiness)."""
        return len(self._pending)

    async def charge(self, charge: Charge) -> bool:
        """Book now if Redis answers (True), else keep it for later (False). Never raises
        StoreUnavailable."""
        try:
            await self._ledger.charge(charge)
        except StoreUnavailable:
            self._keep(charge)
            return False
        return True

    async def flush(self) -> int:
        """Write what is pending, oldest first, until done or Redis fails; returns what is left."""
        async with self._lock:
            while self._pending:
                try:
                    await self._ledger.charge(self._pending[0])
                except StoreUnavailable:
                    break
                except Exception:
                    # Not an outage: Redis refused this charge itself. Keeping it would block
                    # every charge behind it, so it is logged (with its figures) and dropped.
                    log.exception(
                        "charge buffer: dropped a charge Redis refused: %r", self._pending[0]
                    )
                    self.dropped += 1
                self._pending.popleft()
            return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="charge-buffer")

    async def stop(self, flush_within_s: float = 5.0) -> int:
        """Stop the background task after one last flush; returns charges that could not go."""
        if self._task is not None:
            task, self._task = self._task, None
            await stop_tasks([task])
        try:
            left = await asyncio.wait_for(self.flush(), flush_within_s)
        except TimeoutError:
            left = self.pending
        if left:
            log.error("charge buffer: %d charges could not be written to the store", left)
        return left

    def _keep(self, charge: Charge) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            log.error("charge buffer full (%d): dropped the oldest charge", self._max_pending)
        self._pending.append(charge)
        self._wake.set()

    async def _run(self) -> None:
        delay = self._retry_min_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            while await self.flush():
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
            delay = self._retry_min_s
