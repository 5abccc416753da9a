"""The simulator's HTTP/WebSocket surface (Starlette): auth, URL forms, REST, denials.

Refusals of an upgrade are HTTP answers (the WebSocket denial response extension), as the
real service answers a bad key with 401 before any frame.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.sim.config import SimConfig
from gateway.sim.connection import Connection, close_quietly
from gateway.sim.faults import (
    FAULT_HEADER,
    FAULT_QUERY_PARAM,
    Faults,
    FaultSyntaxError,
    parse_faults,
)
from gateway.sim.keys import Credential, KeyRing
from gateway.sim.ratelimits import RateLimitBook
from gateway.sim.session import SessionSetup, SimSession, beta_refusal_event
from gateway.sim.shapes import SessionConfig, apply_update, render_beta, render_ga
from gateway.sim.wire import Ids, Protocol, SimRequestError

log = logging.getLogger("gateway.sim")

Endpoint = Literal["openai", "azure_preview", "azure_ga"]
INSECURE_KEY_PREFIX = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


@dataclass(frozen=True, slots=True)
class LiveSession:
    id: str
    protocol: Protocol
    model: str
    endpoint: Endpoint


class SimHub:
    """What the connections of one simulator share: keys, budgets, the live-session registry."""

    def __init__(
        self,
        config: SimConfig,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.wall = wall
        self.keys = KeyRing(config.api_keys, wall)
        self.book = RateLimitBook(
            config.requests_limit, config.tokens_limit, config.reset_seconds, clock
        )
        self.sessions: dict[int, LiveSession] = {}
        self.internal_errors = 0  # unexpected exceptions: tests expect none
        self.ids = Ids(config.seed ^ 0xC0FFEE)
        self._connections = itertools.count()

    def next_seed(self) -> int:
        # Connection n of a simulator gets the same seed on every run with the same config.
        return self.config.seed * 1_000_003 + next(self._connections)


def create_sim_app(config: SimConfig, hub: SimHub | None = None) -> Starlette:
    app = Starlette(
        routes=[
            WebSocketRoute("/v1/realtime", _openai_ws),
            WebSocketRoute("/openai/realtime", _azure_preview_ws),
            WebSocketRoute("/openai/v1/realtime", _azure_ga_ws),
            Route("/v1/realtime/client_secrets", _client_secrets, methods=["POST"]),
            Route("/openai/v1/realtime/client_secrets", _client_secrets, methods=["POST"]),
            Route("/v1/realtime/sessions", _beta_sessions, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
        ]
    )
    app.state.hub = hub or SimHub(config)
    return app


# --- errors --------------------------------------------------------------------------------


def _error_body(
    message: str, code: str | None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _masked(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "*" * len(key)


def _unauthorized(key: str | None) -> tuple[int, dict[str, Any]]:
    if not key:
        return 401, _error_body(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
        )
    return 401, _error_body(
        f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
    )


def _status_body(status: int) -> dict[str, Any]:
    if status == 429:
        return _error_body("Rate limit reached (simulated).", "rate_limit_exceeded", "requests")
    if status >= 500:
        return _error_body("The server is overloaded (simulated).", None, "server_error")
    return _error_body(f"Request refused with status {status} (simulated).", None)


async def _deny(ws: WebSocket, status: int, body: dict[str, Any]) -> None:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    await ws.send_denial_response(JSONResponse(body, status_code=status, headers=headers))


# --- WebSocket -----------------------------------------------------------------------------


def _presented_key(ws: WebSocket | Request) -> str | None:
    auth = ws.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    if ws.headers.get("api-key"):
        return ws.headers["api-key"]
    if isinstance(ws, WebSocket):
        for proto in ws.scope.get("subprotocols", []):
            token = str(proto)[len(INSECURE_KEY_PREFIX) :]
            if proto.startswith(INSECURE_KEY_PREFIX) and token not in ("", "null"):
                return token
    return ws.query_params.get("api-key") or None


async def _openai_ws(ws: WebSocket) -> None:
    beta = "realtime=v1" in ws.headers.get("openai-beta", "") or BETA_SUBPROTOCOL in ws.scope.get(
        "subprotocols", []
    )
    await _serve(ws, "openai", "beta" if beta else "ga", ws.query_params.get("model"))


async def _azure_preview_ws(ws: WebSocket) -> None:
    version, deployment = ws.query_params.get("api-version"), ws.query_params.get("deployment")
    if not version or not deployment:
        await _deny(ws, 404, {"error": {"code": "404", "message": "Resource not found"}})
        return
    # Preview api-versions speak beta; the dated GA api-version (e.g. 2025-08-28) speaks GA.
    await _serve(ws, "azure_preview", "beta" if version.endswith("-preview") else "ga", deployment)


async def _azure_ga_ws(ws: WebSocket) -> None:
    if "api-version" in ws.query_params:
        body = _error_body("The api-version query parameter is not allowed on /openai/v1.", None)
        await _deny(ws, 401, body)
        return
    await _serve(ws, "azure_ga", "ga", ws.query_params.get("model"))


async def _serve(ws: WebSocket, endpoint: Endpoint, protocol: Protocol, model: str | None) -> None:
    hub: SimHub = ws.app.state.hub
    config = hub.config
    specs = ws.query_params.getlist(FAULT_QUERY_PARAM) + ws.headers.getlist(FAULT_HEADER)
    try:
        faults = parse_faults(specs, Faults.from_config(config))
    except FaultSyntaxError as exc:
        await _deny(ws, 400, _error_body(str(exc), "invalid_value"))
        return
    if faults.refuse_status is not None:
        await _deny(ws, faults.refuse_status, _status_body(faults.refuse_status))
        return
    key = _presented_key(ws)
    credential = hub.keys.redeem(key)
    if credential is None:
        await _deny(ws, *_unauthorized(key))
        return
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
    if protocol == "beta" and endpoint == "openai" and config.refuse_beta:
        await ws.send_text(orjson.dumps(beta_refusal_event(hub.ids)).decode())
        await ws.close(4000, "invalid_request_error.beta_api_shape_disabled")
        return
    await _run_session(ws, hub, endpoint, protocol, model, credential, faults)


async def _run_session(
    ws: WebSocket,
    hub: SimHub,
    endpoint: Endpoint,
    protocol: Protocol,
    model: str | None,
    credential: Credential,
    faults: Faults,
) -> None:
    preset = credential.secret.session if credential.secret is not None else None
    setup = SessionSetup(
        protocol=protocol,
        config=hub.config,
        faults=faults,
        rate_key=credential.rate_key,
        model=model or (preset.model if preset else hub.config.default_model),
        seed=hub.next_seed(),
        started_at=hub.wall(),
        preset=preset,
    )
    session = SimSession(setup, hub.book)
    token = id(session)
    hub.sessions[token] = LiveSession(session.cfg.id, protocol, session.cfg.model, endpoint)
    try:
        await Connection(ws, session, faults, hub.config.max_session_seconds).run()
    except Exception:
        hub.internal_errors += 1
        log.exception("simulated session %s failed", session.cfg.id)
        await close_quietly(ws, 1011, "internal error")
    finally:
        del hub.sessions[token]


# --- REST ----------------------------------------------------------------------------------


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _rest_auth(request: Request) -> tuple[str | None, JSONResponse | None]:
    key = _presented_key(request)
    hub: SimHub = request.app.state.hub
    if not hub.keys.is_standard(key):
        status, body = _unauthorized(key)
        return None, JSONResponse(body, status_code=status)
    return key, None


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise SimRequestError(
            "invalid_json", "We could not parse the JSON body of your request."
        ) from None
    if not isinstance(body, dict):
        raise SimRequestError("invalid_type", "The request body must be a JSON object.")
    return body


def _ttl(value: Any, param: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, dict) or value.get("anchor", "created_at") != "created_at":
        raise SimRequestError("invalid_value", f"Invalid '{param}'.", param)
    seconds = value.get("seconds", default)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 10 <= seconds <= 7200:
        raise SimRequestError(
            "invalid_value", "Expected a value between 10 and 7200.", f"{param}.seconds"
        )
    return seconds


def _new_session(hub: SimHub, model: Any) -> SessionConfig:
    chosen = model if isinstance(model, str) and model else hub.config.default_model
    return SessionConfig(hub.ids.new("sess"), chosen, 0, hub.config.default_voice)


async def _client_secrets(request: Request) -> Response:
    key, denied = await _rest_auth(request)
    if denied is not None or key is None:
        return denied or JSONResponse({}, status_code=401)
    hub: SimHub = request.app.state.hub
    try:
        body = await _json_body(request)
        for field in body:
            if field not in ("expires_after", "session"):
                raise SimRequestError("unknown_parameter", f"Unknown parameter: '{field}'.", field)
        ttl = _ttl(body.get("expires_after"), "expires_after", 600)
        patch = body.get("session") or {"type": "realtime"}
        cfg = _new_session(hub, patch.get("model") if isinstance(patch, dict) else None)
        cfg = apply_update(cfg, patch, "ga")
    except SimRequestError as err:
        return JSONResponse(err.body(), status_code=400)
    secret = hub.keys.mint(key, ttl, cfg)
    return JSONResponse(
        {"value": secret.value, "expires_at": secret.expires_at, "session": render_ga(cfg)}
    )


async def _beta_sessions(request: Request) -> Response:
    key, denied = await _rest_auth(request)
    if denied is not None or key is None:
        return denied or JSONResponse({}, status_code=401)
    hub: SimHub = request.app.state.hub
    try:
        body = await _json_body(request)
        client_secret = body.pop("client_secret", None)
        expires_after = (
            client_secret.get("expires_after") if isinstance(client_secret, dict) else None
        )
        ttl = _ttl(expires_after, "client_secret.expires_after", 60)
        cfg = apply_update(_new_session(hub, body.get("model")), body, "beta")
    except SimRequestError as err:
        return JSONResponse(err.body(), status_code=400)
    secret = hub.keys.mint(key, ttl, cfg)
    rendered = render_beta(cfg)
    rendered["client_secret"] = {"value": secret.value, "expires_at": secret.expires_at}
    return JSONResponse(rendered)
