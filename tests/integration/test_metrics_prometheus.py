"""``/metrics`` after real sessions: ``promtool check metrics`` accepts the scrape, and a real
Prometheus server scraping the gateway every second answers its query API with the values of
a scripted conversation (sessions, tokens by class, audio, latency, refusals)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import GatewayHandle, gateway_settings, run_gateway
from tests.support.realtime import (
    Event,
    audio_seconds_of,
    mint,
    realtime,
    refused_upgrade,
    usage_classes,
)
from tests.support.servers import free_port, require_binary, wait_for_port

pytestmark = pytest.mark.timeout(60)

# Audio out by default; output_modalities is deliberately not bound (a bound field is locked,
# and the script's text turn asks for text for that one response).
AUDIO_SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "audio": {"input": {"turn_detection": None}},
}
TEXT_SESSION = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"]}


@dataclasses.dataclass
class Script:
    """What the scripted conversation did, as the clients saw it."""

    responses: list[Event] = dataclasses.field(default_factory=list)  # response.done events
    client_events_sent: int = 0
    upstream_events_seen: int = 0  # received by clients, minus what the gateway made itself
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    sessions: int = 0

    def tokens(self, tenant_responses: list[Event] | None = None) -> dict[str, int]:
        total: dict[str, int] = {}
        for done in self.responses if tenant_responses is None else tenant_responses:
            for name, value in usage_classes(done["response"]["usage"]).items():
                total[name] = total.get(name, 0) + value
        return total


async def _scripted_conversation(gw: GatewayHandle) -> tuple[Script, Script]:
    """Tenant prom-a: one session with a text turn and an audio turn. Tenant prom-c (1 token a
    day): a text turn, then a response.create refused for its budget, then an upgrade refused
    for it. Tenant prom-b (no sessions allowed): an upgrade refused. And a forged token."""
    _, key_a = await gw.create_tenant(id="prom-a", name="a", limits={"tokens_per_day": 10**7})
    _, key_b = await gw.create_tenant(id="prom-b", name="b", limits={"max_concurrent_sessions": 0})
    _, key_c = await gw.create_tenant(id="prom-c", name="c", limits={"tokens_per_day": 1})
    a, c = Script(), Script()

    token = await mint(gw.http_url, key_a, AUDIO_SESSION)
    async with realtime(gw.ws_url, token) as client:
        assert (await client.recv())["type"] == "session.created"
        a.responses.append(await client.text_turn("Hello there", modalities=["text"]))
        a.responses.append(await client.audio_turn(1.0))
        a.audio_in_seconds = 1.0
        a.audio_out_seconds = audio_seconds_of(client.events)
        a.client_events_sent = len(client.sent)
        a.upstream_events_seen = _from_upstream(client.events)
        a.sessions = 1

    async with realtime(gw.ws_url, await mint(gw.http_url, key_c, TEXT_SESSION)) as client:
        assert (await client.recv())["type"] == "session.created"
        c.responses.append(await client.text_turn("Hi"))
        await client.send({"type": "response.create", "event_id": "over-budget"})
        refusal = await client.recv()
        assert refusal["type"] == "error", refusal
        assert refusal["error"]["code"] == "rate_limit_exceeded"
        c.client_events_sent = len(client.sent)
        c.upstream_events_seen = _from_upstream(client.events)
        c.sessions = 1

    status, body, _ = await refused_upgrade(gw.ws_url, key_c)
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    status, body, _ = await refused_upgrade(gw.ws_url, key_b)
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    status, body, _ = await refused_upgrade(gw.ws_url, "ek_" + "F" * 43)
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    await _wait_sessions_ended(gw, 2)
    return a, c


def _from_upstream(events: list[Event]) -> int:
    # session.created is sent from admission (the gateway read it while opening the upstream
    # session); error events here are the gateway's own refusals.
    return sum(1 for e in events if e["type"] not in ("session.created", "error"))


async def _scrape(gw: GatewayHandle) -> str:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def _wait_sessions_ended(gw: GatewayHandle, count: int) -> None:
    """Until the gateway has finished (and accounted) ``count`` sessions."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert gw.services is not None
        ended = sum(
            sample.value
            for family in gw.services.metrics.registry.collect()
            if family.name == "realtime_gateway_sessions_ended"
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        if ended >= count and not gw.services.sessions:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} sessions did not end")


# --- promtool -------------------------------------------------------------------------------


async def test_promtool_accepts_a_scrape_after_real_sessions(redis_url: str) -> None:
    promtool = require_binary("promtool", "prometheus")
    async with run_gateway(gateway_settings(redis_url=redis_url)) as gw:
        await _scripted_conversation(gw)
        text = await _scrape(gw)
    # Every family the issue asks for has samples after these sessions.
    for name in (
        "live_sessions", "sessions_started_total", "sessions_ended_total",
        "refused_upgrades_total", "session_duration_seconds_bucket",
        "upstream_connect_seconds_bucket", "first_delta_seconds_bucket", "relayed_events_total",
        "relayed_bytes_total", "tokens_total", "audio_seconds_total", "cost_usd_total",
        "upstream_ratelimit_remaining", "quota_refusals_total", "redis_errors_total",
        "buffered_charges", "relay_queue_frames", "dropped_frames_total",
        "client_secrets_minted_total", "client_secrets_redeemed_total",
        "refused_client_events_total", "tenant_tokens_remaining",
    ):  # fmt: skip
        if name != "redis_errors_total":  # none happened: the family is declared, no sample
            assert f"\nrealtime_gateway_{name}" in text, name
    assert "# TYPE realtime_gateway_redis_errors_total counter" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout  # no lint finding either
    assert not result.stderr.strip(), result.stderr


# --- a real Prometheus server ------------------------------------------------------------------


class Prometheus:
    """A `prometheus` server scraping one target every second, queried over its HTTP API."""

    def __init__(self, target_port: int, directory: Path) -> None:
        self.binary = require_binary("prometheus", "prometheus")
        self.port = free_port()
        self.directory = directory
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        log = (self.directory / "prometheus.log").open("wb")
        try:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        wait_for_port(self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            response = await http.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, expr: str) -> float:
        """The single value of ``expr`` (wrap selectors in sum() to get one)."""
        result = await self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    async def wait_scrape_after(self, moment: float, timeout: float = 10) -> None:
        """Until Prometheus holds a successful scrape of the target taken after ``moment``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_ready = True
            try:
                result = await self.query('timestamp(up{job="gateway"} == 1)')
            except (httpx.HTTPError, AssertionError, ValueError):
                with_ready = False  # still starting
                result = []
            if with_ready and result and float(result[0]["value"][1]) > moment:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"Prometheus did not scrape the gateway after {moment}")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[type[Prometheus]]:
    started: list[Prometheus] = []

    class _Tracked(Prometheus):
        def start(self) -> Prometheus:
            started.append(self)
            return super().start()

    yield _Tracked
    for server in started:
        server.stop()


async def test_prometheus_scrapes_the_expected_values(
    redis_url: str, tmp_path: Path, prometheus_factory: type[Prometheus]
) -> None:
    # Prometheus first: its discovery hands targets to the scrapers only every 5 s, so the
    # first scrape comes ~5 s after it starts; the conversation runs meanwhile. The gateway
    # keeps running while Prometheus is queried: once a scrape fails, its series are marked
    # stale and the query API no longer returns them.
    settings = gateway_settings(redis_url=redis_url)
    prom = prometheus_factory(settings.port, tmp_path).start()
    async with run_gateway(settings) as gw:
        a, c = await _scripted_conversation(gw)
        await _check_prometheus(gw, prom, a, c)


async def _check_prometheus(gw: GatewayHandle, prom: Prometheus, a: Script, c: Script) -> None:
    finished = time.time()
    await prom.wait_scrape_after(finished)
    async with gw.admin() as admin:
        usage = await admin.get("/admin/usage", params={"tenant": "prom-a"})
    assert usage.status_code == 200
    ledger_cost_a = usage.json()["data"][0]["total"]["cost_usd"]

    v = prom.value
    # Sessions: started, ended by reason and close code, none live; one token minted and used.
    assert await v('sum(realtime_gateway_sessions_started_total{tenant="prom-a"})') == 1
    assert await v('sum(realtime_gateway_sessions_started_total{tenant="prom-c"})') == 1
    assert (
        await v(
            'sum(realtime_gateway_sessions_ended_total{reason="client_closed",close_code="1000"})'
        )
        == 2
    )
    assert await v("sum(realtime_gateway_live_sessions)") == 0
    assert await v('sum(realtime_gateway_client_secrets_minted_total{tenant="prom-a"})') == 1
    assert await v('sum(realtime_gateway_client_secrets_redeemed_total{tenant="prom-a"})') == 1
    assert await v("sum(realtime_gateway_session_duration_seconds_count)") == 2
    assert (
        await v('sum(realtime_gateway_upstream_connect_seconds_count{upstream="simulator"})') == 2
    )
    assert await v("sum(realtime_gateway_upstream_sessions_total)") == 2

    # Tokens by class: exactly the sum of the response.done usage the clients received.
    for tenant, script in (("prom-a", a), ("prom-c", c)):
        for name, expected in script.tokens().items():
            got = await v(f'sum(realtime_gateway_tokens_total{{tenant="{tenant}",class="{name}"}})')
            assert got == expected, (tenant, name, got, expected)
    total_tokens = sum(d["response"]["usage"]["total_tokens"] for d in a.responses + c.responses)
    assert await v("sum(realtime_gateway_tokens_total)") == total_tokens

    # Latency users hear: one first-delta observation per response.
    responses = len(a.responses) + len(c.responses)
    assert await v("sum(realtime_gateway_first_delta_seconds_count)") == responses
    assert await v('sum(realtime_gateway_responses_total{status="completed"})') == responses
    first_delta_sum = await v("sum(realtime_gateway_first_delta_seconds_sum)")
    assert 0 < first_delta_sum < 5

    # Events relayed: every client event, every upstream event the clients saw.
    sent = a.client_events_sent + c.client_events_sent
    relayed = 'sum(realtime_gateway_relayed_events_total{direction="%s"})'
    assert await v(relayed % "client_to_upstream") == sent
    assert (
        await v(relayed % "upstream_to_client") == a.upstream_events_seen + c.upstream_events_seen
    )
    appends = 'realtime_gateway_relayed_events_total{type="input_audio_buffer.append"}'
    assert await v(f"sum({appends})") == 10
    audio_bytes = 'realtime_gateway_relayed_bytes_total{type="input_audio_buffer.append"}'
    assert await v(f"sum({audio_bytes})") > 48_000 * 4 / 3  # 1 s of pcm16, base64 in JSON

    # Audio seconds and cost.
    audio = 'sum(realtime_gateway_audio_seconds_total{tenant="prom-a",direction="%s"})'
    assert math.isclose(await v(audio % "in"), a.audio_in_seconds, abs_tol=1e-6)
    assert math.isclose(await v(audio % "out"), a.audio_out_seconds, abs_tol=1e-3)
    cost_a = await v('sum(realtime_gateway_cost_usd_total{tenant="prom-a"})')
    assert cost_a > 0
    assert math.isclose(cost_a, ledger_cost_a, abs_tol=2e-6)

    # Refusals: upgrades by reason, quota refusals by tenant and limit, refused client events.
    refused = 'sum(realtime_gateway_refused_upgrades_total{reason="%s"})'
    assert await v(refused % "invalid_api_key") == 1
    assert await v(refused % "rate_limit_exceeded") == 2
    quota = 'sum(realtime_gateway_quota_refusals_total{tenant="%s",limit="%s"})'
    assert await v(quota % ("prom-b", "sessions")) == 1
    assert await v(quota % ("prom-c", "tokens_per_day")) == 2  # in session, then the upgrade
    assert await v("sum(realtime_gateway_refused_client_events_total)") == 1

    # Budgets and upstream headroom.
    day_left = await v(
        'min(realtime_gateway_tenant_tokens_remaining{tenant="prom-c",window="day"})'
    )
    assert day_left == 0
    a_left = await v('min(realtime_gateway_tenant_tokens_remaining{tenant="prom-a",window="day"})')
    assert 10**7 - sum(a.tokens().values()) <= a_left < 10**7
    headroom = (
        'min(realtime_gateway_upstream_ratelimit_remaining{upstream="simulator",'
        'credential="builtin",name="tokens"})'
    )
    assert 0 < await v(headroom) < await v(headroom.replace("remaining", "limit"))

    # State: nothing buffered or dropped, no Redis error, nothing held in the relay.
    assert await v("sum(realtime_gateway_buffered_charges)") == 0
    assert await v("sum(realtime_gateway_charges_dropped_total)") == 0
    assert await prom.query("realtime_gateway_redis_errors_total") == []
    assert await v("sum(realtime_gateway_relay_queue_frames)") == 0
    assert await v("sum(realtime_gateway_dropped_frames_total)") == 0
    assert await v("sum(realtime_gateway_draining)") == 0
