"""Issue 7: three gateway replicas behind nginx, sharing a real 3-master Redis Cluster.

Several tenants, each with a concurrency limit, open many sessions at once through nginx
(round robin over the replicas) and converse in a loop; one replica is SIGKILLed in the middle.
The test shows that:

* exactly ``LIMIT`` sessions per tenant are admitted across all replicas, the rest get HTTP 429;
* the killed replica's clients are disconnected with a close the SDKs retry (1006, 1011,
  1012, 1013) and no other client is;
* the dead replica's leases are reaped within the heartbeat TTL (+1 s of polling slack), and
  exactly the slots it held are then given to new sessions, which all land on survivors;
* the live count of every tenant, polled all along both in the Redis Cluster itself (the lease
  set) and through ``GET /admin/sessions``, is never above its limit;
* the ledger (``GET /v1/usage`` through nginx) holds every turn whose ``response.done`` a
  client received; it may also hold turns that were in flight on the killed replica, at most
  their bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.cluster import RedisClusterServer
from tests.support.gateway import ADMIN_KEY, GatewayProcess
from tests.support.nginx import NginxBalancer
from tests.support.realtime import RealtimeClient, mint, realtime
from tests.support.servers import free_port, stop_process, wait_for_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

PEPPER = "test-pepper-0123456789"
SIM_KEY = "sk-sim-cluster-upstream"
REPLICAS = ("replica-a", "replica-b", "replica-c")
TENANTS = ("rc-acme", "rc-globex", "rc-initech")
LIMIT = 4  # max_concurrent_sessions of every tenant
ATTEMPTS = 8  # sessions asked for at once per tenant, in each wave
HEARTBEAT_S = 0.5
HEARTBEAT_TTL_S = 2.0
# Text deltas (two words each) are paced at 20 ms x speed: a reply capped at
# MAX_OUTPUT_TOKENS then streams for most of a second, so a kill finds turns in flight.
SIM_SPEED = 4.0
MAX_OUTPUT_TOKENS = 30
TEXT = "Tell me one short thing about load balancers, please."
SESSION = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"]}
# Close codes the SDKs (and the gateway's own error table) treat as "reconnect": abnormal
# closure (a dropped connection), internal error, service restart, try again later.
RETRYABLE_CLOSES = {1006, 1011, 1012, 1013}
TIMEOUT = 15.0


def turn_bound(previous_total: int) -> int:
    """The most one turn can cost given the previous turn's total in the same session: the
    whole context is read again (the previous turn's input and output), plus the new user
    message (at most one token per character, plus framing) and a capped reply. Checked
    against every turn the clients receive, then used for turns lost in flight."""
    return previous_total + len(TEXT) + 16 + MAX_OUTPUT_TOKENS


# --- processes -----------------------------------------------------------------------------


class SimProcess:
    """``realtime-gateway sim`` on its own (the upstream every replica talks to)."""

    def __init__(self, log_path: Path, speed: float) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.speed = speed
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SimProcess:
        exe = Path(sys.executable).parent / "realtime-gateway"
        args = [str(exe), "sim", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*args, "--speed", str(self.speed)],
                env={**os.environ, "SIM_API_KEY": SIM_KEY},
                stdout=log,
                stderr=log,
            )
        wait_for_port(self.port, timeout=20)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


@dataclasses.dataclass
class Deployment:
    cluster: RedisClusterServer
    sim: SimProcess
    replicas: dict[str, GatewayProcess]
    lb: NginxBalancer


@pytest.fixture
def deployment(process_log: Callable[[str], Path]) -> Iterator[Deployment]:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(RedisClusterServer().running())
        sim = SimProcess(process_log("cluster-sim"), SIM_SPEED)
        stack.callback(sim.stop)
        sim.start()
        replicas: dict[str, GatewayProcess] = {}
        for replica_id in REPLICAS:
            env = {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(free_port()),
                "GATEWAY_REDIS_URL": cluster.url,
                "GATEWAY_REDIS_CLUSTER": "true",
                "GATEWAY_REPLICA_ID": replica_id,
                "GATEWAY_ADMIN_KEY": ADMIN_KEY,
                "GATEWAY_HASH_SECRET": PEPPER,
                "GATEWAY_UPSTREAM_KIND": "sim",
                "GATEWAY_UPSTREAM_URL": f"ws://127.0.0.1:{sim.port}/v1",
                "GATEWAY_UPSTREAM_API_KEY": SIM_KEY,
                "GATEWAY_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
                "GATEWAY_HEARTBEAT_TTL_SECONDS": str(HEARTBEAT_TTL_S),
                "GATEWAY_DRAIN_SECONDS": "1",
                "GATEWAY_LOG_FORMAT": "json",
                "GATEWAY_LOG_LEVEL": "info",
            }
            process = GatewayProcess(env, process_log(f"cluster-{replica_id}"))
            stack.callback(process.stop)
            replicas[replica_id] = process
        # Start the three at once (each import takes a while on a small machine).
        with concurrent.futures.ThreadPoolExecutor(len(replicas)) as pool:
            for future in [pool.submit(p.start) for p in replicas.values()]:
                future.result()
        lb = stack.enter_context(
            NginxBalancer(
                [p.port for p in replicas.values()], error_log=process_log("cluster-nginx")
            ).running()
        )
        yield Deployment(cluster, sim, replicas, lb)


# --- clients -------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Conversation:
    """One session asked for by a front end, and everything its client saw."""

    tenant: str
    wave: str
    status: int | None = None  # 101 when admitted, else the HTTP status of the refusal
    refusal_code: str | None = None
    totals: list[int] = dataclasses.field(default_factory=list)  # usage of each response.done
    seconds: list[float] = dataclasses.field(default_factory=list)  # duration of each turn
    in_flight_bound: int = 0  # while a turn is in flight: the most it can cost
    close_code: int | None = None  # set when the connection ended without being asked to
    dropped_at: float | None = None
    finished: bool = False  # ended by the client itself after its last turn

    @property
    def admitted(self) -> bool:
        return self.status == 101


async def converse(ws_url: str, token: str, conv: Conversation, stop: asyncio.Event) -> None:
    """Open a session and do text turns until ``stop``; a refusal or a drop is recorded."""
    try:
        async with realtime(ws_url, token) as client:
            conv.status = 101
            try:
                await client.until("session.created", TIMEOUT)
                while not stop.is_set():
                    await _turn(client, conv)
            except ConnectionClosed:
                conv.dropped_at = time.monotonic()
                conv.close_code = client.ws.close_code
                return
        conv.finished = True
    except InvalidStatus as exc:
        conv.status = exc.response.status_code
        body = json.loads(exc.response.body or b"{}")
        conv.refusal_code = body.get("error", {}).get("code")


async def _turn(client: RealtimeClient, conv: Conversation) -> None:
    conv.in_flight_bound = turn_bound(conv.totals[-1]) if conv.totals else 0
    started = time.monotonic()
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": TEXT}],
            },
        }
    )
    await client.send(
        {"type": "response.create", "response": {"max_output_tokens": MAX_OUTPUT_TOKENS}}
    )
    done = (await client.until("response.done", TIMEOUT))[-1]
    conv.totals.append(int(done["response"]["usage"]["total_tokens"]))
    conv.seconds.append(time.monotonic() - started)
    conv.in_flight_bound = 0
    client.events.clear()  # keep memory flat over many turns


class Wave:
    """``ATTEMPTS`` sessions per tenant asked for at once."""

    def __init__(self, name: str, ws_url: str, stop: asyncio.Event) -> None:
        self.name, self.ws_url, self.stop = name, ws_url, stop
        self.conversations: list[Conversation] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def launch(self, http_url: str, keys: dict[str, str]) -> None:
        tokens = {
            t: await asyncio.gather(*(mint(http_url, keys[t], SESSION) for _ in range(ATTEMPTS)))
            for t in TENANTS
        }
        for tenant in TENANTS:
            for token in tokens[tenant]:
                conv = Conversation(tenant, self.name)
                self.conversations.append(conv)
                task = asyncio.create_task(converse(self.ws_url, token, conv, self.stop))
                self.tasks.append(task)
        await until(
            lambda: all(c.status is not None for c in self.conversations), "upgrades", waves=[self]
        )

    def admitted(self, tenant: str | None = None) -> list[Conversation]:
        return [c for c in self.conversations if c.admitted and tenant in (None, c.tenant)]

    def refused(self, tenant: str) -> list[Conversation]:
        return [c for c in self.conversations if c.tenant == tenant and not c.admitted]

    def check_tasks(self) -> None:
        """A client task that failed (timeout, error event) fails the test at once."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def close(self) -> None:
        for task in self.tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def until(
    condition: Callable[[], bool], what: str, timeout: float = TIMEOUT, waves: Sequence[Wave] = ()
) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        for wave in waves:
            wave.check_tasks()
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# --- observers -----------------------------------------------------------------------------


class LiveCountWatch:
    """Polls the live count of every tenant for the whole test, two ways: the lease set in the
    Redis Cluster itself (what admission counts; members whose expiry is still ahead) and the
    gateway's ``GET /admin/sessions`` through nginx. Keeps the maximum of each."""

    def __init__(self, cluster_url: str, admin: httpx.AsyncClient) -> None:
        self.redis = RedisCluster.from_url(cluster_url.split(",")[0], decode_responses=True)
        self.admin = admin
        self.max_leases: Counter[str] = Counter()
        self.max_listed: Counter[str] = Counter()
        self.polls = 0
        self.listings = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._leases()), asyncio.create_task(self._listed())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    async def _leases(self) -> None:
        while True:
            seconds, micros = await self.redis.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            for tenant in TENANTS:
                live = await self.redis.zcount(f"rgw:{{t:{tenant}}}:leases", f"({now_ms}", "+inf")
                self.max_leases[tenant] = max(self.max_leases[tenant], live)
            self.polls += 1
            await asyncio.sleep(0.02)

    async def live_replicas(self) -> set[str]:
        """Replicas whose heartbeat has not expired (the ``rgw:replicas`` sorted set)."""
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        members = await self.redis.zrangebyscore("rgw:replicas", f"({now_ms}", "+inf")
        return {m for m in members if isinstance(m, str)}

    async def _listed(self) -> None:
        while True:
            sessions = await list_sessions(self.admin)
            for tenant, count in Counter(s["tenant_id"] for s in sessions).items():
                self.max_listed[tenant] = max(self.max_listed[tenant], count)
            self.listings += 1
            await asyncio.sleep(0.05)

    def check(self) -> None:
        over = {
            t: (self.max_leases[t], self.max_listed[t])
            for t in TENANTS
            if max(self.max_leases[t], self.max_listed[t]) > LIMIT
        }
        assert not over, f"live sessions above the limit {LIMIT} (leases, listed): {over}"


async def list_sessions(admin: httpx.AsyncClient, tenant: str | None = None) -> list[Any]:
    params = {"tenant": tenant} if tenant else {}
    response = await admin.get("/admin/sessions", params=params)
    assert response.status_code == 200, response.text
    data: list[Any] = response.json()["data"]
    return data


# --- the test ------------------------------------------------------------------------------


async def test_three_replicas_behind_nginx_survive_a_sigkill(deployment: Deployment) -> None:
    started = time.monotonic()
    lb = deployment.lb
    stop = asyncio.Event()
    waves: list[Wave] = []
    async with (
        httpx.AsyncClient(
            base_url=lb.http_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        ) as admin,
        httpx.AsyncClient(base_url=lb.http_url, timeout=10) as http,
    ):
        for process in deployment.replicas.values():
            await _ready(http, process.http_url)
        keys = {t: await _create_tenant(admin, t) for t in TENANTS}
        watch = LiveCountWatch(deployment.cluster.url, admin)
        watch.start()
        try:
            report = await _scenario(deployment, admin, keys, stop, waves, watch)
            stop.set()
            for wave in waves:
                await asyncio.wait_for(asyncio.gather(*wave.tasks), TIMEOUT)
            # Every session ends (its usage booked before its lease goes): nothing is live.
            await _until_no_sessions(admin)
        finally:
            stop.set()
            for wave in waves:
                await wave.close()
            await watch.stop()
        watch.check()
        # The watch really ran all along (it polls every 20 ms and 50 ms).
        assert watch.polls >= 50, watch.polls
        assert watch.listings >= 20, watch.listings
        # The victim's clients were the only ones dropped; every other one left by itself.
        dropped = [c for wave in waves for c in wave.admitted() if c.dropped_at is not None]
        assert len(dropped) == sum(report["victim_sessions_by_tenant"].values())
        assert all(c.finished for wave in waves for c in wave.admitted() if c not in dropped)
        ledger = await _check_ledger(http, keys, waves)
    assert _logged_errors(deployment) == []
    report.update(
        ledger=ledger,
        max_leases=dict(watch.max_leases),
        max_listed=dict(watch.max_listed),
        lease_polls=watch.polls,
        listings=watch.listings,
        median_turn_s=_median_turn_seconds(waves),
        seconds=round(time.monotonic() - started, 1),
    )
    print("\nreplicas/cluster:", json.dumps(report, sort_keys=True))


async def _scenario(
    dep: Deployment,
    admin: httpx.AsyncClient,
    keys: dict[str, str],
    stop: asyncio.Event,
    waves: list[Wave],
    watch: LiveCountWatch,
) -> dict[str, Any]:
    lb = dep.lb

    # First wave: ATTEMPTS per tenant at once, spread over the replicas by nginx. Exactly
    # LIMIT per tenant get in across the three replicas; the others are refused with 429.
    first = Wave("first", lb.ws_url, stop)
    waves.append(first)
    await first.launch(lb.http_url, keys)
    for tenant in TENANTS:
        statuses = Counter(c.status for c in first.conversations if c.tenant == tenant)
        assert statuses == Counter({101: LIMIT, 429: ATTEMPTS - LIMIT}), (tenant, statuses)
        codes = {c.refusal_code for c in first.refused(tenant)}
        assert codes == {"rate_limit_exceeded"}, codes
    await until(
        lambda: all(len(c.totals) >= 2 for c in first.admitted()), "two turns each", waves=waves
    )
    before = await list_sessions(admin)
    assert Counter(s["tenant_id"] for s in before) == Counter(dict.fromkeys(TENANTS, LIMIT))
    placement = Counter(s["replica_id"] for s in before)
    assert set(placement) <= set(REPLICAS), placement
    assert await watch.live_replicas() == set(REPLICAS)

    # SIGKILL the busiest replica while its sessions are in the middle of turns.
    victim_id = max(REPLICAS, key=lambda r: placement[r])
    survivors = [r for r in REPLICAS if r != victim_id]
    dead = Counter(s["tenant_id"] for s in before if s["replica_id"] == victim_id)
    victim = dep.replicas[victim_id]
    killed_at = time.monotonic()
    victim.signal(signal.SIGKILL)
    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL

    # Its clients (and only as many as it held) are dropped at once, with retryable codes.
    def dropped() -> list[Conversation]:
        return [c for c in first.admitted() if c.dropped_at is not None]

    await until(lambda: len(dropped()) >= dead.total(), "the victim's clients", waves=waves)
    assert Counter(c.tenant for c in dropped()) == dead
    close_codes = Counter(c.close_code for c in dropped())
    assert set(close_codes) <= RETRYABLE_CLOSES, close_codes
    drop_after = max(c.dropped_at or 0 for c in dropped()) - killed_at

    # Its leases are reaped within the heartbeat TTL: its sessions leave the live lists.
    reap_after = await _until_reaped(admin, victim_id, killed_at)
    assert reap_after <= HEARTBEAT_TTL_S + 1.0, reap_after
    assert await watch.live_replicas() == set(survivors)
    left = await list_sessions(admin)
    assert {s["replica_id"] for s in left} <= set(survivors)
    assert Counter(s["tenant_id"] for s in left) == Counter({t: LIMIT - dead[t] for t in TENANTS})

    # Second wave: exactly the freed slots are given out again, all on the survivors (nginx
    # skips the dead replica); everyone else is refused.
    second = Wave("second", lb.ws_url, stop)
    waves.append(second)
    await second.launch(lb.http_url, keys)
    for tenant in TENANTS:
        statuses = Counter(c.status for c in second.conversations if c.tenant == tenant)
        expected = Counter({101: dead[tenant], 429: ATTEMPTS - dead[tenant]})
        assert statuses == expected, (tenant, statuses)
    await until(
        lambda: all(len(c.totals) >= 2 for c in second.admitted()), "new turns", waves=waves
    )
    after = await list_sessions(admin)
    known = {s["session_id"] for s in before}
    new = [s for s in after if s["session_id"] not in known]
    assert len(new) == dead.total() == len(second.admitted())
    assert {s["replica_id"] for s in after} <= set(survivors), after
    assert Counter(s["tenant_id"] for s in after) == Counter(dict.fromkeys(TENANTS, LIMIT))
    return {
        "placement_before_kill": dict(placement),
        "victim": victim_id,
        "victim_sessions_by_tenant": dict(dead),
        "close_codes": {str(k): v for k, v in close_codes.items()},
        "drop_after_s": round(drop_after, 3),
        "reap_after_s": round(reap_after, 3),
        "first_wave": _statuses(first),
        "second_wave": _statuses(second),
        "new_sessions_on": dict(Counter(s["replica_id"] for s in new)),
        "turns_in_flight_on_victim": sum(1 for c in dropped() if c.in_flight_bound),
    }


def _median_turn_seconds(waves: list[Wave]) -> float:
    seconds = sorted(s for wave in waves for c in wave.conversations for s in c.seconds)
    return round(seconds[len(seconds) // 2], 3) if seconds else 0.0


def _statuses(wave: Wave) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(c.status for c in wave.conversations).items())}


async def _until_reaped(admin: httpx.AsyncClient, victim_id: str, killed_at: float) -> float:
    """Seconds from the kill until no tenant lists a session of the victim any more."""
    deadline = killed_at + HEARTBEAT_TTL_S + 5.0
    while True:
        listed = [
            s
            for tenant in TENANTS
            for s in await list_sessions(admin, tenant)
            if s["replica_id"] == victim_id
        ]
        now = time.monotonic()
        if not listed:
            return now - killed_at
        assert now < deadline, f"sessions of {victim_id} still live: {listed}"
        await asyncio.sleep(0.05)


async def _until_no_sessions(admin: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + TIMEOUT
    while sessions := await list_sessions(admin):
        assert time.monotonic() < deadline, (
            f"sessions still live after the clients left: {sessions}"
        )
        await asyncio.sleep(0.05)


async def _check_ledger(
    http: httpx.AsyncClient, keys: dict[str, str], waves: list[Wave]
) -> dict[str, Any]:
    """The ledger of every tenant holds every turn a client saw complete; turns in flight on
    the killed replica may or may not be in it (at most their bound each)."""
    out: dict[str, Any] = {}
    for tenant in TENANTS:
        convs = [c for wave in waves for c in wave.admitted(tenant)]
        for conv in convs:
            # The bound used for the lost turns holds for every turn that was seen.
            for previous, total in zip(conv.totals, conv.totals[1:], strict=False):
                assert total <= turn_bound(previous), (previous, total)
        received = sum(sum(c.totals) for c in convs)
        turns = sum(len(c.totals) for c in convs)
        lost = [c.in_flight_bound for c in convs if c.dropped_at is not None and c.in_flight_bound]
        response = await http.get("/v1/usage", headers={"Authorization": f"Bearer {keys[tenant]}"})
        assert response.status_code == 200, response.text
        total = response.json()["total"]
        assert received <= total["tokens"] <= received + sum(lost), (tenant, received, total, lost)
        assert turns <= total["responses"] <= turns + len(lost), (tenant, turns, total, lost)
        assert total["sessions"] == len(convs), (tenant, total, len(convs))
        out[tenant] = {
            "sessions": len(convs),
            "turns_received": turns,
            "tokens_received": received,
            "ledger_tokens": total["tokens"],
            "ledger_responses": total["responses"],
            "in_flight_lost": len(lost),
            "in_flight_bound": sum(lost),
        }
    return out


def _logged_errors(dep: Deployment) -> list[str]:
    """Error records in the replicas' JSON logs (a kill of a peer is not an error)."""
    out = []
    for process in dep.replicas.values():
        for line in process.log_path.read_text("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                    out.append(line[:1000])
    return out


async def _ready(http: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(f"{url}/readyz")).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{url} never became ready"
        await asyncio.sleep(0.05)


async def _create_tenant(admin: httpx.AsyncClient, tenant_id: str) -> str:
    response = await admin.post(
        "/admin/tenants",
        json={"id": tenant_id, "name": tenant_id, "limits": {"max_concurrent_sessions": LIMIT}},
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["api_key"]
    return key
