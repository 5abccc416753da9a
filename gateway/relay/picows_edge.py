"""The realtime data path on picows, inside the same uvicorn server as the REST API.

uvicorn parses every HTTP request; when one asks for a WebSocket upgrade it hands the socket and
the request to its configured WebSocket protocol class. This module provides that class: it
reads the request, runs the gateway's admission (async: Redis, the upstream handshake), and
then either answers with the HTTP refusal (status, OpenAI-shaped JSON body, ``Retry-After``) or
gives the socket to picows, whose Cython frame parser and writer carry the session. REST, the
admin API and the metrics stay on the ASGI app; only the hot path leaves it. Measured on this
machine, uvicorn + Starlette relay about 13k messages/s and picows about 44k.

picows validates the upgrade itself (version, key, accept hash) when the request is replayed
into it, so a malformed upgrade still gets its standard answer. Only the request line and the
headers that validation reads are replayed: picows keeps the parsed request for the whole
session, and the rest (the client's credential, cookies, user agent) is of no use to it.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

import orjson
from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from gateway.errors import GatewayError, InternalError, NotFound
from gateway.protocol.handshake import parse_handshake, split_subprotocols
from gateway.relay.admission import Admission, admit
from gateway.relay.lifecycle import run_session
from gateway.relay.picows_peer import PicowsPeer
from gateway.relay.picows_protocol import BoundedReadProtocol

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.edge")

REALTIME_PATHS = frozenset({"/v1/realtime", "/openai/realtime", "/openai/v1/realtime"})
_MAX_REQUEST = 64 * 1024
# A client sends 100 ms appends of 6.4 KiB; picows's buffer of 8 KiB takes one in one read
# (larger frames grow it, for that connection only).
CLIENT_READ_BUFFER = 8 * 1024 + 256
# What picows's upgrade validation reads; every other header is left out of the replay.
_REPLAYED = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"content-length",
        b"transfer-encoding",
    }
)


def parse_request(raw: bytes) -> tuple[str, dict[str, str], dict[str, str], list[str]]:
    """Path, headers (lower-case names; repeated ones joined with ", "), query, subprotocols."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    target = parts[1] if len(parts) >= 2 else "/"
    headers: dict[str, str] = {}
    protocols: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = name.strip().lower(), value.strip()
        if key == "sec-websocket-protocol":
            protocols.append(value)
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    return url.path, headers, query, split_subprotocols(protocols)


def replay_request(raw: bytes) -> bytes:
    """The upgrade as picows is shown it: the request line without its query, the headers its
    validation reads, and whatever the client sent after the request.

    ``Connection`` is given as ``Upgrade`` when the client's list holds that token (Firefox
    sends ``keep-alive, Upgrade``): uvicorn already required the token to hand the socket
    over, and picows only accepts the bare value.
    """
    head, _, tail = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) == 3:
        parts[1] = parts[1].split(b"?", 1)[0]
    kept = [b" ".join(parts)]
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if not sep or key not in _REPLAYED:
            continue
        if key == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            line = b"Connection: Upgrade" if b"upgrade" in tokens else line
        kept.append(line)
    return b"\r\n".join(kept) + b"\r\n\r\n" + tail


def http_refusal(error: GatewayError) -> bytes:
    body = orjson.dumps(error.http_body())
    status = error.http_status
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in error.http_headers().items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def realtime_edge(services: Services) -> type[asyncio.Protocol]:
    """The uvicorn ``ws`` protocol class bound to this gateway's services."""

    class RealtimeEdge(asyncio.Protocol):
        __slots__ = ("_buffer", "_task", "_transport")  # one per session, for its whole life

        def __init__(self, config: Any = None, server_state: Any = None, **_: Any) -> None:
            self._buffer = bytearray()
            self._transport: asyncio.Transport | None = None
            self._task: asyncio.Task[None] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's TCPTransport is not an asyncio.Transport subclass, only alike.
            self._transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            self._buffer += data
            if self._task is None and b"\r\n\r\n" in self._buffer:
                self._task = services.spawn(self._handle(), "edge-handshake")
            elif len(self._buffer) > _MAX_REQUEST and self._transport is not None:
                self._transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            pass  # a session in progress learns it from picows; an admission from the close

        async def _handle(self) -> None:
            transport = self._transport
            assert transport is not None
            admitted = await self._admit(transport)
            if admitted is None:
                return
            admission, reply_subprotocol = admitted
            peer = PicowsPeer(max_message=services.settings.max_frame_bytes)
            self._attach(transport, reply_subprotocol, admission.session_id, peer)
            # This coroutine lives as long as the session: it keeps nothing of the handshake.
            await run_session(services, admission, peer)

        async def _admit(self, transport: asyncio.Transport) -> tuple[Admission, str | None] | None:
            """The admission and the subprotocol to answer, or None once refused."""
            path, headers, query, protocols = parse_request(bytes(self._buffer))
            if path not in REALTIME_PATHS:
                self._refuse(transport, NotFound("Unknown route."))
                return None
            hs = parse_handshake(headers, query, protocols)
            try:
                return await admit(services, hs), hs.reply_subprotocol
            except GatewayError as err:
                self._refuse(transport, err)
            except Exception:
                log.exception("admission failed")
                self._refuse(transport, InternalError("The gateway had an internal error."))
            return None

        def _refuse(self, transport: asyncio.Transport, err: GatewayError) -> None:
            services.metrics.refused_upgrades.labels(err.code).inc()
            log.info("upgrade refused", extra={"status": err.http_status, "code": err.code})
            if not transport.is_closing():
                transport.write(http_refusal(err))
                transport.close()

        def _attach(
            self,
            transport: asyncio.Transport,
            reply_subprotocol: str | None,
            session_id: str,
            peer: PicowsPeer,
        ) -> None:
            """Give the socket to picows, which answers 101 and runs the frames from here."""
            extra = {"x-gateway-session-id": session_id}
            if reply_subprotocol is not None:
                extra["Sec-WebSocket-Protocol"] = reply_subprotocol

            def accept(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
                response = WSUpgradeResponse.create_101_response(extra_headers=extra)
                return WSUpgradeResponseWithListener(response, peer)

            protocol = BoundedReadProtocol(
                host_port=None,
                path=None,
                client_side=False,
                listener_factory=accept,
                max_frame_bytes=services.settings.max_frame_bytes,
                extra_headers=None,
                read_buffer=CLIENT_READ_BUFFER,
                handshake_timeout=5.0,
            )
            if transport.is_closing():
                # The client left during admission: the session starts and ends at once
                # (its record, lease and metrics are closed the usual way).
                peer.abandon()
                return
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            request = memoryview(replay_request(bytes(self._buffer)))
            self._buffer = bytearray()
            while request:  # replay the request in the chunks picows asks for
                buffer = memoryview(protocol.get_buffer(len(request)))
                size = min(len(buffer), len(request))
                buffer[:size] = request[:size]
                protocol.buffer_updated(size)
                request = request[size:]

        def eof_received(self) -> bool | None:
            return None

    return RealtimeEdge
