"""The official openai SDK against the real gateway: mint, converse, see usage."""

from __future__ import annotations

from typing import Any

import httpx
from openai import AsyncOpenAI

from tests.support.gateway import GatewayHandle


def _client(gateway: GatewayHandle, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=key, base_url=gateway.http_url + "/v1", websocket_base_url=gateway.ws_url
    )


async def _text_turn(conn: Any, text: str) -> tuple[str, dict[str, Any]]:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()
    out = []
    async for event in conn:
        if event.type == "response.output_text.delta":
            out.append(event.delta)
        elif event.type == "error":
            raise AssertionError(event.error)
        elif event.type == "response.done":
            return "".join(out), event.response.usage.model_dump()
    raise AssertionError("connection ended before response.done")


async def test_mint_then_converse_and_usage_adds_up(gateway: GatewayHandle) -> None:
    tenant_id, key = await gateway.create_tenant(name="acme")
    async with _client(gateway, key) as backend:
        secret = await backend.realtime.client_secrets.create(
            session={"type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"]}
        )
    assert secret.value.startswith("ek_")
    front_end = _client(gateway, secret.value)
    totals = 0
    async with front_end.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.output_modalities == ["text"]
        for text in ("Hello there", "And again, a longer question this time?"):
            reply, usage = await _text_turn(conn, text)
            assert reply
            totals += usage["total_tokens"]
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tenant_id"] == tenant_id
    assert body["total"]["tokens"] == totals
    assert body["total"]["responses"] == 2
    assert body["total"]["sessions"] == 1


async def test_the_asgi_data_path_holds_the_same_conversation(redis_url: str) -> None:
    """The uvicorn + Starlette data path (GATEWAY_DATA_PATH=asgi) stays a working fallback."""
    from tests.support.gateway import gateway_settings, run_gateway

    async with run_gateway(gateway_settings(redis_url=redis_url, data_path="asgi")) as gateway:
        await test_mint_then_converse_and_usage_adds_up(gateway)
