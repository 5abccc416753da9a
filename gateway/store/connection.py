"""The Redis client and the boundary where redis errors become gateway errors.

One code path serves three deployments: a real Redis (``redis_url``), a Redis Cluster
(``redis_cluster``) and, when no URL is set, fakeredis in process (same client API, Lua via
lupa), so the embedded quick start runs exactly the scripts production runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import urlparse

import hiredis
import redis.exceptions as rex
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.driver_info import DriverInfo

from gateway.config import Settings
from gateway.errors import InternalError, StoreUnavailable

RedisClient: TypeAlias = Redis | RedisCluster
Encodable: TypeAlias = str | int | float | bytes

ScriptCall: TypeAlias = tuple[AsyncScript, Sequence[str], Sequence[Encodable]]

P = ParamSpec("P")

MAX_CONNECTIONS = 128  # per replica (per node in a cluster, times four)
R = TypeVar("R")

# Errors that mean "Redis is not reachable right now" (as opposed to a bug in a command).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes BusyLoading, Authentication, MaxConnections
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.ClusterError,
    rex.TryAgainError,
    rex.MasterDownError,
    rex.ReadOnlyError,  # a replica promoted mid-failover
    rex.SlotNotCoveredError,
    OSError,
    TimeoutError,
)
# Error replies that mean "not now" rather than "never": out of memory, a long script running,
# a failing disk, too few replicas.
_UNAVAILABLE_REPLIES = ("OOM", "BUSY", "MISCONF", "NOREPLICAS", "MASTERDOWN", "LOADING")


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis exceptions raised inside the block (GatewayErrors pass through)."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable("The gateway's state store is unreachable; try again.") from exc
    except rex.ResponseError as exc:
        if str(exc).startswith(_UNAVAILABLE_REPLIES):
            raise StoreUnavailable("The gateway's state store is unavailable; try again.") from exc
        raise InternalError("The gateway's state store refused a command.") from exc
    except rex.RedisError as exc:
        # A command Redis refused (a script or key-type bug): not the client's fault, not
        # transient either; the chained exception keeps the detail for the log.
        raise InternalError("The gateway's state store refused a command.") from exc


def translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Decorator form of ``redis_errors`` for the public coroutines of the store."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with redis_errors():
            return await fn(*args, **kwargs)

    return wrapper


# Computed once: left to redis-py, every new pool connection builds its own, and that reads the
# installed package's metadata (importlib.metadata.version, milliseconds each), so a burst
# that grows the pool stalls the event loop for tens of milliseconds.
_DRIVER_INFO = DriverInfo()


class _LeanConnection(AbstractConnection):
    """A redis-py asyncio connection with two costs of its hot path taken out.

    * Commands are packed by hiredis in C, as redis-py's sync connections already do; its
      asyncio ones pack in Python, argument by argument (a token mint has 18).
    * A command is written without ``asyncio.wait_for``, which in Python 3.11 wraps the write
      in a new task (two loop turns and a timer per command). The write itself never waits:
      the transport buffers it. Only a full buffer makes ``drain`` wait, and only that wait
      needs the socket timeout, so only then is the stock path (timeout, error translation,
      disconnect) taken, with nothing left to write.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        writer = self._writer
        if (
            writer is None
            or self.health_check_interval
            or not isinstance(command, list)
            or writer.transport.is_closing()
        ):
            await super().send_packed_command(command, check_health)
            return
        transport = writer.transport
        writer.writelines(command)
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            await super().send_packed_command([], check_health=False)

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        # hiredis takes no bytearray; anything else it refuses, redis-py refuses too.
        args = tuple(bytes(a) if isinstance(a, bytearray) else a for a in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise rex.DataError(str(exc)) from exc


_LEAN: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _lean_connections(pool: ConnectionPool) -> None:
    """Make the pool's future connections lean (``_LeanConnection``) whatever class the URL
    chose: TCP, TLS, Unix socket or Sentinel-managed."""
    cls = pool.connection_class
    if not issubclass(cls, _LeanConnection):
        if cls not in _LEAN:
            _LEAN[cls] = type(f"Lean{cls.__name__}", (_LeanConnection, cls), {})
        pool.connection_class = _LEAN[cls]


def make_client(settings: Settings) -> RedisClient:
    if settings.redis_url is None:
        import fakeredis

        client: RedisClient = fakeredis.FakeAsyncRedis(decode_responses=True)
        return client
    timeout = settings.redis_timeout_seconds
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # redis-py's default retries back off up to seconds; a gateway must answer (or buffer)
        # within its own timeout, so retry twice, quickly, and then report the store as down.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        "driver_info": _DRIVER_INFO,
    }
    urls = [u.strip() for u in settings.redis_url.get_secret_value().split(",") if u.strip()]
    urls = [u if "://" in u else f"redis://{u}" for u in urls]
    if settings.redis_sentinel_master:
        sentinels = [_node_address(u) for u in urls]
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        # The master is looked up through the sentinels on every (re)connect, so a failover is
        # followed without a restart.
        master: Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            decode_responses=True,
            retry=options["retry"],
            driver_info=_DRIVER_INFO,
        )
        _lean_connections(master.connection_pool)
        return master
    if settings.redis_cluster:
        nodes = [_node(u) for u in urls[1:]]
        # The cluster client keeps a pool per node and has no blocking pool: size it for bursts.
        return RedisCluster.from_url(
            urls[0], startup_nodes=nodes or None, max_connections=4 * MAX_CONNECTIONS, **options
        )
    # A burst of concurrent calls (hundreds of sessions opening at once) waits for a free
    # connection, up to the store timeout, instead of failing at once as the default pool does.
    pool = BlockingConnectionPool.from_url(
        urls[0], max_connections=MAX_CONNECTIONS, timeout=timeout, **options
    )
    _lean_connections(pool)
    client = Redis(connection_pool=pool, retry=options["retry"])
    client.auto_close_connection_pool = True  # as from_url does: aclose() closes the pool
    return client


async def close_client(client: RedisClient) -> None:
    """Close a client and, for Sentinel, the connections to the sentinels themselves (closing
    the master client alone leaves them open)."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def _node_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 26379


def _node(url: str) -> ClusterNode:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379)


def text(value: bytes | str) -> str:
    """A reply as str (the client decodes responses; the types cannot know that)."""
    return value.decode() if isinstance(value, bytes) else value


def text_map(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def is_embedded(client: RedisClient) -> bool:
    return type(client).__module__.startswith("fakeredis")


async def run_pipelined(
    client: RedisClient,
    calls: Sequence[ScriptCall],
) -> list[Any]:
    """Run many script calls in one round trip (per node), reloading scripts Redis forgot.

    redis-py reloads a script on NOSCRIPT only for single calls; after a Redis restart or a
    SCRIPT FLUSH a pipelined EVALSHA fails instead, so the failed calls are re-run one by one
    (which loads the script again).
    """
    if not calls:
        return []
    if isinstance(client, RedisCluster):
        # redis-py refuses EVALSHA in cluster pipelines; concurrent calls over the per-node
        # pools cost about the same round trips.
        replies = await asyncio.gather(*(s(keys=list(k), args=list(a)) for s, k, a in calls))
        return list(replies)
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    results: list[Any] = await pipe.execute(raise_on_error=False)
    for i, result in enumerate(results):
        if isinstance(result, rex.NoScriptError):
            script, keys, args = calls[i]
            results[i] = await script(keys=list(keys), args=list(args))
        elif isinstance(result, Exception):
            raise result
    return results


# The prologue of every time-aware script: `now` in ms on Redis' own clock, so replicas with
# skewed clocks still agree on lease and token expiry.
_LUA_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""


def with_now(body: str) -> str:
    return _LUA_NOW + body


# HSET only when the hash exists: updates must not resurrect a deleted or expired record as a
# partial one. KEYS[1] hash; ARGV field/value pairs. Returns 1 if written.
LUA_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
