"""How records are shown over HTTP (never key hashes, never secrets)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.errors import InvalidValue
from gateway.store.ledger import DayUsage, UsageTotals
from gateway.store.sessions import SessionRecord
from gateway.store.tenants import TenantRecord


def tenant_view(tenant: TenantRecord) -> dict[str, Any]:
    return {
        "object": "tenant",
        **tenant.model_dump(exclude={"key_hashes"}),
        "keys": len(tenant.key_hashes),
    }


def session_view(record: SessionRecord) -> dict[str, Any]:
    return {"object": "realtime.gateway_session", **record.model_dump()}


def totals_view(totals: UsageTotals) -> dict[str, Any]:
    return {
        "tokens": totals.tokens,
        "token_classes": dict(totals.usage),
        "audio_in_seconds": round(totals.audio_in_seconds, 3),
        "audio_out_seconds": round(totals.audio_out_seconds, 3),
        "cost_usd": round(totals.cost_usd, 6),
        "responses": totals.responses,
        "sessions": totals.sessions,
    }


def usage_view(tenant_id: str, days: list[DayUsage]) -> dict[str, Any]:
    total = UsageTotals()
    for day in days:
        total = _add(total, day.totals)
    return {
        "object": "usage",
        "tenant_id": tenant_id,
        "total": totals_view(total),
        "days": [
            {
                "day": day.day,
                **totals_view(day.totals),
                "by_model": {m: totals_view(t) for m, t in sorted(day.by_model.items())},
            }
            for day in days
        ],
    }


def _add(a: UsageTotals, b: UsageTotals) -> UsageTotals:
    classes = dict(a.usage)
    for name, value in b.usage.items():
        classes[name] = classes.get(name, 0) + value
    return UsageTotals(
        tokens=a.tokens + b.tokens,
        usage=classes,
        audio_in_seconds=a.audio_in_seconds + b.audio_in_seconds,
        audio_out_seconds=a.audio_out_seconds + b.audio_out_seconds,
        cost_micros=a.cost_micros + b.cost_micros,
        responses=a.responses + b.responses,
        sessions=a.sessions + b.sessions,
    )


def day_range(start: str | None, end: str | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """``start``/``end`` as YYYY-MM-DD (inclusive); default: the last 7 days."""
    try:
        to_day = dt.date.fromisoformat(end) if end else today
        from_day = dt.date.fromisoformat(start) if start else to_day - dt.timedelta(days=6)
    except ValueError:
        raise InvalidValue("Dates are YYYY-MM-DD.", param="start") from None
    if from_day > to_day:
        raise InvalidValue("'start' is after 'end'.", param="start")
    return from_day, to_day
