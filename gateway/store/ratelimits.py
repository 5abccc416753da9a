"""Upstream headroom: the last ``rate_limits.updated`` seen for each upstream credential.

Each entry (one per ``name``: requests, tokens, or older names) is stored with an absolute
reset time; an entry past its reset is ignored on read (the bucket has refilled) and the key
itself expires once its latest entry has. Choosing a credential from these figures is the
caller's decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.errors import GatewayError
from gateway.store import keys
from gateway.store.connection import RedisClient, translated

# Used when an entry has no reset_seconds: long enough to matter, short enough to not stick.
DEFAULT_RESET_S = 60.0
MAX_RESET_S = 2 * 86400.0

# KEYS[1] credential hash; ARGV[1] ttl ms of the latest entry, then name/json pairs.
# The key lives as long as its longest-lived entry (never shortened by a shorter one).
_RECORD = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitEntry:
    name: str
    limit: int | None
    remaining: int | None
    reset_at: float  # epoch seconds
    recorded_at: float

    def reset_seconds(self, now: float) -> float:
        return max(0.0, self.reset_at - now)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _entry(item: Mapping[str, Any], now: float) -> RateLimitEntry | None:
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    reset = _number(item.get("reset_seconds"))
    reset = DEFAULT_RESET_S if reset is None or reset < 0 else min(reset, MAX_RESET_S)
    limit = _number(item.get("limit"))
    remaining = _number(item.get("remaining"))
    return RateLimitEntry(
        name=name,
        limit=None if limit is None else int(limit),
        remaining=None if remaining is None else int(remaining),
        reset_at=now + reset,
        recorded_at=now,
    )


class RateLimitStore:
    def __init__(self, client: RedisClient, *, clock: Callable[[], float] = time.time) -> None:
        self._r = client
        self._clock = clock
        self._record = client.register_script(_RECORD)

    @translated
    async def record(
        self, credential: str, rate_limits: Sequence[Mapping[str, Any]], now: float | None = None
    ) -> None:
        """Store one ``rate_limits.updated`` payload (its ``rate_limits`` list) as received."""
        at = self._clock() if now is None else now
        entries = [e for e in (_entry(i, at) for i in rate_limits if isinstance(i, Mapping)) if e]
        if not entries:
            return
        ttl_ms = max(1, math.ceil(max(e.reset_at - at for e in entries) * 1000))
        pairs = [
            part
            for e in entries
            for part in (e.name, json.dumps(dataclasses.asdict(e), separators=(",", ":")))
        ]
        await self._record(keys=[keys.ratelimits(credential)], args=[ttl_ms, *pairs])

    @translated
    async def read(
        self, credentials: Sequence[str], now: float | None = None
    ) -> dict[str, dict[str, RateLimitEntry]]:
        """Entries not yet reset, per credential (a credential with none maps to ``{}``)."""
        at = self._clock() if now is None else now
        pipe = self._r.pipeline(transaction=False)
        for credential in credentials:
            pipe.hgetall(keys.ratelimits(credential))
        rows = await pipe.execute() if credentials else []
        out: dict[str, dict[str, RateLimitEntry]] = {}
        for credential, raw in zip(credentials, rows, strict=True):
            entries = (RateLimitEntry(**json.loads(v)) for v in raw.values())
            out[credential] = {e.name: e for e in entries if e.reset_at > at}
        return out


class LatestFigures:
    """Writes each credential's rate-limit figures at most once per ``interval`` seconds; the
    latest figures seen win.

    Why: every turn of every session on a credential brings a ``rate_limits.updated``, and
    each figure supersedes the one before it (``remaining`` is a snapshot, not an increment).
    Writing each one cost a Redis round trip per turn per session; coalesced, a replica writes
    each credential at most ``1 / interval`` times a second, whatever its session count. The
    first figures after a quiet spell are written at once, so a credential found exhausted is
    known to every replica within a loop iteration; later ones wait at most ``interval``.
    """

    def __init__(
        self,
        store: RateLimitStore,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._interval = interval
        self._clock = clock
        self._on_error = on_error
        self._latest: dict[str, tuple[list[Mapping[str, Any]], float]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_write: dict[str, float] = {}  # monotonic
        self._writes: set[asyncio.Task[None]] = set()

    def note(self, credential: str, rate_limits: Sequence[Mapping[str, Any]]) -> None:
        """Figures just seen for ``credential`` (written now or within ``interval``)."""
        self._latest[credential] = (list(rate_limits), self._clock())
        if credential in self._timers:
            return  # a write is already due; it will take these figures
        loop = asyncio.get_running_loop()
        last = self._last_write.get(credential)
        delay = 0.0 if last is None else max(0.0, last + self._interval - loop.time())
        self._timers[credential] = loop.call_later(delay, self._write_now, credential)

    def _write_now(self, credential: str) -> None:
        del self._timers[credential]
        rate_limits, seen_at = self._latest.pop(credential)
        self._last_write[credential] = asyncio.get_running_loop().time()
        task = asyncio.create_task(self._write(credential, rate_limits, seen_at))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(
        self, credential: str, rate_limits: list[Mapping[str, Any]], seen_at: float
    ) -> None:
        try:
            await self._store.record(credential, rate_limits, now=seen_at)
        except GatewayError:
            self._on_error()  # figures are a snapshot: the next ones replace these anyway

    async def flush(self) -> None:
        """Write every figure still waiting (at shutdown)."""
        for credential in list(self._timers):
            self._timers[credential].cancel()
            self._write_now(credential)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
