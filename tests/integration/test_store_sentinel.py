"""The store reaches Redis through a real Sentinel (redis-server in sentinel mode)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.config import Settings
from gateway.store import open_store
from tests.support.servers import RedisServer, free_port, require_binary, wait_for_port


@pytest.fixture
def sentinel() -> Iterator[tuple[RedisServer, int]]:
    binary = require_binary("redis-server", "redis-server")
    with RedisServer().running() as master:
        port = free_port()
        workdir = Path(tempfile.mkdtemp(prefix="rgw-sentinel-"))
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor rgwmaster 127.0.0.1 {master.port} 1\n"
        )
        proc = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port)
            yield master, port
        finally:
            proc.terminate()
            proc.wait(5)


async def test_store_through_sentinel(sentinel: tuple[RedisServer, int]) -> None:
    master, sentinel_port = sentinel
    settings = Settings(
        redis_url=SecretStr(f"redis://127.0.0.1:{sentinel_port}"),
        redis_sentinel_master="rgwmaster",
        hash_secret=SecretStr("pepper-for-sentinel-test"),
    )
    store = await open_store(settings)
    try:
        deadline = time.monotonic() + 10
        while True:  # the sentinel needs a moment to learn its master
            try:
                await store.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        record, key = await store.tenants.create("via sentinel")
        assert (await store.tenants.authenticate(key)).id == record.id
    finally:
        await store.close()
    import redis

    direct = redis.Redis(port=master.port, decode_responses=True)
    try:
        assert direct.sismember("rgw:tenants", record.id)
    finally:
        direct.close()
