"""Bad input gets a clear answer and loses nothing: REST errors in OpenAI's shape, and inside a
session an `error` event (the session goes on) or, for a frame too large, close 1009."""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest

from tests.component.wsclient import (
    bearer,
    error_body,
    expect_close,
    recv,
    refusal,
    session,
    text_turn,
    until,
    wait_for,
    ws_url,
)
from tests.support.gateway import ADMIN_KEY, GatewayHandle, gateway_settings, run_gateway

MIB = 1024 * 1024


# --- REST ----------------------------------------------------------------------------------


async def test_unknown_routes_are_json_404(gateway: GatewayHandle) -> None:
    unknown = error_body("not_found", "invalid_request_error", None, "Unknown route.")
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        for path in ("/nope", "/v1/nope", "/admin/nope"):
            response = await http.get(path, headers=bearer(ADMIN_KEY))
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/json"
            assert response.json() == unknown
    # A WebSocket upgrade to an unknown path is answered the same way (not a bare 403).
    for path in ("/v1/nope", "/v1/realtime/extra"):
        refused = await refusal(f"ws://127.0.0.1:{gateway.port}{path}?model=gpt-realtime")
        assert refused.status == 404, path
        assert refused.body == unknown


async def test_bad_admin_key_is_401(gateway: GatewayHandle) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        wrong = await http.get("/admin/tenants", headers=bearer("adm-wrong"))
        missing = await http.get("/admin/tenants")
        azure_style = await http.get("/admin/tenants", headers={"api-key": "adm-wrong"})
    for response in (wrong, missing, azure_style):
        assert response.status_code == 401
        assert response.json() == error_body(
            "invalid_api_key", "invalid_request_error", None, "Incorrect admin key provided."
        )


async def test_bad_tenant_key_on_rest_is_401(gateway: GatewayHandle) -> None:
    bad = error_body(
        "invalid_api_key", "invalid_request_error", None, "Incorrect API key provided."
    )
    missing = error_body(
        "invalid_api_key",
        "invalid_request_error",
        None,
        "You didn't provide an API key. Send 'Authorization: Bearer <key>'.",
    )
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        for method, path in (
            ("POST", "/v1/realtime/client_secrets"),
            ("POST", "/v1/realtime/sessions"),
            ("GET", "/v1/usage"),
            ("GET", "/v1/sessions"),
        ):
            response = await http.request(method, path, headers=bearer("rgw_sk_wrong"), json={})
            assert (response.status_code, response.json()) == (401, bad), path
            response = await http.request(method, path, json={})
            assert (response.status_code, response.json()) == (401, missing), path


async def _mint_raw(gateway: GatewayHandle, key: str, content: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        return await http.post(
            "/v1/realtime/client_secrets",
            content=content,
            headers={**bearer(key), "Content-Type": "application/json"},
        )


async def test_malformed_json_on_minting_is_400(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    response = await _mint_raw(gateway, key, b'{"session": {"type": "realtime"')
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "invalid_request_error"
    assert body["error"]["param"] is None
    assert body["error"]["message"].startswith("We could not parse the JSON body of your request")
    not_an_object = await _mint_raw(gateway, key, b"[1, 2]")
    assert not_an_object.status_code == 400
    assert not_an_object.json() == error_body(
        "invalid_value",
        "invalid_request_error",
        "body",
        "Invalid type for 'body': expected an object.",
    )


@pytest.mark.parametrize(
    ("body", "code", "param", "message"),
    [
        (
            {"session": {"type": "realtime", "flavour": "vanilla"}},
            "unknown_parameter",
            "session.flavour",
            "Unknown parameter: 'session.flavour'.",
        ),
        (
            {"sesion": {"type": "realtime"}},
            "unknown_parameter",
            "sesion",
            "Unknown parameter: 'sesion'.",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 9}},
            "invalid_value",
            "expires_after.seconds",
            "Invalid value for 'expires_after.seconds': expected an integer between 10 and 7200.",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 7201}},
            "invalid_value",
            "expires_after.seconds",
            "Invalid value for 'expires_after.seconds': expected an integer between 10 and 7200.",
        ),
        (
            {"session": {"model": "gpt-realtime"}},
            "missing_required_parameter",
            "session.type",
            "Missing required parameter: 'session.type'.",
        ),
        (
            {"session": {"type": "chat"}},
            "invalid_value",
            "session.type",
            "Invalid value: 'chat'. Supported values are: 'realtime' and 'transcription'.",
        ),
        (
            {"max_uses": 0},
            "invalid_value",
            "max_uses",
            "Invalid value for 'max_uses': expected an integer between 1 and 1000.",
        ),
    ],
)
async def test_minting_validation_errors(
    gateway: GatewayHandle, body: dict[str, object], code: str, param: str, message: str
) -> None:
    _, key = await gateway.create_tenant(name="acme")
    response = await _mint_raw(gateway, key, orjson.dumps(body))
    assert response.status_code == 400
    assert response.json() == error_body(code, "invalid_request_error", param, message)


# --- in a session --------------------------------------------------------------------------


def _is_gateway_error(event: dict[str, object], code: str, client_event_id: str | None) -> None:
    assert event["type"] == "error"
    assert isinstance(event["event_id"], str)
    assert event["event_id"]
    error = event["error"]
    assert isinstance(error, dict)
    assert set(error) == {"type", "code", "message", "param", "event_id"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] is None
    assert error["event_id"] == client_event_id


async def test_malformed_frames_get_an_error_event_and_the_session_goes_on(
    gateway: GatewayHandle,
) -> None:
    _, key = await gateway.create_tenant(name="acme")
    async with session(ws_url(gateway), additional_headers=bearer(key)) as ws:
        await until(ws, "session.created")
        await ws.send('{"type": "response.create", "event_id": "evt_cut"')  # truncated
        event = await recv(ws)
        _is_gateway_error(event, "invalid_event", None)
        assert str(event["error"]["message"]).startswith(  # type: ignore[index]
            "We could not parse the JSON body of your event"
        )
        await ws.send('{"event_id": "evt_no_type", "item": {}}')
        event = await recv(ws)
        _is_gateway_error(event, "invalid_event", "evt_no_type")
        assert event["error"]["message"] == "The 'type' field is missing."  # type: ignore[index]
        await ws.send('{"type": 42, "event_id": "evt_bad_type"}')
        _is_gateway_error(await recv(ws), "invalid_event", "evt_bad_type")
        await ws.send('["response.create"]')
        _is_gateway_error(await recv(ws), "invalid_event", None)
        await ws.send(b"\x00\x01binary")
        event = await recv(ws)
        _is_gateway_error(event, "unsupported_frame", None)
        assert event["error"]["message"] == (  # type: ignore[index]
            "Binary frames are not supported: send JSON events as text frames."
        )
        # Nothing of that reached the upstream (it would have answered with errors of its
        # own, which text_turn refuses), and the session is as usable as before.
        done = await text_turn(ws, "Still there?")
        assert done["response"]["status"] == "completed"


async def test_oversized_frame_closes_1009(redis_url: str) -> None:
    settings = gateway_settings(redis_url=redis_url, max_frame_bytes=128 * 1024)
    async with run_gateway(settings) as gw:
        _, key = await gw.create_tenant(name="acme")
        async with session(ws_url(gw), additional_headers=bearer(key), max_size=None) as ws:
            await until(ws, "session.created")
            audio = base64.b64encode(bytes(160 * 1024)).decode()
            await ws.send(
                orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode()
            )
            code, _ = await expect_close(ws)
        assert code == 1009
        async with httpx.AsyncClient(base_url=gw.http_url) as http:

            async def ended() -> bool:
                listed = await http.get("/v1/sessions", headers=bearer(key))
                return listed.json()["data"] == []

            await wait_for(ended, timeout=5)


async def test_fifteen_mib_audio_append_works(gateway: GatewayHandle) -> None:
    _, key = await gateway.create_tenant(name="acme")
    async with session(ws_url(gateway), additional_headers=bearer(key), max_size=None) as ws:
        await until(ws, "session.created")
        update = {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
        await ws.send(orjson.dumps(update).decode())
        await until(ws, "session.updated")
        # A frame of 15 MiB: its base64 audio is a little under that.
        audio = base64.b64encode(bytes((15 * MIB - 128) // 4 * 3)).decode()
        frame = orjson.dumps(
            {"type": "input_audio_buffer.append", "event_id": "evt_big", "audio": audio}
        )
        assert 15 * MIB - 128 <= len(frame) <= 15 * MIB
        await ws.send(frame.decode())
        await ws.send('{"type": "input_audio_buffer.commit", "event_id": "evt_commit"}')
        committed, before = await until(ws, "input_audio_buffer.committed", timeout=30)
        assert [e for e in before if e["type"] == "error"] == []
        assert committed["item_id"]
