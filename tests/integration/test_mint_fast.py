"""The mint routes served ahead of FastAPI (``api.mint_route``), against a real redis-server.

The same app answers twice: through ``GatewayApp`` (the bare ASGI endpoint) and through
FastAPI's own stack (its middleware, router and the routes in ``api.tokens``). Both must
answer alike, refusals included, and the token minted either way must work.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway.api.mint_route import MintRoute
from gateway.api.tokens import MAX_BODY_BYTES, Minter
from gateway.app import create_app
from gateway.services import Services
from gateway.store.tenants import TenantRecord
from tests.support.gateway import gateway_settings

GA = "/v1/realtime/client_secrets"
BETA = "/v1/realtime/sessions"


class Clients:
    def __init__(self, app: FastAPI, services: Services, key: str) -> None:
        self.services = services
        self.key = key
        self.fast = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")

        async def through_fastapi(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(app, scope, receive, send)

        self.router = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=through_fastapi), base_url="http://gw"
        )

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[Clients]:
    app = create_app(gateway_settings(redis_url=redis_url))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        _, key = await services.store.tenants.create("acme", models=["gpt-realtime"])
        both = Clients(app, services, key)
        async with both.fast, both.router:
            yield both


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs on every mint (secret, session id, expiry)."""
    out = dict(answer)
    secret = out.pop("client_secret", None) or {"value": out.pop("value")}
    assert secret["value"].startswith("ek_")
    out.pop("expires_at", None)
    session = dict(out.pop("session", {}))
    session.pop("id", None)
    out.pop("id", None)
    return {"top": out, "session": session}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (GA, {}),
        (GA, {"session": {"type": "realtime", "instructions": "Be brief."}}),
        (GA, {"session": {"type": "transcription"}, "expires_after": {"seconds": 30}}),
        (GA, {"session": {"type": "realtime"}, "max_uses": 3}),
        (BETA, {"model": "gpt-realtime", "voice": "marin"}),
        (BETA, {"client_secret": {"expires_after": {"anchor": "created_at", "seconds": 20}}}),
    ],
)
async def test_fast_route_answers_like_the_router(
    clients: Clients, path: str, body: dict[str, Any]
) -> None:
    fast = await clients.fast.post(path, json=body, headers=clients.auth())
    routed = await clients.router.post(path, json=body, headers=clients.auth())
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    assert fast.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    assert _comparable(fast.json()) == _comparable(routed.json())


@pytest.mark.parametrize(
    ("path", "content", "key"),
    [
        (GA, b'{"session": {"type": "realtime"', None),  # malformed JSON
        (GA, b"[1, 2]", None),  # not an object
        (GA, b'{"session": {"type": "realtime", "flavour": "x"}}', None),
        (GA, b'{"session": {"type": "realtime", "model": "gpt-4o"}}', None),  # not allowed
        (GA, b'{"expires_after": {"seconds": 9}}', None),
        (BETA, b'{"modalities": "audio", "colour": 1}', None),
        (GA, b"{}", "rgw_sk_wrong"),
        (BETA, b"{}", "ek_a_client_secret"),
    ],
)
async def test_fast_route_refuses_like_the_router(
    clients: Clients, path: str, content: bytes, key: str | None
) -> None:
    headers = {**clients.auth(key), "Content-Type": "application/json"}
    fast = await clients.fast.post(path, content=content, headers=headers)
    routed = await clients.router.post(path, content=content, headers=headers)
    assert 400 <= fast.status_code < 500
    assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    assert set(fast.json()["error"]) == {"message", "type", "param", "code"}


async def test_no_key_and_azure_style_key(clients: Clients) -> None:
    missing = await clients.fast.post(GA, json={})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    azure = await clients.fast.post(GA, json={}, headers={"api-key": clients.key})
    assert azure.status_code == 200


async def test_minted_token_is_stored_hashed_and_single_use(clients: Clients) -> None:
    minted = await clients.fast.post(
        GA, json={"session": {"type": "realtime"}}, headers=clients.auth()
    )
    secret = minted.json()["value"]
    tokens = clients.services.store.tokens
    record = await tokens.peek(secret)
    assert record.session_config["model"] == "gpt-realtime"
    assert record.max_uses == record.uses_left == 1
    await tokens.redeem(secret)
    with pytest.raises(Exception, match="already been used"):
        await tokens.redeem(secret)


async def test_oversized_body_is_refused(clients: Clients) -> None:
    big = b'{"session": {"type": "realtime", "instructions": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    headers = {**clients.auth(), "Content-Type": "application/json"}
    response = await clients.fast.post(GA, content=big, headers=headers)
    assert response.status_code == 400
    assert "larger than" in response.json()["error"]["message"]


async def test_other_methods_and_paths_go_through_fastapi(clients: Clients) -> None:
    wrong_method = await clients.fast.get(GA, headers=clients.auth())
    assert wrong_method.status_code == 405
    trailing = await clients.fast.post(GA + "x", json={}, headers=clients.auth())
    assert trailing.status_code == 404
    assert trailing.json()["error"]["code"] == "not_found"


async def test_deeply_nested_session_still_answers(clients: Clients) -> None:
    # Deeper than orjson serialises (254 levels): the answer falls back to the stdlib encoder.
    nested: Any = "leaf"
    for _ in range(300):
        nested = {"n": nested}
    body = {"session": {"type": "realtime", "prompt": {"id": "p", "variables": nested}}}
    response = await clients.fast.post(GA, content=json.dumps(body), headers=clients.auth())
    assert response.status_code == 200, response.text
    variables = response.json()["session"]["prompt"]["variables"]
    for _ in range(300):
        variables = variables["n"]
    assert variables == "leaf"


# --- the endpoint on its own, with a minter that fails --------------------------------------


class _FailingMinter(Minter):
    async def mint(self, tenant: TenantRecord, protocol: Any, raw: bytes) -> bytes:
        raise RuntimeError("a bug in the mint path")


async def _call(route: MintRoute, app: FastAPI, key: str, messages: list[Message]) -> list[Message]:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": GA,
        "headers": [(b"authorization", f"Bearer {key}".encode())],
        "app": app,
    }
    sent: list[Message] = []
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await route(scope, receive, send)
    return sent


async def test_an_unexpected_error_is_a_500_in_openai_shape(redis_url: str) -> None:
    app = create_app(gateway_settings(redis_url=redis_url))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        _, key = await services.store.tenants.create("acme")
        route = MintRoute(_FailingMinter(services), "ga")
        sent = await _call(route, app, key, [{"type": "http.request", "body": b"{}"}])
    assert sent[0]["status"] == 500
    body = orjson.loads(sent[1]["body"])
    assert body["error"]["type"] == "server_error"
    assert "bug" not in body["error"]["message"]  # internals are not echoed


async def test_a_body_in_chunks_and_a_client_that_leaves(redis_url: str) -> None:
    app = create_app(gateway_settings(redis_url=redis_url))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        _, key = await services.store.tenants.create("acme")
        route = MintRoute(Minter(services), "ga")
        chunks: list[Message] = [
            {"type": "http.request", "body": b'{"session": ', "more_body": True},
            {"type": "http.request", "body": b'{"type": "realtime"}}', "more_body": False},
        ]
        sent = await _call(route, app, key, chunks)
        assert sent[0]["status"] == 200
        assert orjson.loads(sent[1]["body"])["session"]["type"] == "realtime"
        gone: list[Message] = [
            {"type": "http.request", "body": b"{", "more_body": True},
            {"type": "http.disconnect"},
        ]
        assert await _call(route, app, key, gone) == []  # nobody left to answer
