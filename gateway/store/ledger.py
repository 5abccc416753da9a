"""Per-tenant, per-UTC-day usage ledger, and the one script that charges it.

A charge updates, atomically and in one slot: the day's totals, the day's per-model figures,
the tenant's current 60 s token window (for the tokens-per-minute budget) and the set of
charge ids already applied that day. That set makes a charge idempotent: a retry after an
ambiguous failure (timeout after Redis ran the script) is not counted twice.

Everything is an integer (audio in milliseconds, money in micro-dollars): HINCRBY is exact,
floats would drift over millions of small charges.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Mapping

from gateway.errors import InvalidValue
from gateway.store import keys
from gateway.store.connection import RedisClient, translated

WINDOW_S = 60
WINDOW_TTL_S = 2 * WINDOW_S
APPLIED_TTL_S = 8 * 86400  # a buffered charge may be retried for days and still be caught
MAX_READ_DAYS = 400

# Totals every charge may carry besides the token classes of the usage.
TOKENS = "tokens"  # what counts against token budgets (usage total_tokens)
AUDIO_IN_MS = "audio_in_ms"
AUDIO_OUT_MS = "audio_out_ms"
COST_MICROS = "cost_micros"
RESPONSES = "responses"
SESSIONS = "sessions"
_RESERVED = frozenset({TOKENS, AUDIO_IN_MS, AUDIO_OUT_MS, COST_MICROS, RESPONSES, SESSIONS})
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SEP = "|"  # per-model fields are "<model>|<name>"; totals have no separator

# KEYS[1] day hash, KEYS[2] minute window, KEYS[3] applied ids.
# ARGV[1] charge id, ARGV[2] model, ARGV[3] window ttl, ARGV[4] applied ttl,
# ARGV[5] tokens for the window, then name/value pairs. Returns 1 if applied, 0 if a repeat.
_CHARGE = """
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[3], ARGV[4])
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], ARGV[2] .. '|' .. ARGV[i], ARGV[i + 1])
end
if tonumber(ARGV[5]) ~= 0 then
  redis.call('INCRBY', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
"""


def utc_day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def window_start(at: float) -> int:
    return int(at // WINDOW_S) * WINDOW_S


def new_charge_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True, slots=True)
class Charge:
    """One unit of usage to book: typically one ``response.done``, or a session's opening.

    ``at`` is when the usage happened (epoch seconds, the replica's clock): it picks the day
    and the minute window, so a charge buffered during a Redis outage lands where it belongs.
    """

    tenant_id: str
    model: str
    at: float
    tokens: int = 0
    usage: Mapping[str, int] = dataclasses.field(default_factory=dict)  # token classes
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    cost_micros: int = 0
    responses: int = 0
    sessions: int = 0
    charge_id: str = dataclasses.field(default_factory=new_charge_id)

    @property
    def day(self) -> str:
        return utc_day(self.at)

    def fields(self) -> dict[str, int]:
        """The integer increments this charge makes (zeros left out)."""
        out = {name: int(value) for name, value in self.usage.items()}
        for name in out:
            if name in _RESERVED or not _FIELD.match(name):
                raise ValueError(f"bad usage field name: {name!r}")
        out[TOKENS] = self.tokens
        out[AUDIO_IN_MS] = round(self.audio_in_seconds * 1000)
        out[AUDIO_OUT_MS] = round(self.audio_out_seconds * 1000)
        out[COST_MICROS] = self.cost_micros
        out[RESPONSES] = self.responses
        out[SESSIONS] = self.sessions
        return {name: value for name, value in out.items() if value}


@dataclasses.dataclass(frozen=True, slots=True)
class UsageTotals:
    tokens: int = 0
    usage: dict[str, int] = dataclasses.field(default_factory=dict)
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    cost_micros: int = 0
    responses: int = 0
    sessions: int = 0

    @classmethod
    def from_fields(cls, fields: Mapping[str, int]) -> UsageTotals:
        return cls(
            tokens=fields.get(TOKENS, 0),
            usage={k: v for k, v in sorted(fields.items()) if k not in _RESERVED},
            audio_in_seconds=fields.get(AUDIO_IN_MS, 0) / 1000,
            audio_out_seconds=fields.get(AUDIO_OUT_MS, 0) / 1000,
            cost_micros=fields.get(COST_MICROS, 0),
            responses=fields.get(RESPONSES, 0),
            sessions=fields.get(SESSIONS, 0),
        )

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class DayUsage:
    day: str
    totals: UsageTotals
    by_model: dict[str, UsageTotals]


def _split(raw: Mapping[str, str]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    totals: dict[str, int] = {}
    by_model: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        model, sep, name = field.rpartition(_SEP)
        if sep:
            by_model.setdefault(model, {})[name] = int(value)
        else:
            totals[name] = int(value)
    return totals, by_model


class Ledger:
    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._charge = client.register_script(_CHARGE)

    @translated
    async def charge(self, charge: Charge) -> bool:
        """Book a charge; False if this charge id was booked before (nothing changes)."""
        if not charge.model or len(charge.model) > 128:
            raise ValueError("a charge needs a model name")
        day = charge.day
        tid = charge.tenant_id
        pairs = [part for item in charge.fields().items() for part in (item[0], str(item[1]))]
        applied = await self._charge(
            keys=[
                keys.ledger_day(tid, day),
                keys.tokens_minute(tid, window_start(charge.at)),
                keys.charges_applied(tid, day),
            ],
            args=[charge.charge_id, charge.model, WINDOW_TTL_S, APPLIED_TTL_S, charge.tokens,
                  *pairs],
        )  # fmt: skip
        return bool(applied)

    @translated
    async def read(self, tenant_id: str, from_day: dt.date, to_day: dt.date) -> list[DayUsage]:
        """Usage of each day in the range (inclusive) that has any, oldest first."""
        span = (to_day - from_day).days + 1
        if span < 1 or span > MAX_READ_DAYS:
            raise InvalidValue(f"A usage range covers 1 to {MAX_READ_DAYS} days.", param="start")
        days = [(from_day + dt.timedelta(days=i)).isoformat() for i in range(span)]
        pipe = self._r.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(keys.ledger_day(tenant_id, day))
        rows = await pipe.execute()
        out = []
        for day, raw in zip(days, rows, strict=True):
            if raw:
                totals, by_model = _split(raw)
                out.append(
                    DayUsage(
                        day=day,
                        totals=UsageTotals.from_fields(totals),
                        by_model={m: UsageTotals.from_fields(f) for m, f in by_model.items()},
                    )
                )
        return out
