"""`GET /v1/usage` equals the sum of the upstream's `response.done` usage, a cancelled turn
included (its response.done still carries what was used before the cancel)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from tests.component.wsclient import bearer, session, until, usage_of, user_text, ws_url
from tests.support.gateway import gateway_settings, run_gateway

PCM16_BYTES_PER_SECOND = 24_000 * 2


def _classes(usage: dict[str, Any]) -> dict[str, int]:
    """OpenAI's usage split into the gateway's priced classes, computed independently here:
    uncached input per modality, cached input per modality, output per modality."""
    details = usage.get("input_token_details") or {}
    cached = details.get("cached_tokens_details") or {}
    out = usage.get("output_token_details") or {}
    return {
        "input_text": details.get("text_tokens", 0) - cached.get("text_tokens", 0),
        "input_audio": details.get("audio_tokens", 0) - cached.get("audio_tokens", 0),
        "cached_text": cached.get("text_tokens", 0),
        "cached_audio": cached.get("audio_tokens", 0),
        "output_text": out.get("text_tokens", 0),
        "output_audio": out.get("audio_tokens", 0),
    }


class Turns:
    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []
        self.audio_out_bytes = 0

    def seen(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["type"] == "response.output_audio.delta":
                self.audio_out_bytes += len(base64.b64decode(event["delta"]))
            assert event["type"] != "error", event


async def test_usage_adds_up_over_turns_including_a_cancelled_one(redis_url: str) -> None:
    # Paced audio (a third of real time) so that a cancel lands in the middle of a response.
    async with run_gateway(gateway_settings(redis_url=redis_url, sim_speed=0.3)) as gw:
        tenant_id, key = await gw.create_tenant(name="acme")
        turns = Turns()
        async with session(ws_url(gw), additional_headers=bearer(key)) as ws:
            await until(ws, "session.created")
            for n, question in enumerate(
                ("Tell me a story about a lighthouse.", "Tell me a longer one.", "Thanks!")
            ):
                await ws.send(user_text(question).decode())
                await ws.send('{"type": "response.create"}')
                if n == 1:
                    first, before = await until(ws, "response.output_audio.delta")
                    turns.seen([*before, first])
                    cancel = {"type": "response.cancel", "event_id": "evt_cancel"}
                    await ws.send(orjson.dumps(cancel).decode())
                done, before = await until(ws, "response.done", timeout=30)
                turns.seen(before)
                turns.done.append(done)
        statuses = [d["response"]["status"] for d in turns.done]
        assert statuses == ["completed", "cancelled", "completed"]
        cancelled_usage = turns.done[1]["response"]["usage"]
        assert cancelled_usage["total_tokens"] > 0  # charged although cancelled

        usages = [d["response"]["usage"] for d in turns.done]
        expected_classes: dict[str, int] = {}
        for usage in usages:
            for name, value in _classes(usage).items():
                expected_classes[name] = expected_classes.get(name, 0) + value
        body = await usage_of(gw, key)
    total = body["total"]
    assert body["tenant_id"] == tenant_id
    assert total["tokens"] == sum(u["total_tokens"] for u in usages)
    assert total["responses"] == 3
    assert total["sessions"] == 1
    assert {k: v for k, v in total["token_classes"].items() if v} == {
        k: v for k, v in expected_classes.items() if v
    }
    assert sum(total["token_classes"].values()) == sum(
        u["input_tokens"] + u["output_tokens"] for u in usages
    )
    # Audio out is measured from the deltas relayed (ledger resolution: 1 ms per charge).
    expected_out = turns.audio_out_bytes / PCM16_BYTES_PER_SECOND
    assert abs(total["audio_out_seconds"] - expected_out) <= 0.001 * 4
    assert total["cost_usd"] > 0
