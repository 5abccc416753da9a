"""Each error the simulator sends, with its exact shape, from a raw websockets client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.sim import SimConfig, SimServer
from gateway.sim.audio import silence
from tests.sim.conftest import Connect, raw_connector
from tests.sim.support import BETA, b64

CASES: list[tuple[Any, dict[str, Any]]] = [
    (
        "{not json",
        {"code": "invalid_json", "param": None, "event_id": None},
    ),
    (
        {"event_id": "evt_1"},
        {
            "code": "invalid_event",
            "message": "The 'type' field is missing.",
            "param": None,
            "event_id": "evt_1",
        },
    ),
    (
        {"type": "response.fly", "event_id": "evt_2"},
        {"code": "invalid_value", "param": "type", "event_id": "evt_2"},
    ),
    (
        {"type": "session.update", "event_id": "evt_3", "session": {"instructions": "x"}},
        {
            "code": "missing_required_parameter",
            "message": "Missing required parameter: 'session.type'.",
            "param": "session.type",
            "event_id": "evt_3",
        },
    ),
    (
        {
            "type": "session.update",
            "event_id": "evt_4",
            "session": {"type": "realtime", "totally_made_up_field": 1},
        },
        {
            "code": "unknown_parameter",
            "message": "Unknown parameter: 'session.totally_made_up_field'.",
            "param": "session.totally_made_up_field",
            "event_id": "evt_4",
        },
    ),
    (  # a beta field on GA
        {"type": "session.update", "session": {"type": "realtime", "modalities": ["text"]}},
        {
            "code": "unknown_parameter",
            "message": "Unknown parameter: 'session.modalities'.",
            "param": "session.modalities",
            "event_id": None,
        },
    ),
    (
        {"type": "session.update", "session": {"type": "session"}},
        {
            "code": "invalid_value",
            "message": "Invalid value: 'session'. Supported values are: 'realtime' and "
            "'transcription'.",
            "param": "session.type",
            "event_id": None,
        },
    ),
    (
        {"type": "response.cancel", "event_id": "evt_5"},
        {
            "code": "response_cancel_not_active",
            "message": "Cancellation failed: no active response found",
            "param": None,
            "event_id": "evt_5",
        },
    ),
    (
        {"type": "conversation.item.delete", "item_id": "item_nope", "event_id": "evt_6"},
        {
            "code": "item_delete_invalid_item_id",
            "message": "Item with item_id not found: item_nope",
            "param": "item_id",
            "event_id": "evt_6",
        },
    ),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "x",
            "content_index": 0,
            "audio_end_ms": 1,
        },
        {"code": "item_truncate_invalid_item_id", "param": "item_id", "event_id": None},
    ),
    (
        {"type": "input_audio_buffer.append", "audio": "***", "event_id": "evt_7"},
        {"code": "invalid_value", "param": "audio", "event_id": "evt_7"},
    ),
    (
        {"type": "response.cancel", "bogus": 1},
        {"code": "unknown_parameter", "param": "bogus", "event_id": None},
    ),
    (
        {"type": "conversation.item.create", "item": {"role": "user", "content": []}},
        {"code": "missing_required_parameter", "param": "item.type", "event_id": None},
    ),
]


@pytest.mark.parametrize(("frame", "expected"), CASES)
async def test_error_shape(raw: Connect, frame: Any, expected: dict[str, Any]) -> None:
    async with raw() as client:
        await client.until("session.created")
        await client.send(frame)
        event = await client.next()
        assert event["type"] == "error"
        error = event["error"]
        assert error["type"] == "invalid_request_error"
        assert {k: error[k] for k in expected} == expected
        assert set(error) == {"type", "code", "message", "param", "event_id"}
        # Errors are recoverable: the session goes on.
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.next())["type"] == "input_audio_buffer.cleared"


async def test_commit_under_100ms_is_refused_then_a_real_commit_works(raw: Connect) -> None:
    async with raw() as client:
        await client.until("session.created")
        await client.send({"type": "input_audio_buffer.append", "audio": b64(silence(50))})
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
        error = (await client.next())["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "input_audio_buffer_commit_empty",
            "message": "Error committing input audio buffer: buffer too small. Expected at least "
            "100ms of audio, but buffer only has 50.00ms of audio.",
            "param": None,
            "event_id": "evt_c",
        }
        await client.send({"type": "input_audio_buffer.append", "audio": b64(silence(100))})
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.next()
        assert committed["type"] == "input_audio_buffer.committed"
        added = await client.next()
        assert added["item"]["id"] == committed["item_id"]


async def test_second_response_while_one_is_active() -> None:
    async with SimServer(SimConfig(speed=0.5)) as server, raw_connector(server)() as client:
        await client.until("session.created")
        await client.send({"type": "response.create"})
        await client.send({"type": "response.create", "event_id": "evt_twice"})
        events = [await client.next()]
        while {"error", "response.created"} - {e["type"] for e in events}:
            events.append(await client.next())
        active = next(e for e in events if e["type"] == "response.created")["response"]["id"]
        assert next(e for e in events if e["type"] == "error")["error"] == {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": f"Conversation already has an active response in progress: {active}. "
            "Wait until the response is finished before creating a new one.",
            "param": None,
            "event_id": "evt_twice",
        }
        await client.send({"type": "response.cancel"})
        done = (await client.until("response.done"))[-1]["response"]
        assert (done["id"], done["status"]) == (active, "cancelled")


async def test_session_expires_with_an_error_then_a_close() -> None:
    config = SimConfig(speed=0, max_session_seconds=0.3)
    async with SimServer(config) as server, raw_connector(server)() as client:
        await client.until("session.created")
        error = (await client.until("error"))[-1]
        assert error["error"] == {
            "type": "invalid_request_error",
            "code": "session_expired",
            "message": "Your session hit the maximum duration of 0.005 minutes.",
            "param": None,
            "event_id": None,
        }
        with pytest.raises(ConnectionClosed) as closed:
            await client.ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000
        assert closed.value.rcvd.reason == "invalid_request_error.session_expired"


@pytest.mark.parametrize("how", ["header", "subprotocol"])
async def test_beta_refused_like_openai_today(how: str) -> None:
    async with SimServer(SimConfig(speed=0, refuse_beta=True)) as server:
        open_raw = raw_connector(server)
        extra: dict[str, Any] = (
            {"beta": True}
            if how == "header"
            else {"subprotocols": ["realtime", "openai-beta.realtime-v1"]}
        )
        async with open_raw(**extra) as client:
            client.validate = BETA
            if how == "subprotocol":
                assert client.ws.subprotocol == "realtime"
            event = await client.next()
            assert event["error"] == {
                "type": "invalid_request_error",
                "code": "beta_api_shape_disabled",
                "message": "The Realtime Beta API is no longer supported. Please use "
                "/v1/realtime for the GA API.",
                "param": None,
                "event_id": None,
            }
            with pytest.raises(ConnectionClosed) as closed:
                await client.ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4000
            assert closed.value.rcvd.reason == "invalid_request_error.beta_api_shape_disabled"
        async with open_raw() as client:  # GA on the same simulator is served
            assert (await client.next())["type"] == "session.created"


# --- authentication ------------------------------------------------------------------------


async def test_wrong_key_is_refused_on_the_upgrade(raw: Connect) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with raw(key="sk-not-the-sim-key"):
            pass
    response = refused.value.response
    assert response.status_code == 401
    body = json.loads(response.body or b"")
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    assert "sk-not-the-sim-key" not in body["error"]["message"]  # keys are masked


async def test_missing_key_is_refused_on_the_upgrade(raw: Connect) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with raw(key=None):
            pass
    assert refused.value.response.status_code == 401
    assert (
        "didn't provide an API key"
        in json.loads(refused.value.response.body or b"")["error"]["message"]
    )


async def test_browser_subprotocol_key_and_realtime_echo(raw: Connect) -> None:
    protocols = ["realtime", "openai-insecure-api-key.sk-sim"]
    async with raw(key=None, subprotocols=protocols) as client:
        assert client.ws.subprotocol == "realtime"
        assert (await client.next())["type"] == "session.created"
    async with raw() as client:  # nothing offered, nothing selected
        assert client.ws.subprotocol is None


async def test_azure_url_forms(raw: Connect) -> None:
    headers = {"api-key": "sk-sim"}
    async with raw(
        "api-version=2025-04-01-preview&deployment=gpt-4o-realtime-preview",
        key=None,
        headers=headers,
        path="/openai/realtime",
    ) as client:
        client.validate = BETA  # preview api-versions speak beta
        session = (await client.next())["session"]
        assert session["model"] == "gpt-4o-realtime-preview"
        assert "modalities" in session
    async with raw(
        "api-version=2025-08-28&deployment=gpt-realtime",
        key=None,
        headers=headers,
        path="/openai/realtime",
    ) as client:
        assert (await client.next())["session"]["type"] == "realtime"
    async with raw(
        "model=gpt-realtime", key=None, headers=headers, path="/openai/v1/realtime"
    ) as client:
        assert (await client.next())["session"]["type"] == "realtime"
    with pytest.raises(InvalidStatus) as refused:
        async with raw("model=gpt-realtime&api-version=2025-08-28", path="/openai/v1/realtime"):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as missing:
        async with raw("deployment=x", path="/openai/realtime"):
            pass
    assert missing.value.response.status_code == 404


async def test_rest_refusals(sim: SimServer) -> None:
    async with httpx.AsyncClient(base_url=sim.http_url) as http:
        bad_key = await http.post(
            "/v1/realtime/client_secrets", headers={"Authorization": "Bearer sk-nope"}, json={}
        )
        assert bad_key.status_code == 401
        assert bad_key.json()["error"]["code"] == "invalid_api_key"
        bad_session = await http.post(
            "/v1/realtime/client_secrets",
            headers={"Authorization": "Bearer sk-sim"},
            json={"session": {"type": "realtime", "voice": "alloy"}},
        )
        assert bad_session.status_code == 400
        assert bad_session.json() == {
            "error": {
                "message": "Unknown parameter: 'session.voice'.",
                "type": "invalid_request_error",
                "param": "session.voice",
                "code": "unknown_parameter",
            }
        }
        minted = await http.post(
            "/v1/realtime/client_secrets", headers={"Authorization": "Bearer sk-sim"}, json={}
        )
        ek = minted.json()["value"]
        # An ephemeral key opens sessions; it cannot mint more keys.
        again = await http.post(
            "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {ek}"}, json={}
        )
        assert again.status_code == 401
