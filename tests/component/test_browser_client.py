"""A browser-style raw client: the secret travels in the `openai-insecure-api-key.` subprotocol
next to `realtime`, as browsers cannot set headers on a WebSocket."""

from __future__ import annotations

import httpx

from tests.component.wsclient import bearer, mint, session, text_turn, until, usage_of, ws_url
from tests.support.gateway import GatewayHandle

ORIGIN = "https://app.example"


async def test_ga_browser_client_mints_and_converses(gateway: GatewayHandle) -> None:
    tenant_id, key = await gateway.create_tenant(name="acme")
    secret = await mint(
        gateway,
        key,
        {
            "session": {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"]},
            "allowed_origins": [ORIGIN],
        },
    )
    async with session(
        ws_url(gateway),
        subprotocols=["realtime", f"openai-insecure-api-key.{secret}"],
        origin=ORIGIN,
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert ws.response is not None
        assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["realtime"]
        assert secret not in str(ws.response.headers)
        created, _ = await until(ws, "session.created")
        assert created["session"]["output_modalities"] == ["text"]
        tokens = 0
        for question in ("Hello from a browser", "And a second question?"):
            done = await text_turn(ws, question)
            assert done["response"]["status"] == "completed"
            assert done["response"]["output"][0]["content"][0]["type"] == "output_text"
            tokens += done["response"]["usage"]["total_tokens"]
    usage = await usage_of(gateway, key)
    assert usage["tenant_id"] == tenant_id
    assert usage["total"]["tokens"] == tokens
    assert usage["total"]["responses"] == 2


async def test_beta_browser_client_mints_and_converses(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        minted = await http.post(
            "/v1/realtime/sessions",
            json={"model": "gpt-realtime", "modalities": ["text"]},
            headers=bearer(key),
        )
    assert minted.status_code == 200, minted.text
    secret = minted.json()["client_secret"]["value"]
    assert secret.startswith("ek_")
    async with session(
        ws_url(gateway),
        subprotocols=[
            "realtime",
            f"openai-insecure-api-key.{secret}",
            "openai-beta.realtime-v1",
        ],
        origin=ORIGIN,
    ) as ws:
        assert ws.subprotocol == "realtime"
        created, _ = await until(ws, "session.created")
        assert created["session"]["modalities"] == ["text"]
        await ws.send(
            '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
            '"content":[{"type":"input_text","text":"Hi from an old browser client"}]}}'
        )
        await ws.send('{"type":"response.create"}')
        done, before = await until(ws, "response.done")
        kinds = [e["type"] for e in before]
        assert "error" not in kinds, before
        assert "response.text.delta" in kinds  # beta names, translated from the GA upstream
        assert "conversation.item.created" in kinds
        assert done["response"]["status"] == "completed"


async def test_no_subprotocol_offered_none_selected(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key, {"max_uses": 2})
    async with session(ws_url(gateway), additional_headers=bearer(secret)) as ws:
        assert ws.subprotocol is None
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        await until(ws, "session.created")
    # Only the key subprotocol offered (no "realtime"): the token is read, nothing is echoed.
    async with session(ws_url(gateway), subprotocols=[f"openai-insecure-api-key.{secret}"]) as ws:
        assert ws.subprotocol is None
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        await until(ws, "session.created")
