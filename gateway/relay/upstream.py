"""Opening the upstream WebSocket with the gateway's own credential.

The URL form, the auth header and the protocol follow the upstream's kind (reference section 1
and 5): OpenAI and the simulator take ``Authorization: Bearer`` on ``/realtime?model=``; Azure
preview takes ``api-key`` on ``/realtime?api-version=&deployment=`` and speaks beta; Azure GA
takes ``api-key`` on ``/realtime?model=``. Nothing from the client's handshake is forwarded:
not its credential, not its subprotocols, not its extensions. The connection is a picows
client (no permessage-deflate on this hop: audio does not compress), opened here rather than
by ``picows.ws_connect`` so that it reads through ``BoundedReadProtocol`` (see there); what
``ws_connect`` adds, proxies and redirects, is not wanted (a redirect would carry the key to
another host).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from typing import Any, Literal
from urllib.parse import urlencode

import aiofastnet
from picows import WSError, WSHandshakeError, WSInvalidStatusError
from picows.url import parse_url

from gateway.config import Credential, UpstreamConfig, UpstreamKind
from gateway.errors import RateLimited, UpstreamRejected, UpstreamUnavailable
from gateway.relay.picows_peer import PicowsPeer
from gateway.relay.picows_protocol import BoundedReadProtocol

USER_AGENT = "realtime-gateway/0.1"
# The upstream's audio deltas are up to 13 KiB (200 ms of audio): picows's 16 KiB buffer takes
# one in one read (larger frames grow it, for that connection only).
UPSTREAM_READ_BUFFER = 16 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """One upstream credential chosen for a session."""

    upstream: UpstreamConfig
    credential: Credential

    @property
    def protocol(self) -> Literal["ga", "beta"]:
        return self.upstream.speaks


def upstream_request(
    target: UpstreamTarget, model: str, *, beta_header: bool
) -> tuple[str, dict[str, str]]:
    """The URL and headers of the upstream handshake (pure)."""
    upstream = target.upstream
    base = (target.credential.url or upstream.url).rstrip("/")
    key = target.credential.api_key.get_secret_value()
    headers: dict[str, str] = {"User-Agent": USER_AGENT}
    if upstream.kind is UpstreamKind.AZURE_PREVIEW:
        query = {"api-version": upstream.api_version, "deployment": model}
        headers["api-key"] = key
    elif upstream.kind is UpstreamKind.AZURE_GA:
        query = {"model": model}
        headers["api-key"] = key
    else:
        query = {"model": model}
        headers["Authorization"] = f"Bearer {key}"
        if beta_header:
            headers["OpenAI-Beta"] = "realtime=v1"
    return f"{base}/realtime?{urlencode(query)}", headers


_SSL = ssl.create_default_context()


async def open_upstream(
    target: UpstreamTarget, model: str, *, timeout: float, max_frame_bytes: int
) -> PicowsPeer:
    """Connect, or raise a GatewayError that says whose fault it is (never the key)."""
    url, headers = upstream_request(target, model, beta_header=target.protocol == "beta")
    name = target.upstream.name
    peer = PicowsPeer(max_message=max_frame_bytes)
    try:
        await connect(url, headers, peer, timeout=timeout, max_frame_bytes=max_frame_bytes)
    except WSInvalidStatusError as exc:
        status = int(exc.response.status) if exc.response is not None else 0
        if status in (401, 403):
            raise UpstreamRejected(
                f"The upstream '{name}' refused the gateway's credential."
            ) from None
        if status == 429:
            raise RateLimited(f"The upstream '{name}' is rate limited.", retry_after=5) from None
        raise UpstreamUnavailable(
            f"The upstream '{name}' answered the connection with HTTP {status}."
        ) from None
    except TimeoutError:
        raise UpstreamUnavailable(f"The upstream '{name}' did not answer in time.") from None
    except (OSError, WSHandshakeError, WSError) as exc:
        raise UpstreamUnavailable(
            f"The upstream '{name}' could not be reached ({type(exc).__name__})."
        ) from None
    return peer


async def connect(
    url: str, headers: dict[str, str], peer: PicowsPeer, *, timeout: float, max_frame_bytes: int
) -> None:
    """Open the WebSocket to ``url`` with ``peer`` as its listener; picows's errors as they are.

    TLS goes through aiofastnet's transport, as ``ws_connect`` would; a plain connection
    through the loop's own (uvloop's), which holds about 5 KiB less per connection.
    """
    parsed = parse_url(url)

    def protocol_factory() -> BoundedReadProtocol:
        return BoundedReadProtocol(
            host_port=parsed.netloc,
            path=parsed.resource_name,
            client_side=True,
            listener_factory=lambda request, response: peer,
            max_frame_bytes=max_frame_bytes,
            extra_headers=headers,
            read_buffer=UPSTREAM_READ_BUFFER,
            handshake_timeout=timeout,
        )

    loop = asyncio.get_running_loop()
    protocol: Any
    if parsed.is_secure:
        _, protocol = await aiofastnet.create_connection(
            loop, protocol_factory, parsed.host, parsed.port, ssl=_SSL
        )
    else:
        _, protocol = await loop.create_connection(protocol_factory, parsed.host, parsed.port)
    try:
        await protocol.wait_until_handshake_complete()
    except BaseException:
        protocol.transport.disconnect()  # also when the caller gave up waiting
        raise
