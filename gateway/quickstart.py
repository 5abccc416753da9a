"""The copy-paste quick start printed by ``serve --demo`` (to stdout, never to the logs)."""

from __future__ import annotations

from gateway.config import Settings


def quickstart_text(settings: Settings, demo_key: str) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    base = settings.public_url or f"http://{host}:{settings.port}"
    ws_base = base.replace("http://", "ws://").replace("https://", "wss://")
    store = "Redis" if settings.redis_url else "embedded in-process store"
    upstream = "configured upstream" if settings.upstreams else "built-in simulated upstream"
    return f"""
realtime-gateway is listening on {base} ({store}, {upstream}).

Demo tenant key (shown once, keep it): {demo_key}

  export RGW_KEY={demo_key}

1. Mint a short-lived client secret for a front end (what a tenant's backend does):

  curl -s {base}/v1/realtime/client_secrets \\
    -H "Authorization: Bearer $RGW_KEY" -H "Content-Type: application/json" \\
    -d '{{"session": {{"type": "realtime", "model": "gpt-realtime",
         "output_modalities": ["text"]}}}}'

2. Hold a conversation through the gateway with the official SDK (pip install "openai[realtime]"):

  python3 - <<'PY'
import asyncio, os
from openai import AsyncOpenAI

async def main():
    client = AsyncOpenAI(api_key=os.environ["RGW_KEY"], base_url="{base}/v1",
                         websocket_base_url="{ws_base}/v1")
    secret = await client.realtime.client_secrets.create(
        session={{"type": "realtime", "model": "gpt-realtime", "output_modalities": ["text"]}})
    front_end = AsyncOpenAI(api_key=secret.value, base_url="{base}/v1",
                            websocket_base_url="{ws_base}/v1")
    async with front_end.realtime.connect(model="gpt-realtime") as conn:
        await conn.conversation.item.create(item={{"type": "message", "role": "user",
            "content": [{{"type": "input_text", "text": "Hello there!"}}]}})
        await conn.response.create()
        async for event in conn:
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.done":
                print("\\nusage:", event.response.usage)
                break

asyncio.run(main())
PY

3. See what it cost:

  curl -s {base}/v1/usage -H "Authorization: Bearer $RGW_KEY"

"""
