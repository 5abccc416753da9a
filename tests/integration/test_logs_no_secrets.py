"""Structured logs: session context on every session line, and never a secret.

The suite-wide check lives in tests/conftest.py (``log_collector``): every record of the whole
run is formatted as the gateway writes it and grepped for the suite's secrets when the run
ends. These tests prove that the check is live (it sees the gateway's records and catches a
planted secret) and drive the paths where a secret is at hand: minting, the three ways of
presenting a credential, refusals, admin calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.logs import DeniedUpgradeFilter, JsonFormatter, TextFormatter
from tests.conftest import SECRET_SHAPES, LogCollector
from tests.support.gateway import ADMIN_KEY, gateway_settings, run_gateway
from tests.support.realtime import mint, realtime, refused_upgrade

pytestmark = pytest.mark.timeout(60)

TEXT_SESSION = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"]}


def _entries(collector: LogCollector, since: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in collector.lines_since(since) if line.startswith("{")]


def test_the_suite_check_is_live_and_catches_planted_secrets(log_collector: LogCollector) -> None:
    assert log_collector in logging.getLogger().handlers
    marker = "PLANTED0123456789abcdefghij"
    # A gateway logger handed a token: scrubbed on output, but caught before scrubbing.
    logging.getLogger("gateway.test").info("token %s", "ek_" + marker)
    assert any(marker in leak for leak in log_collector.raw_leaks)
    assert not any(marker in leak for leak in log_collector.leaks)
    assert "[redacted]" in log_collector.recent[-1][1]
    # A secret whose shape the scrubber does not know (the admin key) reaches the line.
    logging.getLogger("thirdparty.test").warning("admin key %s %s", ADMIN_KEY, marker)
    assert any(marker in leak for leak in log_collector.leaks)
    log_collector.forget(marker)
    assert not any(marker in leak for leak in log_collector.leaks + log_collector.raw_leaks)


async def test_session_logs_carry_context_and_no_secret(
    redis_url: str, log_collector: LogCollector
) -> None:
    since = log_collector.records
    count_before = log_collector.records
    settings = gateway_settings(redis_url=redis_url, replica_id="logs-replica")
    async with run_gateway(settings) as gw:
        tenant_id, key = await gw.create_tenant(name="logs")
        token = await mint(gw.http_url, key, TEXT_SESSION)
        async with realtime(gw.ws_url, token) as client:
            assert (await client.recv())["type"] == "session.created"
            await client.text_turn("hello")
            # An invalid event and a binary frame: refused, logged nowhere with content.
            await client.send({"type": "no.such.event", "secret": "ek_" + "Q" * 40})
            assert (await client.recv())["type"] == "error"
        # The browser way (subprotocol) and the old Azure way (query parameter), refused.
        forged = "ek_" + "Z" * 43
        url = f"{gw.ws_url}/realtime?model=gpt-realtime"
        with pytest.raises(InvalidStatus):
            async with connect(url, subprotocols=[f"openai-insecure-api-key.{forged}"]):  # type: ignore[list-item]
                pass
        with pytest.raises(InvalidStatus):
            async with connect(f"{url}&api-key={forged}"):
                pass
        async with connect(f"{url}&api-key={key}") as ws:  # a tenant key in a URL (don't)
            assert json.loads(await ws.recv())["type"] == "session.created"
        assert (await refused_upgrade(gw.ws_url, token))[0] == 401  # used up
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            bad_admin = await http.get("/admin/tenants", headers={"Authorization": "Bearer nope"})
            assert bad_admin.status_code == 401
            rotated = await http.post(
                f"/admin/tenants/{tenant_id}/rotate-key",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert rotated.status_code == 200

    assert log_collector.records > count_before
    entries = _entries(log_collector, since)
    assert entries, "nothing was logged"
    ended = [e for e in entries if e["msg"] == "session ended"]
    assert len(ended) == 2
    line = ended[0]
    for field in ("session_id", "tenant", "replica", "upstream", "reason", "close_code"):
        assert field in line, field
    assert line["tenant"] == tenant_id
    assert line["replica"] == "logs-replica"
    assert line["upstream"] == "simulator"
    assert line["session_id"].startswith("sess_")
    assert (line["reason"], line["close_code"]) == ("client_closed", 1000)
    started = [e for e in entries if e["msg"] == "session started"]
    assert started[0]["session_id"] == line["session_id"]
    assert [e for e in entries if e["msg"] == "upgrade refused"]
    # A URL that carried a key is never logged with it (uvicorn's access lines included).
    urls = [e["msg"] for e in entries if "/v1/realtime" in e["msg"]]
    assert all(key not in m and forged not in m for m in urls), urls
    for entry in entries:
        assert not SECRET_SHAPES.search(json.dumps(entry)), entry


def test_formatters_scrub_every_field() -> None:
    token, key, azure = "ek_" + "a" * 43, "rgw_sk_" + "b" * 43, "0123456789abcdef0123456789abcdef"
    try:
        raise ValueError(f"upstream refused Bearer {key}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "gateway.test", logging.ERROR, __file__, 1, "minted %s for %s", (token, "t"), exc_info
    )
    record.session = {"headers": {"api-key": azure}, "tokens": [token]}
    record.url = f"wss://x.openai.azure.com/openai/realtime?api-key={azure}&deployment=d"
    record.color_message = "\x1b[36m" + token
    for formatter in (JsonFormatter("r1"), TextFormatter("%(levelname)s %(message)s")):
        line = formatter.format(record)
        for secret in (token, key, azure):
            assert secret not in line, (formatter, line)
        assert "[redacted]" in line
        assert "\x1b" not in line
    entry = json.loads(JsonFormatter("r1").format(record))
    assert entry["url"].endswith("api-key=[redacted]&deployment=d")
    assert entry["session"]["headers"]["api-key"] == "[redacted]"
    assert entry["replica"] == "r1"
    text = TextFormatter("%(message)s").format(record)
    assert text.startswith("minted [redacted] for t")
    assert 'url="wss://x.openai.azure.com' in text  # context fields follow the message


def test_the_spurious_uvicorn_error_after_a_denial_is_dropped() -> None:
    keep = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "real trouble", (), None)
    drop = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, DeniedUpgradeFilter.MESSAGE, (), None
    )
    only = DeniedUpgradeFilter()
    assert only.filter(keep)
    assert not only.filter(drop)


async def test_a_client_that_leaves_at_once_is_ended_and_recorded(
    redis_url: str, log_collector: LogCollector
) -> None:
    """A client may close right after the upgrade, before the gateway sends session.created:
    the session still gets its end record, its metrics and its log line, and no error log."""
    since = log_collector.records
    async with run_gateway(gateway_settings(redis_url=redis_url)) as gw, gw.admin() as admin:
        _, key = await gw.create_tenant(name="hasty")
        for _ in range(3):
            async with connect(
                f"{gw.ws_url}/realtime?model=gpt-realtime",
                additional_headers={"Authorization": f"Bearer {key}"},
            ):
                pass
        assert gw.services is not None
        deadline = asyncio.get_running_loop().time() + 5
        while gw.services.sessions or len(_ended(log_collector, since)) < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        for line in _ended(log_collector, since):
            assert line["reason"] == "client_closed", line
            record = (await admin.get(f"/admin/sessions/{line['session_id']}")).json()
            assert record["ended_at"] is not None
            assert record["close_reason"] == "client_closed"
        assert (await admin.get("/admin/sessions")).json()["data"] == []
    errors = [e for e in _entries(log_collector, since) if e["level"] in ("error", "critical")]
    assert errors == []


def _ended(collector: LogCollector, since: int) -> list[dict[str, Any]]:
    return [e for e in _entries(collector, since) if e["msg"] == "session ended"]
