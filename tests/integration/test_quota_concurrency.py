"""Issue 4: the concurrency limit of one tenant holds exactly across replicas (one real Redis),
slots free when a session ends, and the slots of a replica that dies free within the
heartbeat TTL."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from gateway.sim import SimConfig, SimServer
from tests.component.wsclient import TIMEOUT, RecordingProxy, bearer, recv
from tests.integration.test_quota_support import (
    Reachable,
    client,
    live_sessions,
    refused,
    sim_upstream,
    url_of,
)
from tests.support.gateway import (
    ADMIN_KEY,
    GatewayHandle,
    GatewayProcess,
    gateway_settings,
    run_gateway,
)
from tests.support.servers import free_port

K = 3  # max_concurrent_sessions
N = 10  # sessions asked for at once, half on each replica
HEARTBEAT_S = 0.5
HEARTBEAT_TTL_S = 2.0


Attempt = ClientConnection | tuple[int, str | None]


async def _try_open(stack: contextlib.AsyncExitStack, gateway: Reachable, key: str) -> Attempt:
    """An admitted session (kept open on ``stack``), or the refusal's (status, Retry-After)."""
    try:
        ws = await stack.enter_async_context(
            connect(
                url_of(gateway),
                additional_headers=bearer(key),
                open_timeout=TIMEOUT,
                compression=None,
            )
        )
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.headers.get("Retry-After")
    assert (await recv(ws))["type"] == "session.created"
    return ws


class LivePoller:
    """Polls ``GET /admin/sessions?tenant=`` of both replicas, alternately, as fast as they
    answer, and keeps the largest count seen."""

    def __init__(self, gateways: list[GatewayHandle], tenant_id: str) -> None:
        self.gateways, self.tenant_id = gateways, tenant_id
        self.max_live = 0
        self.polls = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            admins = [await stack.enter_async_context(g.admin()) for g in self.gateways]
            while True:
                await self.poll(admins[self.polls % len(admins)])
                await asyncio.sleep(0)

    async def poll(self, admin: httpx.AsyncClient) -> None:
        response = await admin.get("/admin/sessions", params={"tenant": self.tenant_id})
        assert response.status_code == 200, response.text
        self.max_live = max(self.max_live, len(response.json()["data"]))
        self.polls += 1

    async def more_polls(self, count: int) -> None:
        target = self.polls + count
        async with asyncio.timeout(TIMEOUT):
            while self.polls < target:
                await asyncio.sleep(0.005)

    async def __aenter__(self) -> LivePoller:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _live(gateway: GatewayHandle, tenant_id: str) -> int:
    return len(await live_sessions(gateway, tenant_id))


async def test_concurrency_limit_is_exact_across_two_replicas_and_slots_free(
    redis_url: str,
) -> None:
    s1 = gateway_settings(redis_url=redis_url, replica_id="replica-1")
    s2 = gateway_settings(redis_url=redis_url, replica_id="replica-2")
    async with run_gateway(s1) as g1, run_gateway(s2) as g2:
        tenant_id, key = await g1.create_tenant(name="conc", limits={"max_concurrent_sessions": K})
        async with contextlib.AsyncExitStack() as stack:
            async with LivePoller([g1, g2], tenant_id) as poller:
                await poller.more_polls(2)
                targets = [g1 if i % 2 else g2 for i in range(N)]
                during = poller.polls

                async def attempt(gateway: GatewayHandle) -> Attempt:
                    result = await _try_open(stack, gateway, key)
                    async with gateway.admin() as admin:  # each client looks, mid-burst
                        await poller.poll(admin)
                    return result

                results = await asyncio.gather(*(attempt(g) for g in targets))
                during = poller.polls - during
                await poller.more_polls(4)  # and with everything settled, on both replicas
            admitted = [r for r in results if not isinstance(r, tuple)]
            refusals = [r for r in results if isinstance(r, tuple)]
            assert len(admitted) == K
            assert refusals == [(429, "1")] * (N - K)
            assert during >= N  # at least one look per attempt, while others were admitted
            assert poller.max_live == K  # never K + 1, on either replica's view
            assert await _live(g1, tenant_id) == await _live(g2, tenant_id) == K
            live = await live_sessions(g2, tenant_id)
            assert {s["replica_id"] for s in live} <= {"replica-1", "replica-2"}

            # Full: one more is refused on either replica, with the JSON body and Retry-After.
            for gateway in (g1, g2):
                status, headers, body = await refused(url_of(gateway), key)
                assert (status, headers["retry-after"]) == (429, "1")
                assert body["error"]["code"] == "rate_limit_exceeded"
                assert f"limit {K}" in body["error"]["message"]

            # A session ends: its slot frees at once and the next one is admitted.
            first = admitted[0]
            assert isinstance(first, ClientConnection)
            await first.close()
            await _wait_live(g1, tenant_id, K - 1, timeout=5)
            replacement = await _try_open(stack, g2, key)
            assert isinstance(replacement, ClientConnection)
            assert await _live(g1, tenant_id) == K
            status, _, _ = await refused(url_of(g1), key)
            assert status == 429


async def test_slots_of_a_killed_replica_free_within_the_heartbeat_ttl(
    redis_url: str, process_log: Callable[[str], Path]
) -> None:
    settings = gateway_settings(
        redis_url=redis_url,
        replica_id="replica-1",
        heartbeat_seconds=HEARTBEAT_S,
        heartbeat_ttl_seconds=HEARTBEAT_TTL_S,
    )
    env = {
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_HASH_SECRET": "test-pepper-0123456789",
        "GATEWAY_REPLICA_ID": "replica-doomed",
        "GATEWAY_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
        "GATEWAY_HEARTBEAT_TTL_SECONDS": str(HEARTBEAT_TTL_S),
        "GATEWAY_SIM_SPEED": "0",
        "GATEWAY_LOG_FORMAT": "json",
    }
    doomed = GatewayProcess(env, process_log("gateway-doomed"))
    async with run_gateway(settings) as g1:
        tenant_id, key = await g1.create_tenant(
            name="conc-kill", limits={"max_concurrent_sessions": K}
        )
        await asyncio.to_thread(doomed.start)
        try:
            async with contextlib.AsyncExitStack() as stack:
                on_doomed = [await _try_open(stack, doomed, key) for _ in range(K)]
                assert all(isinstance(ws, ClientConnection) for ws in on_doomed)
                live = await live_sessions(g1, tenant_id)
                assert [s["replica_id"] for s in live] == ["replica-doomed"] * K
                assert (await refused(url_of(g1), key))[0] == 429

                # Let a few heartbeats renew the leases: they outlive the TTL while it lives.
                await asyncio.sleep(HEARTBEAT_TTL_S + HEARTBEAT_S)
                assert await _live(g1, tenant_id) == K

                doomed.signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await asyncio.to_thread(doomed.wait, 10)
                await _wait_live(g1, tenant_id, 0, timeout=HEARTBEAT_TTL_S + 2)
                freed_after = time.monotonic() - killed_at
                # Freed by lease expiry: not before the last renewal's TTL ran out
                # (renewed at most one heartbeat before the kill), and within the TTL.
                assert HEARTBEAT_TTL_S - HEARTBEAT_S - 0.3 <= freed_after <= HEARTBEAT_TTL_S + 0.3

                # The K slots are usable again on the surviving replica, and only K.
                again = [await _try_open(stack, g1, key) for _ in range(K + 1)]
                assert all(isinstance(ws, ClientConnection) for ws in again[:K])
                assert again[K] == (429, "1")
                live = await live_sessions(g1, tenant_id)
                assert [s["replica_id"] for s in live] == ["replica-1"] * K
        finally:
            doomed.stop()


async def _wait_live(gateway: GatewayHandle, tenant_id: str, count: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await _live(gateway, tenant_id) != count:
            await asyncio.sleep(0.02)


class SlowProxy(RecordingProxy):
    """An upstream that takes ``HANDSHAKE_S`` to accept a WebSocket."""

    async def _open_upstream(self, ws: ServerConnection, request: Request) -> Response | None:
        await asyncio.sleep(HANDSHAKE_S)
        return await super()._open_upstream(ws, request)


HANDSHAKE_S = 3.0  # longer than the lease TTL (2 s here; 6 s by default)


async def test_limit_holds_while_the_upstream_handshake_outlasts_the_lease_ttl(
    redis_url: str,
) -> None:
    """The lease is taken before the upstream is opened but the heartbeat renews only running
    sessions: a handshake longer than the lease TTL must not free the slot meanwhile."""
    async with (
        SimServer(SimConfig(api_keys=("sk-sim-slow",), speed=0)) as sim,
        SlowProxy(sim.http_url) as proxy,
    ):
        upstream = sim_upstream("sim", [("c", "sk-sim-slow", proxy.ws_url)])
        settings = gateway_settings(
            redis_url=redis_url,
            upstreams=[upstream],
            heartbeat_seconds=HEARTBEAT_S,
            heartbeat_ttl_seconds=HEARTBEAT_TTL_S,
        )
        async with run_gateway(settings) as gateway, contextlib.AsyncExitStack() as stack:
            tenant_id, key = await gateway.create_tenant(
                name="slow", limits={"max_concurrent_sessions": 1}
            )
            first = asyncio.create_task(stack.enter_async_context(client(gateway, key)))
            await asyncio.sleep(HEARTBEAT_TTL_S + 0.3)
            # The first session is still being admitted: its slot is taken all along.
            status, headers, _ = await refused(url_of(gateway), key)
            assert (status, headers["retry-after"]) == (429, "1")
            await first
            assert len(await live_sessions(gateway, tenant_id)) == 1
