from __future__ import annotations

from gateway.protocol.handshake import origin_allowed, parse_handshake, split_subprotocols


def test_bearer_wins_and_beta_header() -> None:
    hs = parse_handshake(
        {"authorization": "Bearer ek_abc", "openai-beta": "realtime=v1"}, {"model": "m"}, []
    )
    assert hs.credential == "ek_abc"
    assert hs.credential_source == "authorization"
    assert hs.beta_requested
    assert hs.is_client_secret
    assert hs.model == "m"
    assert hs.reply_subprotocol is None


def test_browser_subprotocols() -> None:
    protos = split_subprotocols(
        ["realtime, openai-insecure-api-key.ek_x1", "openai-beta.realtime-v1"]
    )
    hs = parse_handshake({}, {}, protos)
    assert hs.credential == "ek_x1"
    assert hs.credential_source == "subprotocol"
    assert hs.reply_subprotocol == "realtime"  # never the token
    assert hs.beta_requested


def test_null_subprotocol_key_is_no_key() -> None:
    hs = parse_handshake({}, {}, ["realtime", "openai-insecure-api-key.null"])
    assert hs.credential is None


def test_azure_forms() -> None:
    hs = parse_handshake({"api-key": "k1"}, {"deployment": "gpt-realtime"}, [])
    assert hs.credential == "k1"
    assert hs.model == "gpt-realtime"
    hs = parse_handshake({}, {"api-key": "k2", "model": "x"}, [])
    assert hs.credential == "k2"
    assert hs.credential_source == "query"


def test_origins() -> None:
    assert origin_allowed(None, [])
    assert not origin_allowed(None, ["https://a.example"])
    assert origin_allowed("https://a.example/", ["https://a.example"])
    assert not origin_allowed("https://b.example", ["https://a.example"])
