"""Events the gateway itself writes to a client: errors and the tenant's own rate limits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.errors import GatewayError

EventIds = Callable[[], str]


def error_event(error: GatewayError, event_id: str) -> bytes:
    """A realtime ``error`` event in OpenAI's shape; ``error.event_id`` echoes the client's id."""
    return orjson.dumps({"type": "error", "event_id": event_id, "error": error.realtime_error()})


def rate_limits_event(event_id: str, limits: Sequence[dict[str, Any]]) -> bytes:
    """``rate_limits.updated`` with the given entries (``name``, ``limit``, ``remaining``,
    ``reset_seconds``)."""
    return orjson.dumps(
        {"type": "rate_limits.updated", "event_id": event_id, "rate_limits": limits}
    )


def cancel_event(event_id: str, response_id: str | None) -> bytes:
    body: dict[str, Any] = {"type": "response.cancel", "event_id": event_id}
    if response_id:
        body["response_id"] = response_id
    return orjson.dumps(body)
