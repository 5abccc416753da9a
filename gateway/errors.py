"""One error tree for the whole gateway, and one table that says how each error reaches a client.

Every refusal or failure a client can see is a ``GatewayError``. Where it surfaces decides its form:

* on a REST call or a refused WebSocket upgrade: an HTTP status with a JSON body in OpenAI's error
  shape ``{"error": {"message", "type", "param", "code"}}`` (plus ``Retry-After`` where it applies);
* inside a live session: a realtime ``error`` event, followed by a close code when the session
  cannot go on.

Third-party exceptions are translated at the adapter boundary (``raise StoreUnavailable(...) from
exc``) so that nothing above the adapters needs to know redis, websockets or httpx exist. Messages
are written for clients: they never carry secrets, tokens or upstream internals.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

# WebSocket close codes the gateway uses (RFC 6455 section 7.4.1, plus OpenAI's 4000).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_GATEWAY = 1014
CLOSE_BETA_DISABLED = 4000


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorForm:
    """How one kind of error is shown: HTTP status, close code, and the realtime error type/code."""

    http_status: int
    close_code: int | None  # None: the session can go on after the error event
    error_type: str
    code: str


class GatewayError(Exception):
    """Base of every error a client can see. Subclasses set ``form``; instances set the message."""

    form: ClassVar[ErrorForm] = ErrorForm(500, CLOSE_INTERNAL, "server_error", "internal_error")

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        client_event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.client_event_id = client_event_id

    @property
    def http_status(self) -> int:
        return self.form.http_status

    @property
    def close_code(self) -> int | None:
        return self.form.close_code

    @property
    def code(self) -> str:
        return self.form.code

    @property
    def error_type(self) -> str:
        return self.form.error_type

    def http_body(self) -> dict[str, Any]:
        """OpenAI's REST error shape."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def http_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Retry-After is whole seconds; never advertise 0 for a limit that is still in force.
        return {"Retry-After": str(max(1, int(-(-self.retry_after // 1))))}

    def realtime_error(self) -> dict[str, Any]:
        """The ``error`` object of a realtime ``error`` event (the caller adds the event id)."""
        return {
            "type": self.error_type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": self.client_event_id,
        }


# --- 400: the request itself is wrong -------------------------------------------------------


class InvalidRequest(GatewayError):
    """Malformed or semantically invalid input; the session (if any) stays open."""

    form = ErrorForm(400, None, "invalid_request_error", "invalid_request_error")


class InvalidEvent(InvalidRequest):
    """A client frame that is not a JSON object with a string ``type``."""

    form = ErrorForm(400, None, "invalid_request_error", "invalid_event")


class UnsupportedFrame(InvalidRequest):
    """A binary frame: the realtime protocol is JSON text only."""

    form = ErrorForm(400, None, "invalid_request_error", "unsupported_frame")


class FrameTooLarge(GatewayError):
    form = ErrorForm(413, CLOSE_TOO_BIG, "invalid_request_error", "frame_too_large")


class MissingParameter(InvalidRequest):
    form = ErrorForm(400, None, "invalid_request_error", "missing_required_parameter")


class InvalidValue(InvalidRequest):
    form = ErrorForm(400, None, "invalid_request_error", "invalid_value")


class UnknownParameter(InvalidRequest):
    form = ErrorForm(400, None, "invalid_request_error", "unknown_parameter")


class NotFound(GatewayError):
    form = ErrorForm(404, CLOSE_POLICY, "invalid_request_error", "not_found")


# --- 401 / 403: who is asking, and may they ----------------------------------------------------


class Unauthenticated(GatewayError):
    """No credential, or one that does not match (bad key, expired, replayed or unknown token)."""

    form = ErrorForm(401, CLOSE_POLICY, "invalid_request_error", "invalid_api_key")


class TokenExpired(Unauthenticated):
    form = ErrorForm(401, CLOSE_POLICY, "invalid_request_error", "token_expired")


class TokenAlreadyUsed(Unauthenticated):
    form = ErrorForm(401, CLOSE_POLICY, "invalid_request_error", "token_already_used")


class TenantDisabled(GatewayError):
    form = ErrorForm(403, CLOSE_POLICY, "invalid_request_error", "tenant_disabled")


class Forbidden(GatewayError):
    form = ErrorForm(403, CLOSE_POLICY, "invalid_request_error", "forbidden")


class OriginNotAllowed(Forbidden):
    form = ErrorForm(403, CLOSE_POLICY, "invalid_request_error", "origin_not_allowed")


class ModelNotAllowed(Forbidden):
    form = ErrorForm(403, CLOSE_POLICY, "invalid_request_error", "model_not_allowed")


class PolicyViolation(GatewayError):
    """A client event the tenant's policy forbids (locked field, event type not allowed).

    Answered with an error event; the session goes on.
    """

    form = ErrorForm(403, None, "invalid_request_error", "policy_violation")


# --- 429: over a limit ------------------------------------------------------------------------


class RateLimited(GatewayError):
    """A tenant limit (sessions, tokens, audio) or the upstream's headroom is exhausted."""

    form = ErrorForm(429, None, "rate_limit_error", "rate_limit_exceeded")


class SessionLimitReached(GatewayError):
    """The session's own duration limit: the session ends."""

    form = ErrorForm(429, CLOSE_POLICY, "invalid_request_error", "session_expired")


class SessionTerminated(GatewayError):
    """Ended from outside: by an administrator, by the tenant, or because the tenant was
    disabled."""

    form = ErrorForm(409, CLOSE_POLICY, "invalid_request_error", "session_terminated")


class SessionSlotLost(GatewayError):
    """The session's concurrency slot went to another session while Redis was unreachable."""

    form = ErrorForm(503, CLOSE_TRY_AGAIN_LATER, "server_error", "session_slot_lost")


class IdleTimeout(GatewayError):
    form = ErrorForm(408, CLOSE_POLICY, "invalid_request_error", "idle_timeout")


# --- 5xx: the gateway or what it depends on --------------------------------------------------


class Draining(GatewayError):
    """This replica is shutting down; the client should reconnect (to another replica)."""

    form = ErrorForm(503, CLOSE_RESTART, "server_error", "server_shutting_down")


class NoUpstream(GatewayError):
    form = ErrorForm(503, CLOSE_TRY_AGAIN_LATER, "server_error", "no_upstream")


class UpstreamUnavailable(GatewayError):
    """The upstream refused, timed out or died. Transient from the client's point of view."""

    form = ErrorForm(502, CLOSE_TRY_AGAIN_LATER, "server_error", "upstream_unavailable")


class UpstreamLost(GatewayError):
    """The upstream session died mid-session: the client should reconnect (1011 is one of the
    close codes the SDKs retry on)."""

    form = ErrorForm(502, CLOSE_INTERNAL, "server_error", "upstream_connection_lost")


class UpstreamRejected(GatewayError):
    """The upstream refused the gateway's own credential: an operator problem, not the client's."""

    form = ErrorForm(502, CLOSE_INTERNAL, "server_error", "upstream_rejected")


class StoreUnavailable(GatewayError):
    """Redis could not be reached where the decision needs it."""

    form = ErrorForm(503, CLOSE_TRY_AGAIN_LATER, "server_error", "store_unavailable")


class InternalError(GatewayError):
    form = ErrorForm(500, CLOSE_INTERNAL, "server_error", "internal_error")
