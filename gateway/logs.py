"""Structured logs: one JSON object per line, with the session's context, and no secrets.

Context travels in ``extra={...}`` (``session_id``, ``tenant``, ``replica``, ``upstream``,
``reason``, ``close_code``...). As a last line of defence every message and string field is
scrubbed of anything shaped like a key or token before it is written, so a careless log call
cannot leak one.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from typing import Any

import orjson

from gateway.config import LogFormat, Settings

_SECRET_SHAPES = re.compile(
    r"(ek_[A-Za-z0-9_-]{6,}|rgw_sk_[A-Za-z0-9_-]{6,}|sk-[A-Za-z0-9_-]{6,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{6,}|openai-insecure-api-key\.[^\s,\"']+)"
)
# A key given as a parameter or header whatever its shape (Azure keys are 32 hex characters):
# ``api-key=...`` in a logged URL, ``api-key: ...`` in a logged header. The name is kept.
_NAMED_SECRETS = re.compile(
    r"(?i)((?:api[-_]?key|client[-_]?secret|authorization|password)[\"']?\s*[=:]\s*[\"']?"
    r"(?:(?:basic|bearer|token)\s+)?)(?!\[redacted\])[^\s&,;\"']{6,}"
)
# Record attributes that are not context: the standard ones, and uvicorn's copy of the message
# with terminal colour codes.
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message", "asctime", "color_message",
}  # fmt: skip


def scrub(text: str) -> str:
    return _NAMED_SECRETS.sub(r"\1[redacted]", _SECRET_SHAPES.sub("[redacted]", text))


# Fields whose value is a secret whatever it looks like (a header or parameter by its name).
_SECRET_FIELDS = re.compile(
    r"(?i)^(api[-_]?key|authorization|password|secret|client[-_]?secret|access[-_]?token"
    r"|token|hash[-_]?secret|admin[-_]?key)$"
)
REDACTED = "[redacted]"


def _scrub_value(value: Any) -> Any:
    """A log field made safe: strings scrubbed, containers walked, anything else by its str."""
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _scrub_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v) for v in value]
    return scrub(str(value))


def _scrub_field(name: str, value: Any) -> Any:
    if value is not None and _SECRET_FIELDS.match(name):
        return REDACTED
    return _scrub_value(value)


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of a record (scrubbed)."""
    return {
        key: _scrub_field(key, value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "replica": self.replica,
        }
        entry.update(context_fields(record))
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = scrub(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=lambda v: scrub(str(v))).decode()


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...`` (the context fields follow the message)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = context_fields(record)
        if fields:
            text += " " + " ".join(
                f"{k}={orjson.dumps(v, default=str).decode()}" for k, v in fields.items()
            )
        return scrub(text)


class DeniedUpgradeFilter(logging.Filter):
    """Drops uvicorn's spurious error after a WebSocket denial response.

    uvicorn's ``websockets-sansio`` protocol never marks the handshake complete after an app
    answers an upgrade with an HTTP response (the ASGI denial extension), so every refused
    upgrade (401/403/429/503: expected traffic) also logs "ASGI callable returned without
    completing handshake." at ERROR, which pages whoever alerts on error logs. The gateway's
    WebSocket route always accepts or denies (an exception is logged as such), so this message
    only ever follows a denial. Upstream fix: https://github.com/Kludex/uvicorn/pull/3138.
    """

    MESSAGE = "ASGI callable returned without completing handshake."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self.MESSAGE


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(settings.replica_id))
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.access", "websockets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DeniedUpgradeFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DeniedUpgradeFilter())
