"""The two mint routes as bare ASGI endpoints, served ahead of FastAPI (see ``app.GatewayApp``).

Minting is the REST call made thousands of times a second (one token per front-end session).
Through FastAPI, Starlette's middleware stack (server errors, exception telemetry, body limit,
exceptions, exit stack), the router's matching against every route and FastAPI's request
handling cost more CPU than the mint itself. Here the API key is read from the scope's headers
by the same ``tenant_of`` as everywhere else, the body is read from ``receive`` (and refused as
soon as it passes the limit, not after buffering all of it), the answer goes out as two ASGI
messages, and refusals are rendered by the same ``error_response`` as every other route's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from gateway.api.deps import tenant_of
from gateway.api.errors import error_response
from gateway.api.tokens import MAX_BODY_BYTES, PATHS, Minter, body_too_large
from gateway.errors import GatewayError, InternalError
from gateway.store.tokens import Protocol

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.api")

_CONTENT_TYPE = (b"content-type", b"application/json")


class MintRoute:
    """``POST`` on one mint path; any other method goes through FastAPI's router."""

    def __init__(self, minter: Minter, protocol: Protocol) -> None:
        self._minter = minter
        self._protocol = protocol

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            tenant = await tenant_of(HTTPConnection(scope))
            raw = await _read_body(receive)
            if raw is None:
                return  # the client went away: nobody to answer
            answer = await self._minter.mint(tenant, self._protocol, raw)
        except GatewayError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception as exc:
            # As the app's catch-all handler does: logged here, a generic 500 to the client.
            log.error("unexpected error", exc_info=exc)
            await error_response(InternalError("The gateway had an internal error."))(
                scope, receive, send
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_CONTENT_TYPE, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (None if the client disconnected first)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise body_too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def mint_routes(svc: Services) -> dict[str, MintRoute]:
    """Route path -> its endpoint, for ``GatewayApp``."""
    minter = Minter(svc)
    return {path: MintRoute(minter, protocol) for path, protocol in PATHS.items()}
