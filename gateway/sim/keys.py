"""The simulator's keys: its configured standard keys and the ephemeral ``ek_`` keys minted by
``POST /v1/realtime/client_secrets`` (or the beta ``/v1/realtime/sessions``).

An ephemeral key opens one WebSocket before it expires, then it is spent; its session
configuration becomes the session's starting point, and its budget is its parent key's.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gateway.sim.shapes import SessionConfig


@dataclass(frozen=True, slots=True)
class ClientSecret:
    value: str
    parent: str
    expires_at: int
    session: SessionConfig


@dataclass(frozen=True, slots=True)
class Credential:
    rate_key: str  # the standard key whose budget is spent
    secret: ClientSecret | None = None


class KeyRing:
    def __init__(self, api_keys: tuple[str, ...], wall: Callable[[], float]) -> None:
        self._standard = frozenset(api_keys)
        self._wall = wall
        self._secrets: dict[str, ClientSecret] = {}

    def is_standard(self, key: str | None) -> bool:
        return key is not None and key in self._standard

    def mint(self, parent: str, ttl_seconds: int, session: SessionConfig) -> ClientSecret:
        now = self._wall()
        # Spent and expired secrets go on each mint, so the table stays small.
        self._secrets = {k: s for k, s in self._secrets.items() if s.expires_at > now}
        secret = ClientSecret(
            "ek_" + secrets.token_hex(16), parent, int(now + ttl_seconds), session
        )
        self._secrets[secret.value] = secret
        return secret

    def redeem(self, key: str | None) -> Credential | None:
        """The credential behind ``key``; an ephemeral key is spent by this call."""
        if key is None:
            return None
        if key in self._standard:
            return Credential(key)
        secret = self._secrets.pop(key, None)
        if secret is None or secret.expires_at <= self._wall():
            return None
        return Credential(secret.parent, secret)
