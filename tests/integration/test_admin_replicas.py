"""Live session admin across replicas: two gateways on one real Redis.

Sessions living on replica B are listed, shown and ended through replica A (admin API, tenant
API and the CLI); an end reaches B over Redis pub/sub and its client gets an error event and a
close. A tenant sees and ends only its own sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.cli import main as cli_main
from tests.support.gateway import ADMIN_KEY, GatewayHandle, gateway_settings, run_gateway
from tests.support.realtime import RealtimeClient, realtime

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def _replicas(redis_url: str) -> AsyncIterator[tuple[GatewayHandle, GatewayHandle]]:
    async with (
        run_gateway(gateway_settings(redis_url=redis_url, replica_id="replica-a")) as a,
        run_gateway(gateway_settings(redis_url=redis_url, replica_id="replica-b")) as b,
    ):
        yield a, b


class Opened:
    """Sessions opened one by one, each with the gateway's id for it (from the admin list)."""

    def __init__(self, admin: httpx.AsyncClient, stack: contextlib.AsyncExitStack) -> None:
        self.admin = admin
        self.stack = stack
        self.known: set[str] = set()

    async def open(self, gw: GatewayHandle, key: str) -> tuple[str, RealtimeClient]:
        client = await self.stack.enter_async_context(realtime(gw.ws_url, key))
        assert (await client.recv())["type"] == "session.created"
        ids = {s["session_id"] for s in await _list(self.admin, "/admin/sessions")}
        (new,) = ids - self.known
        self.known.add(new)
        return new, client


async def _list(http: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data


async def _ended_by_gateway(client: RealtimeClient, code: str, close_code: int) -> None:
    events = await client.until_closed(timeout=5)
    assert events, "no error event before the close"
    assert events[-1]["type"] == "error", events[-1]
    assert events[-1]["error"]["code"] == code
    assert client.close_code == close_code


async def _wait_ended(admin: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        response = await admin.get(f"/admin/sessions/{session_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        if record["ended_at"] is not None:
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.02)


async def test_sessions_on_b_are_listed_and_ended_through_a(redis_url: str) -> None:
    async with _replicas(redis_url) as (a, b), a.admin() as admin:
        _, key_x = await a.create_tenant(id="ten-x", name="x")
        _, key_y = await a.create_tenant(id="ten-y", name="y")
        async with contextlib.AsyncExitStack() as stack:
            opened = Opened(admin, stack)
            x1, client_x1 = await opened.open(b, key_x)
            x2, client_x2 = await opened.open(b, key_x)
            y1, client_y1 = await opened.open(b, key_y)
            y2, client_y2 = await opened.open(a, key_y)

            # Listed through A, with the replica that holds each; filtered by tenant; shown.
            everything = {s["session_id"]: s for s in await _list(admin, "/admin/sessions")}
            assert set(everything) == {x1, x2, y1, y2}
            assert {everything[s]["replica_id"] for s in (x1, x2, y1)} == {"replica-b"}
            assert everything[y2]["replica_id"] == "replica-a"
            only_x = await _list(admin, "/admin/sessions", tenant="ten-x")
            assert {s["session_id"] for s in only_x} == {x1, x2}
            shown = (await admin.get(f"/admin/sessions/{x1}")).json()
            assert shown["object"] == "realtime.gateway_session"
            assert (shown["tenant_id"], shown["replica_id"]) == ("ten-x", "replica-b")
            assert shown["ended_at"] is None
            for secretish in ("key_hashes", "api_key", "token"):
                assert secretish not in shown

            # The admin ends a session living on B through A.
            ended = await admin.delete(f"/admin/sessions/{x1}")
            assert ended.status_code == 200, ended.text
            assert ended.json() == {"object": "realtime.gateway_session", "id": x1, "ending": True}
            await _ended_by_gateway(client_x1, "session_terminated", 1008)
            record = await _wait_ended(admin, x1)
            assert (record["close_reason"], record["client_close_code"]) == (
                "session_terminated",
                1008,
            )
            again = await admin.delete(f"/admin/sessions/{x1}")
            assert again.status_code == 404

            # The CLI against A lists what lives on B and ends all of a tenant's sessions on
            # every replica.
            listed = await _cli("sessions", "list", "--tenant", "ten-y", url=a.http_url)
            assert {s["session_id"] for s in listed["data"]} == {y1, y2}
            await _cli("sessions", "end-tenant", "ten-y", url=a.http_url)
            await _ended_by_gateway(client_y1, "session_terminated", 1008)  # on B
            await _ended_by_gateway(client_y2, "session_terminated", 1008)  # on A

            # x2 was not touched by any of this.
            assert {s["session_id"] for s in await _list(admin, "/admin/sessions")} == {x2}
            done = await client_x2.text_turn("still here?", modalities=["text"])
            assert done["response"]["status"] == "completed"


async def test_a_tenant_sees_and_ends_only_its_own_sessions(redis_url: str) -> None:
    async with _replicas(redis_url) as (a, b), a.admin() as admin:
        _, key_x = await a.create_tenant(id="own-x", name="x")
        _, key_y = await a.create_tenant(id="own-y", name="y")
        as_x = httpx.AsyncClient(base_url=a.http_url, headers={"Authorization": f"Bearer {key_x}"})
        as_y = httpx.AsyncClient(base_url=a.http_url, headers={"Authorization": f"Bearer {key_y}"})
        async with as_x, as_y, contextlib.AsyncExitStack() as stack:
            opened = Opened(admin, stack)
            x1, client_x1 = await opened.open(b, key_x)
            y1, _client_y1 = await opened.open(b, key_y)

            # Each tenant lists its own sessions only (through A, while they live on B).
            assert [s["session_id"] for s in await _list(as_x, "/v1/sessions")] == [x1]
            assert [s["session_id"] for s in await _list(as_y, "/v1/sessions")] == [y1]

            # Another tenant's session is answered like a missing one, and left alone.
            refused = await as_y.delete(f"/v1/sessions/{x1}")
            assert refused.status_code == 404, refused.text
            missing = await as_y.delete("/v1/sessions/sess_doesnotexist")
            assert missing.status_code == 404
            assert refused.json()["error"]["code"] == missing.json()["error"]["code"]
            assert "own-x" not in refused.text
            # Client secrets and the admin key are not tenant credentials here.
            for not_a_tenant_key in ("ek_" + "A" * 43, ADMIN_KEY):
                listed = await as_y.get("/v1/sessions", headers=_bearer(not_a_tenant_key))
                assert listed.status_code == 401
            assert (await as_y.get("/admin/sessions")).status_code == 401
            assert [s["session_id"] for s in await _list(as_x, "/v1/sessions")] == [x1]
            done = await client_x1.text_turn("are you there?", modalities=["text"])
            assert done["response"]["status"] == "completed"

            # Its own session, a tenant ends from any replica.
            ended = await as_x.delete(f"/v1/sessions/{x1}")
            assert ended.status_code == 200, ended.text
            await _ended_by_gateway(client_x1, "session_terminated", 1008)
            await _wait_ended(admin, x1)
            assert await _list(as_x, "/v1/sessions") == []
            assert [s["session_id"] for s in await _list(as_y, "/v1/sessions")] == [y1]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _cli(*argv: str, url: str) -> dict[str, Any]:
    """``realtime-gateway <argv> --url <url>`` (its blocking HTTP client runs in a thread)."""
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return cli_main([*argv, "--url", url, "--admin-key", ADMIN_KEY])

    assert await asyncio.to_thread(run) == 0, out.getvalue()
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


async def test_tenant_changes_reach_every_replica_at_once(redis_url: str) -> None:
    """Replicas cache tenant records (minting and admission read them on every call); a
    rotation or a disable made through A is in force on B immediately, not after the TTL."""
    async with _replicas(redis_url) as (a, b):
        tenant_id, old_key = await a.create_tenant(name="cached")
        mint = {"session": {"type": "realtime", "model": "gpt-realtime"}}

        async def mint_on_b(key: str) -> int:
            async with httpx.AsyncClient(base_url=b.http_url) as http:
                response = await http.post(
                    "/v1/realtime/client_secrets",
                    json=mint,
                    headers={"Authorization": f"Bearer {key}"},
                )
            return response.status_code

        assert await mint_on_b(old_key) == 200  # B now holds the record in its cache
        async with a.admin() as admin:
            rotated = await admin.post(f"/admin/tenants/{tenant_id}/rotate-key")
            new_key = rotated.json()["api_key"]

            async def eventually(key: str, status: int) -> None:
                deadline = time.monotonic() + 0.5  # the pub/sub hop, far under the 1 s TTL
                while (got := await mint_on_b(key)) != status:
                    assert time.monotonic() < deadline, (key[:10], got)
                    await asyncio.sleep(0.01)

            await eventually(old_key, 401)
            await eventually(new_key, 200)
            assert (await admin.post(f"/admin/tenants/{tenant_id}/disable")).status_code == 200
            await eventually(new_key, 403)
