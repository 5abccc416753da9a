"""Opening the upstream WebSocket with the gateway's own credential.

The URL form, the auth header and the protocol follow the upstream's kind (reference section 1
and 5): OpenAI and the simulator take ``Authorization: Bearer`` on ``/realtime?model=``; Azure
preview takes ``api-key`` on ``/realtime?api-version=&deployment=`` and speaks beta; Azure GA
takes ``api-key`` on ``/realtime?model=``. Nothing from the client's handshake is forwarded:
not its credential, not its subprotocols, not its extensions. The connection is a picows
client (no permessage-deflate on this hop: audio does not compress).
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import Literal
from urllib.parse import urlencode

from picows import WSError, WSHandshakeError, WSInvalidStatusError, ws_connect

from gateway.config import Credential, UpstreamConfig, UpstreamKind
from gateway.errors import RateLimited, UpstreamRejected, UpstreamUnavailable
from gateway.relay.picows_peer import PicowsPeer

USER_AGENT = "realtime-gateway/0.1"


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
        await ws_connect(
            lambda: peer,
            url,
            ssl_context=_SSL if url.startswith("wss:") else None,
            websocket_handshake_timeout=timeout,
            max_frame_size=max_frame_bytes,
            extra_headers=headers,
            max_redirects=0,  # a redirect would carry the key to another host
            enable_auto_ping=True,
            auto_ping_idle_timeout=20,
            auto_ping_reply_timeout=20,
        )
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
