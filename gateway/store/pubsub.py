"""Commands to replicas over Redis pub/sub: end one session, end all sessions of a tenant.

Pub/sub is at-most-once: a replica that is disconnected when a command is published misses
it. That is acceptable for these commands because the state they act on is also in Redis
(an ended tenant is disabled in its record; a session's lease can be released), and the
publisher learns how many replicas received the message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal

import redis.exceptions as rex
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from gateway.store import keys
from gateway.store.connection import RedisClient, redis_errors, translated

log = logging.getLogger(__name__)

Action = Literal["end_session", "end_tenant", "tenant_changed"]
_ACTIONS: frozenset[str] = frozenset({"end_session", "end_tenant", "tenant_changed"})
_RETRY_MAX_S = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class ControlCommand:
    action: Action
    tenant_id: str
    session_id: str | None = None
    reason: str = ""

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, data: str) -> ControlCommand | None:
        try:
            raw = json.loads(data)
            if raw.get("action") not in _ACTIONS or not isinstance(raw.get("tenant_id"), str):
                return None
            session_id = raw.get("session_id")
            return cls(
                action=raw["action"],
                tenant_id=raw["tenant_id"],
                session_id=session_id if isinstance(session_id, str) else None,
                reason=str(raw.get("reason") or ""),
            )
        except (ValueError, AttributeError):
            return None


class ControlChannel:
    def __init__(self, client: RedisClient) -> None:
        self._r = client

    @translated
    async def publish(self, command: ControlCommand) -> int:
        """Returns the number of subscribers (replicas) that received the command."""
        channel, message = keys.CONTROL_CHANNEL, command.encode()
        if isinstance(self._r, RedisCluster):
            # The cluster carries a message to every node, but PUBLISH counts the subscribers
            # of the node it ran on only, and redis-py sends it to any node. The replicas
            # subscribe on the node of the channel's slot (what ClusterPubSub picks): publish
            # there so that the count covers them all.
            await self._r.initialize()
            node = self._r.get_node_from_key(channel)
            return int(
                await self._r.execute_command("PUBLISH", channel, message, target_nodes=node)
            )
        return int(await self._r.publish(channel, message))

    async def publish_end_session(
        self, tenant_id: str, session_id: str, reason: str = "ended by an administrator"
    ) -> int:
        keys.check_session_id(session_id)
        return await self.publish(ControlCommand("end_session", tenant_id, session_id, reason))

    async def publish_end_tenant(self, tenant_id: str, reason: str = "tenant disabled") -> int:
        keys.check_tenant_id(tenant_id)
        return await self.publish(ControlCommand("end_tenant", tenant_id, None, reason))

    async def publish_tenant_changed(self, tenant_id: str) -> int:
        """Replicas drop what they cached of this tenant."""
        keys.check_tenant_id(tenant_id)
        return await self.publish(ControlCommand("tenant_changed", tenant_id, None, ""))

    def subscribe(self) -> ControlSubscription:
        """``async with channel.subscribe() as sub: async for command in sub: ...``"""
        return ControlSubscription(self._r)


class ControlSubscription:
    """Subscribed once entered; iterating yields commands until the block is left.

    Iteration survives Redis outages: it waits and reconnects (redis-py subscribes again on
    reconnect), so a replica's command loop never has to be restarted.
    """

    def __init__(self, client: RedisClient) -> None:
        self._r = client
        self._pubsub: PubSub | None = None

    async def __aenter__(self) -> ControlSubscription:
        with redis_errors():
            if isinstance(self._r, RedisCluster):
                # A cluster client learns the slot map on its first command, but its pub/sub
                # looks the channel's slot up without asking: before any other command it fails
                # with a KeyError (every replica logged that traceback once at start).
                await self._r.initialize()
            pubsub: PubSub = self._r.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(keys.CONTROL_CHANNEL)
        self._pubsub = pubsub
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def __aiter__(self) -> AsyncIterator[ControlCommand]:
        return self._commands()

    async def get(self, wait_s: float) -> ControlCommand | None:
        """The next command, or None when none arrives within ``wait_s`` seconds."""
        assert self._pubsub is not None, "use `async with` first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (left := deadline - loop.time()) > 0:
            message = await self._pubsub.get_message(timeout=left)
            command = _command(message)
            if command is not None:
                return command
        return None

    async def _commands(self) -> AsyncIterator[ControlCommand]:
        delay = 0.05
        while self._pubsub is not None:
            try:
                command = await self.get(wait_s=1.0)
                delay = 0.05
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                log.warning("control channel: redis unreachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if command is not None:
                yield command


def _command(message: dict[str, Any] | None) -> ControlCommand | None:
    if message is None or message.get("type") != "message":
        return None
    command = ControlCommand.decode(message["data"])
    if command is None:
        log.warning("control channel: ignored a malformed command")
    return command
