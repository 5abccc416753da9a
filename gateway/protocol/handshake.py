"""Reading a client's WebSocket handshake (pure): credential, protocol, model, origin.

Credentials, in order: ``Authorization: Bearer``, the ``api-key`` header (Azure style), the
``openai-insecure-api-key.<key>`` subprotocol (browsers cannot set headers), the ``api-key``
query parameter (old Azure browser clients). The reply selects subprotocol ``realtime`` only when
the client offered it: never the token, and never a protocol the client did not offer (Python
clients that offered none fail on any ``Sec-WebSocket-Protocol`` answer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."
BETA_PROTOCOL = "openai-beta.realtime-v1"


@dataclasses.dataclass(frozen=True, slots=True)
class Handshake:
    credential: str | None
    credential_source: Literal["authorization", "api-key", "subprotocol", "query"] | None
    beta_requested: bool
    offered_realtime: bool
    model: str | None
    origin: str | None

    @property
    def is_client_secret(self) -> bool:
        return self.credential is not None and self.credential.startswith("ek_")

    @property
    def reply_subprotocol(self) -> str | None:
        return "realtime" if self.offered_realtime else None


def split_subprotocols(header_values: Sequence[str]) -> list[str]:
    return [p.strip() for value in header_values for p in value.split(",") if p.strip()]


def parse_handshake(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    subprotocols: Sequence[str],
) -> Handshake:
    """``headers`` with lower-case names; ``subprotocols`` already split."""
    credential: str | None = None
    source: Literal["authorization", "api-key", "subprotocol", "query"] | None = None
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        credential, source = auth[7:].strip(), "authorization"
    elif headers.get("api-key", "").strip():
        credential, source = headers["api-key"].strip(), "api-key"
    else:
        for proto in subprotocols:
            if proto.startswith(KEY_PROTOCOL_PREFIX):
                value = proto[len(KEY_PROTOCOL_PREFIX) :]
                if value and value != "null":
                    credential, source = value, "subprotocol"
                    break
        if credential is None and query.get("api-key", "").strip():
            credential, source = query["api-key"].strip(), "query"
    beta = (
        headers.get("openai-beta", "").replace(" ", "").lower() == "realtime=v1"
        or BETA_PROTOCOL in subprotocols
    )
    model = query.get("model") or query.get("deployment") or None
    origin = headers.get("origin") or None
    return Handshake(credential, source, beta, "realtime" in subprotocols, model, origin)


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """No list: any origin (server-side clients send none). A list: the Origin must be in it."""
    if not allowed:
        return True
    if origin is None:
        return False
    return origin.rstrip("/") in {a.rstrip("/") for a in allowed}
