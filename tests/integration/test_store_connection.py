"""The Redis client ``make_client`` builds, against a real redis-server: commands packed by
hiredis, written without a task per command, the pool's short way to an idle connection, and
the driver info computed once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.exceptions as rex
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from gateway.config import Settings
from gateway.store.connection import MAX_CONNECTIONS, make_client


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    made = make_client(Settings(redis_url=SecretStr(redis_url)))
    assert isinstance(made, Redis)
    yield made
    await made.aclose()


def _lean_connection_class() -> type[Connection]:
    """The class of the connections a client for a plain redis:// URL makes (none is made)."""
    pool: Any = make_client(Settings(redis_url=SecretStr("redis://127.0.0.1:1"))).connection_pool
    cls: type[Connection] = pool.connection_class
    assert cls is not Connection
    assert issubclass(cls, Connection)
    return cls


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("CONFIG GET", "maxmemory"),
        (b"CLIENT SETNAME", b"x"),
        (
            "EVALSHA",
            "ab" * 20,
            1,
            "key",
            60000,
            0.25,
            1e16,
            -3,
            "é",
            b"\x00\xff",
            memoryview(b"mv"),
        ),
        ("SET", "k", bytearray(b"ba")),
        ("SET", "k", "x" * 10_000),
    ],
)
def test_packing_matches_redis_py(args: tuple[Any, ...]) -> None:
    lean = _lean_connection_class()
    assert b"".join(lean().pack_command(*args)) == b"".join(
        bytes(part) for part in Connection().pack_command(*args)
    )


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_packing_refuses_what_redis_py_refuses(bad: object) -> None:
    lean = _lean_connection_class()
    with pytest.raises(rex.DataError):
        lean().pack_command("SET", "k", bad)
    with pytest.raises(rex.DataError):
        Connection().pack_command("SET", "k", bad)


async def test_commands_and_scripts_round_trip(client: Redis) -> None:
    assert await client.set("k", "v") is True
    assert await client.get("k") == "v"
    script = client.register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    assert await script(keys=["a"], args=["é", 41]) == ["a", "é", 42]
    with pytest.raises(rex.ResponseError):
        await client.execute_command("NOSUCHCOMMAND")
    assert await client.get("k") == "v"  # the connection is still in step after an error


async def test_a_write_larger_than_the_transport_buffer(client: Redis) -> None:
    # Past the transport's high-water mark the write waits for the buffer to drain, the stock
    # way (with the socket timeout).
    value = "x" * (8 * 1024 * 1024)
    assert await client.set("big", value) is True
    assert await client.strlen("big") == len(value)


async def test_killed_connections_are_replaced(client: Redis) -> None:
    await asyncio.gather(*(client.incr("n") for _ in range(20)))
    idle = len(client.connection_pool._available_connections)
    assert idle >= 2
    # The server drops every client connection: each idle one is found closed when handed
    # out, and reconnected instead of failing the command.
    await client.client_kill_filter(_type="normal", skipme=False)
    results = await asyncio.gather(*(client.incr("n") for _ in range(idle)))
    assert sorted(results) == list(range(21, 21 + idle))  # each ran once


async def test_more_callers_than_connections_all_get_one(client: Redis) -> None:
    callers = 3 * MAX_CONNECTIONS
    results = await asyncio.gather(*(client.incr("c") for _ in range(callers)))
    assert sorted(results) == list(range(1, callers + 1))
    pool = client.connection_pool
    assert len(pool._in_use_connections) == 0
    assert len(pool._available_connections) <= MAX_CONNECTIONS


async def test_connections_share_one_driver_info(client: Redis) -> None:
    # Built per connection, it reads the package metadata (milliseconds) on the event loop.
    await asyncio.gather(*(client.incr("d") for _ in range(10)))
    pool: Any = client.connection_pool
    infos = {id(c.driver_info) for c in pool._available_connections}
    assert len(pool._available_connections) > 1
    assert len(infos) == 1
    assert pool._available_connections[0].driver_info.formatted_name == "redis-py"
