"""Every refusal of a realtime upgrade is an HTTP answer with OpenAI's JSON error body.

Raw `websockets` clients: `InvalidStatus.response` carries the status, headers and body the
gateway answered the upgrade with (never accept-then-close).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve

from gateway.errors import TokenAlreadyUsed
from gateway.sim import SimConfig, SimServer
from gateway.store import keys
from gateway.store.hashing import SecretHasher
from tests.component.wsclient import (
    RecordingProxy,
    bearer,
    error_body,
    mint,
    refusal,
    session,
    sim_upstream,
    text_turn,
    until,
    usage_of,
    wait_for,
    ws_url,
)
from tests.support.gateway import ADMIN_KEY, GatewayHandle, gateway_settings, run_gateway
from tests.support.servers import RedisServer, free_port

NO_CREDENTIAL = (
    "You didn't provide an API key or client secret. Send it as 'Authorization: Bearer "
    "<key>' or in the 'openai-insecure-api-key.<key>' subprotocol."
)


def _expect(refused: object, status: int, body: dict[str, object]) -> None:
    assert getattr(refused, "status", None) == status, refused
    assert getattr(refused, "body", None) == body


# --- who is asking -------------------------------------------------------------------------


async def test_no_credential_is_401(gateway: GatewayHandle) -> None:
    refused = await refusal(ws_url(gateway))
    _expect(
        refused, 401, error_body("invalid_api_key", "invalid_request_error", None, NO_CREDENTIAL)
    )
    # A browser that offers the key subprotocol with "null" (no key yet) has no credential.
    refused = await refusal(
        ws_url(gateway), subprotocols=["realtime", "openai-insecure-api-key.null"]
    )
    assert refused.status == 401
    assert refused.error["code"] == "invalid_api_key"


async def test_bad_key_and_unknown_secret_are_401(gateway: GatewayHandle) -> None:
    await gateway.create_tenant(name="acme")
    bad_key = await refusal(ws_url(gateway), additional_headers=bearer("rgw_sk_not-a-key"))
    _expect(
        bad_key,
        401,
        error_body("invalid_api_key", "invalid_request_error", None, "Incorrect API key provided."),
    )
    unknown = await refusal(ws_url(gateway), additional_headers=bearer("ek_never-minted"))
    _expect(
        unknown,
        401,
        error_body("invalid_api_key", "invalid_request_error", None, "Invalid client secret."),
    )
    # The Azure-style header is read too, and refused the same way.
    azure = await refusal(ws_url(gateway), additional_headers={"api-key": "nope"})
    assert (azure.status, azure.error["code"]) == (401, "invalid_api_key")


async def test_expired_secret_is_401_token_expired(gateway: GatewayHandle, redis_url: str) -> None:
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key, {"expires_after": {"anchor": "created_at", "seconds": 10}})
    # Expiry is judged on Redis' clock inside the redeem script: move the secret's expiry into
    # the past instead of sleeping 10 s.
    hasher = SecretHasher(gateway.settings.hash_secret.get_secret_value().encode())
    record = keys.token(hasher.digest("client-secret", secret))
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.exists(record) == 1
        await client.hset(record, "expires_ms", str(int(time.time() * 1000) - 1000))
    finally:
        await client.aclose()
    refused = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    _expect(
        refused,
        401,
        error_body(
            "token_expired", "invalid_request_error", None, "The client secret has expired."
        ),
    )


async def test_replayed_secret_is_401_token_already_used(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key)
    async with session(ws_url(gateway), additional_headers=bearer(secret)) as ws:
        await until(ws, "session.created")
    replay = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    _expect(
        replay,
        401,
        error_body(
            "token_already_used",
            "invalid_request_error",
            None,
            "The client secret has already been used.",
        ),
    )


async def test_max_uses_two_works_twice_then_401(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key, {"max_uses": 2})
    for _ in range(2):
        async with session(ws_url(gateway), additional_headers=bearer(secret)) as ws:
            await until(ws, "session.created")
    third = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    assert (third.status, third.error["code"]) == (401, "token_already_used")


async def test_disabled_tenant_is_403(gateway: GatewayHandle) -> None:
    tenant_id, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key)
    async with gateway.admin() as admin:
        response = await admin.post(f"/admin/tenants/{tenant_id}/disable")
    assert response.status_code == 200, response.text
    refused = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    _expect(
        refused,
        403,
        error_body("tenant_disabled", "invalid_request_error", None, "This tenant is disabled."),
    )
    # The tenant's own key is refused too (server-side clients use it directly).
    by_key = await refusal(ws_url(gateway), additional_headers=bearer(key))
    _expect(
        by_key,
        403,
        error_body("tenant_disabled", "invalid_request_error", None, "This tenant is disabled."),
    )


# --- tenants stay apart --------------------------------------------------------------------


async def test_cross_tenant_reads_and_billing(gateway: GatewayHandle) -> None:
    a_id, a_key = await gateway.create_tenant(name="a")
    b_id, b_key = await gateway.create_tenant(name="b")
    secret = await mint(gateway, a_key)
    async with session(ws_url(gateway), additional_headers=bearer(secret)) as ws:
        await until(ws, "session.created")
        done = await text_turn(ws, "Bill this to A, please.")
        tokens = done["response"]["usage"]["total_tokens"]
        assert tokens > 0
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            a_sessions = (await http.get("/v1/sessions", headers=bearer(a_key))).json()["data"]
            b_sessions = (await http.get("/v1/sessions", headers=bearer(b_key))).json()["data"]
            assert [s["tenant_id"] for s in a_sessions] == [a_id]
            assert b_sessions == []
            # B cannot end (or even see) A's session: answered like a missing one.
            sid = a_sessions[0]["session_id"]
            ended = await http.delete(f"/v1/sessions/{sid}", headers=bearer(b_key))
            assert ended.status_code == 404
            assert ended.json() == error_body(
                "not_found", "invalid_request_error", "session_id", f"No live session '{sid}'."
            )
            # A client secret is not a tenant key: it cannot read usage or sessions.
            for path in ("/v1/usage", "/v1/sessions"):
                as_secret = await http.get(path, headers=bearer(secret))
                assert as_secret.status_code == 401
                assert as_secret.json()["error"]["code"] == "invalid_api_key"
    a_usage, b_usage = await usage_of(gateway, a_key), await usage_of(gateway, b_key)
    assert a_usage["tenant_id"] == a_id
    assert a_usage["total"]["tokens"] == tokens
    assert a_usage["total"]["sessions"] == 1
    assert b_usage["tenant_id"] == b_id
    assert b_usage["total"]["tokens"] == 0
    assert b_usage["total"]["sessions"] == 0
    assert b_usage["days"] == [] or all(d["tokens"] == 0 for d in b_usage["days"])


# --- policy --------------------------------------------------------------------------------


async def test_origin_not_allowed_is_403(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key, {"allowed_origins": ["https://app.example"], "max_uses": 3})
    origin_refusal = error_body(
        "origin_not_allowed",
        "invalid_request_error",
        None,
        "This origin is not allowed to open sessions for this tenant.",
    )
    _expect(
        await refusal(
            ws_url(gateway), additional_headers=bearer(secret), origin="https://evil.example"
        ),
        403,
        origin_refusal,
    )
    _expect(await refusal(ws_url(gateway), additional_headers=bearer(secret)), 403, origin_refusal)
    # Refusals consumed nothing: the right origin still gets in.
    async with session(
        ws_url(gateway), additional_headers=bearer(secret), origin="https://app.example"
    ) as ws:
        await until(ws, "session.created")


async def test_model_not_allowed_is_403(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme", models=["gpt-realtime-mini"])
    refused = await refusal(ws_url(gateway), additional_headers=bearer(key))
    _expect(
        refused,
        403,
        error_body(
            "model_not_allowed",
            "invalid_request_error",
            "model",
            "The model 'gpt-realtime' is not allowed for this tenant.",
        ),
    )
    # Minting for that model is refused the same way, as a REST answer.
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        minted = await http.post(
            "/v1/realtime/client_secrets",
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            headers=bearer(key),
        )
    assert minted.status_code == 403
    assert minted.json() == error_body(
        "model_not_allowed",
        "invalid_request_error",
        "session.model",
        "The model 'gpt-realtime' is not allowed for this tenant.",
    )
    # The allowed model works.
    async with session(
        ws_url(gateway, "model=gpt-realtime-mini"), additional_headers=bearer(key)
    ) as ws:
        await until(ws, "session.created")


async def test_missing_model_is_400(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    refused = await refusal(ws_url(gateway, ""), additional_headers=bearer(key))
    _expect(
        refused,
        400,
        error_body(
            "missing_required_parameter",
            "invalid_request_error",
            "model",
            "Missing required parameter: 'model'.",
        ),
    )


async def test_secret_for_another_model_is_400(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(gateway, key)  # bound to gpt-realtime
    refused = await refusal(
        ws_url(gateway, "model=gpt-realtime-mini"), additional_headers=bearer(secret)
    )
    assert (refused.status, refused.error["code"], refused.error["param"]) == (
        400,
        "invalid_value",
        "model",
    )
    # Not consumed by the refusal.
    async with session(ws_url(gateway), additional_headers=bearer(secret)) as ws:
        await until(ws, "session.created")


# --- limits and availability ---------------------------------------------------------------


async def test_concurrency_limit_is_429_with_retry_after(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme", limits={"max_concurrent_sessions": 1})
    async with session(ws_url(gateway), additional_headers=bearer(key)) as ws:
        await until(ws, "session.created")
        refused = await refusal(ws_url(gateway), additional_headers=bearer(key))
        _expect(
            refused,
            429,
            error_body(
                "rate_limit_exceeded",
                "rate_limit_error",
                None,
                "Too many concurrent sessions for this tenant (limit 1).",
            ),
        )
        assert refused.headers["Retry-After"] == "1"
    # The slot is given back when the session ends.
    await until_no_live_session(gateway, key)
    async with session(ws_url(gateway), additional_headers=bearer(key)) as ws:
        await until(ws, "session.created")


async def test_refusals_after_the_lease_keep_the_client_secret(gateway: GatewayHandle) -> None:
    """The lease and the token's use are taken in one step, alongside the budget check: a
    refusal for either gives the use back (and the slot), so the same secret works later."""
    assert gateway.services is not None
    store = gateway.services.store
    _, key = await gateway.create_tenant(name="acme", limits={"max_concurrent_sessions": 1})
    secret = await mint(gateway, key)
    async with session(ws_url(gateway), additional_headers=bearer(key)) as ws:
        await until(ws, "session.created")
        for _ in range(2):  # full: refused before anything is consumed
            refused = await refusal(ws_url(gateway), additional_headers=bearer(secret))
            assert getattr(refused, "status", None) == 429
        assert (await store.tokens.peek(secret)).uses_left == 1
    await until_no_live_session(gateway, key)
    async with session(ws_url(gateway), additional_headers=bearer(secret)) as ws:
        await until(ws, "session.created")
        with pytest.raises(TokenAlreadyUsed):  # used now that a session has it
            await store.tokens.peek(secret)
    refused = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    assert getattr(refused, "status", None) == 401

    # Over budget (a day's budget of 0 tokens): the lease and the use taken alongside the
    # budget check are given back before the 429.
    broke_id, broke_key = await gateway.create_tenant(name="broke", limits={"tokens_per_day": 0})
    secret = await mint(gateway, broke_key)
    refused = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    assert getattr(refused, "status", None) == 429
    assert "over its budget" in str(getattr(refused, "body", ""))
    assert (await store.tokens.peek(secret)).uses_left == 1
    assert await store.sessions.live_count(broke_id) == 0


async def test_draining_is_503(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    assert gateway.services is not None
    gateway.services.draining = True
    try:
        refused = await refusal(ws_url(gateway), additional_headers=bearer(key))
    finally:
        gateway.services.draining = False
    _expect(
        refused,
        503,
        error_body(
            "server_shutting_down",
            "server_error",
            None,
            "This gateway replica is shutting down. Reconnect to open a new session.",
        ),
    )


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(api_keys=("sk-upstream-own",), speed=0.0)) as server:
        yield server


async def test_no_upstream_for_the_model_is_503(redis_url: str, sim: SimServer) -> None:
    settings = gateway_settings(
        redis_url=redis_url,
        upstreams=[sim_upstream(sim.ws_url, "sk-upstream-own", models=["gpt-realtime"])],
    )
    async with run_gateway(settings) as gw:
        _, key = await gw.create_tenant(name="acme")
        refused = await refusal(
            ws_url(gw, "model=gpt-realtime-mini"), additional_headers=bearer(key)
        )
        _expect(
            refused,
            503,
            error_body(
                "no_upstream",
                "server_error",
                None,
                "No upstream is configured for the model 'gpt-realtime-mini'.",
            ),
        )
        async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
            await until(ws, "session.created")


async def test_redis_unreachable_at_connect_is_503() -> None:
    with RedisServer().running() as own_redis:
        async with run_gateway(gateway_settings(redis_url=own_redis.url)) as gw:
            _, key = await gw.create_tenant(name="acme")
            secret = await mint(gw, key)
            own_redis.stop()
            unavailable = error_body(
                "store_unavailable",
                "server_error",
                None,
                "The gateway's state store is unreachable; try again.",
            )
            for credential in (secret, key):
                refused = await refusal(ws_url(gw), additional_headers=bearer(credential))
                _expect(refused, 503, unavailable)
            # Minting needs the store too: a REST 503 with the same body.
            async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
                minted = await http.post(
                    "/v1/realtime/client_secrets", json={}, headers=bearer(key)
                )
                ready = await http.get("/readyz")
            assert minted.status_code == 503
            assert minted.json() == unavailable
            assert ready.status_code == 503


async def test_dead_upstream_is_502_and_gives_the_use_back(redis_url: str) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings = gateway_settings(redis_url=redis_url, upstreams=[sim_upstream(dead, "sk-x")])
    async with run_gateway(settings) as gw:
        _, key = await gw.create_tenant(name="acme", limits={"max_concurrent_sessions": 1})
        secret = await mint(gw, key)
        unavailable = error_body(
            "upstream_unavailable",
            "server_error",
            None,
            "The upstream 'sim' could not be reached (ConnectionRefusedError).",
        )
        for _ in range(2):  # the lease is released and the use given back each time
            refused = await refusal(ws_url(gw), additional_headers=bearer(secret))
            _expect(refused, 502, unavailable)
        assert gw.services is not None
        record = await gw.services.store.tokens.peek(secret)
        assert record.uses_left == 1


async def test_upstream_refusing_the_gateway_key_is_502(redis_url: str, sim: SimServer) -> None:
    settings = gateway_settings(
        redis_url=redis_url, upstreams=[sim_upstream(sim.ws_url, "sk-upstream-wrong")]
    )
    async with run_gateway(settings) as gw:
        _, key = await gw.create_tenant(name="acme")
        secret = await mint(gw, key)
        refused = await refusal(ws_url(gw), additional_headers=bearer(secret))
        _expect(
            refused,
            502,
            error_body(
                "upstream_rejected",
                "server_error",
                None,
                "The upstream 'sim' refused the gateway's credential.",
            ),
        )
        assert b"sk-upstream" not in refused.raw


async def test_client_credential_never_goes_upstream(redis_url: str, sim: SimServer) -> None:
    """The simulator accepts only its own key, so a working session proves the gateway used
    its key; the proxy in between shows the client's secret was not sent along as well."""
    async with RecordingProxy(sim.http_url) as proxy:
        settings = gateway_settings(
            redis_url=redis_url, upstreams=[sim_upstream(proxy.ws_url, "sk-upstream-own")]
        )
        async with run_gateway(settings) as gw:
            _, key = await gw.create_tenant(name="acme")
            secret = await mint(gw, key)
            async with session(
                ws_url(gw),
                subprotocols=["realtime", f"openai-insecure-api-key.{secret}"],
                additional_headers={"Origin": "https://app.example", "X-Sim-Fault": "refuse:500"},
            ) as ws:
                await until(ws, "session.created")
                await text_turn(ws, "Who am I talking to?")
    assert len(proxy.connections) == 1
    request = proxy.connections[0].request
    assert request.headers["Authorization"] == "Bearer sk-upstream-own"
    assert request.path == "/v1/realtime?model=gpt-realtime"
    handshake = str(request.headers) + request.path
    for leaked in (secret, key, "openai-insecure-api-key", "X-Sim-Fault", "app.example"):
        assert leaked not in handshake
    sent = b"".join(proxy.connections[0].to_upstream)
    assert secret.encode() not in sent
    assert key.encode() not in sent


async def test_admin_endpoints_refuse_tenant_keys(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        as_tenant = await http.get("/admin/tenants", headers=bearer(key))
        as_admin = await http.get("/admin/tenants", headers=bearer(ADMIN_KEY))
    assert as_tenant.status_code == 401
    assert as_tenant.json() == error_body(
        "invalid_api_key", "invalid_request_error", None, "Incorrect admin key provided."
    )
    assert as_admin.status_code == 200


@pytest.mark.parametrize(
    ("upstream_status", "status", "code", "error_type", "message", "retry_after"),
    [
        (
            429,
            429,
            "rate_limit_exceeded",
            "rate_limit_error",
            "The upstream 'sim' is rate limited.",
            "5",
        ),
        (
            503,
            502,
            "upstream_unavailable",
            "server_error",
            "The upstream 'sim' answered the connection with HTTP 503.",
            None,
        ),
    ],
)
async def test_upstream_refusing_the_upgrade(
    redis_url: str,
    upstream_status: int,
    status: int,
    code: str,
    error_type: str,
    message: str,
    retry_after: str | None,
) -> None:
    config = SimConfig(api_keys=("sk-upstream-own",), speed=0.0, refuse_status=upstream_status)
    async with SimServer(config) as refusing:
        settings = gateway_settings(
            redis_url=redis_url, upstreams=[sim_upstream(refusing.ws_url, "sk-upstream-own")]
        )
        async with run_gateway(settings) as gw:
            _, key = await gw.create_tenant(name="acme")
            refused = await refusal(ws_url(gw), additional_headers=bearer(key))
    _expect(refused, status, error_body(code, error_type, None, message))
    assert refused.headers.get("Retry-After") == retry_after


async def test_upstream_that_never_answers_is_502_after_the_connect_timeout(
    redis_url: str,
) -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.wait_closed()  # accepts, then never sends session.created

    async with serve(silent, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        settings = gateway_settings(
            redis_url=redis_url,
            upstreams=[sim_upstream(f"ws://127.0.0.1:{port}/v1", "sk-x")],
            upstream_connect_timeout_seconds=0.5,
        )
        async with run_gateway(settings) as gw:
            _, key = await gw.create_tenant(name="acme")
            secret = await mint(gw, key)
            started = time.monotonic()
            refused = await refusal(ws_url(gw), additional_headers=bearer(secret))
            assert time.monotonic() - started < 5
            assert gw.services is not None
            assert (await gw.services.store.tokens.peek(secret)).uses_left == 1
    _expect(
        refused,
        502,
        error_body(
            "upstream_unavailable",
            "server_error",
            None,
            "The upstream 'sim' did not answer in time.",
        ),
    )


async def test_upstream_refusing_the_bound_configuration_is_400(
    gateway: GatewayHandle,
) -> None:
    """The minted configuration passes the gateway's field check but not the upstream's value
    check: the upstream's reason is shown, and the client secret is not spent."""
    _, key = await gateway.create_tenant(name="acme")
    secret = await mint(
        gateway, key, {"session": {"type": "realtime", "output_modalities": ["video"]}}
    )
    refused = await refusal(ws_url(gateway), additional_headers=bearer(secret))
    assert refused.status == 400
    assert refused.error["type"] == "invalid_request_error"
    assert refused.error["code"] == "invalid_request_error"
    assert refused.error["param"] == "session.output_modalities"
    assert refused.error["message"].startswith("The upstream refused the session configuration: ")
    assert gateway.services is not None
    assert (await gateway.services.store.tokens.peek(secret)).uses_left == 1


async def until_no_live_session(gateway: GatewayHandle, key: str) -> None:
    """The gateway books a session's end just after the close handshake: wait until the
    tenant sees no live session."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:

        async def no_live_session() -> bool:
            listed = await http.get("/v1/sessions", headers=bearer(key))
            return listed.json()["data"] == []

        await wait_for(no_live_session, timeout=3)
