"""The upgrade request as the edge replays it into picows (picows_edge.replay_request)."""

from __future__ import annotations

from gateway.relay.picows_edge import replay_request

REQUEST = (
    b"GET /v1/realtime?model=gpt-realtime&api-key=secret HTTP/1.1\r\n"
    b"Host: gateway.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Authorization: Bearer ek_0123456789abcdefghij\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.ek_0123456789abcdefghij\r\n"
    b"Cookie: session=abc\r\n"
    b"User-Agent: test\r\n"
    b"\r\n"
)


def test_only_what_picows_validates_is_replayed() -> None:
    assert replay_request(REQUEST) == (
        b"GET /v1/realtime HTTP/1.1\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )


def test_bytes_after_the_request_follow_it() -> None:
    frame = b"\x81\x85\x00\x00\x00\x00hello"
    assert replay_request(REQUEST + frame).endswith(b"\r\n\r\n" + frame)


def test_a_connection_list_with_upgrade_becomes_upgrade() -> None:
    firefox = REQUEST.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    assert b"\r\nConnection: Upgrade\r\n" in replay_request(firefox)


def test_what_picows_refuses_is_replayed_for_it_to_refuse() -> None:
    # A missing key stays missing, a bad version stays bad, a body is still announced, and a
    # malformed request line is left as it is: picows answers each with its standard 400.
    no_key = REQUEST.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
    assert b"sec-websocket-key" not in replay_request(no_key).lower()
    assert b"Sec-WebSocket-Version: 8000" in replay_request(
        REQUEST.replace(b"Version: 13", b"Version: 8000")
    )
    body = REQUEST.replace(b"User-Agent: test", b"Content-Length: 5")
    assert b"Content-Length: 5" in replay_request(body)
    assert replay_request(b"GET  HTTP/1.1 x\r\n\r\n").startswith(b"GET  HTTP/1.1 x\r\n")
    keep_alive = REQUEST.replace(b"Connection: Upgrade", b"Connection: keep-alive")
    assert b"Connection: keep-alive" in replay_request(keep_alive)
