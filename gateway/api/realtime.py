"""``GET /v1/realtime`` (and the Azure-style paths): admission, then the relay.

Every refusal is an HTTP answer to the upgrade (the ASGI WebSocket denial response), with a
JSON body in OpenAI's error shape and ``Retry-After`` where it applies.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket

from gateway.api.deps import services
from gateway.api.errors import error_response
from gateway.api.ws_peer import StarletteClientPeer
from gateway.errors import GatewayError, NotFound
from gateway.protocol.handshake import parse_handshake, split_subprotocols
from gateway.relay.admission import admit
from gateway.relay.lifecycle import run_session

router = APIRouter()
log = logging.getLogger("gateway.api.realtime")


async def realtime(ws: WebSocket) -> None:
    svc = services(ws)
    hs = parse_handshake(
        {k.lower(): v for k, v in ws.headers.items()},
        dict(ws.query_params),
        split_subprotocols(ws.headers.getlist("sec-websocket-protocol")),
    )
    try:
        admission = await admit(svc, hs)
    except GatewayError as err:
        svc.metrics.refused_upgrades.labels(err.code).inc()
        log.info("upgrade refused", extra={"status": err.http_status, "code": err.code})
        await ws.send_denial_response(error_response(err))
        return
    # The gateway's own session id (what /v1/sessions lists), for server-side clients; the
    # session.created event carries the upstream's.
    await ws.accept(
        subprotocol=hs.reply_subprotocol,
        headers=[(b"x-gateway-session-id", admission.session_id.encode())],
    )
    await run_session(svc, admission, StarletteClientPeer(ws))


async def unknown_websocket_route(ws: WebSocket) -> None:
    """An upgrade to any other path: a JSON 404 like an unknown REST route (Starlette's default
    is a bare 403 with no body, which reads as an authorization problem)."""
    await ws.send_denial_response(error_response(NotFound("Unknown route.")))


for path in ("/v1/realtime", "/openai/realtime", "/openai/v1/realtime"):
    router.add_api_websocket_route(path, realtime)
# Last: WebSocket routes only match WebSocket scopes, so REST routes are not shadowed.
router.add_api_websocket_route("/{path:path}", unknown_websocket_route)
