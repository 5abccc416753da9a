"""A replaying upstream: the simulator's own frames, served cheaply enough for 1,000 sessions.

Why: ``gateway.sim`` is a faithful upstream, but it decodes every append and runs its energy
VAD in pure Python: about 110 microseconds of CPU per relayed message, so 1,000 talking
sessions (about 20,000 messages a second) would need two cores for the simulator alone, and
the benchmark gives it half of one (it shares core 0 with the load generator).

So the benchmark records one conversation turn from the real simulator at real-time speed
(``record``), and this server (picows, a few microseconds per frame) plays it back: the same
bytes, in the same order, with the same pacing, for every turn of every session. Its "VAD"
knows the workload: an append of digital silence (base64 all "A") is silence, anything else
is speech; speech then ``SILENCE_CHUNKS`` silent appends ends the turn, like the simulator's
200 ms ``silence_duration_ms``. It also answers the round-trip probe with the simulator's
own error event (our event_id echoed) and ``session.update`` with ``session.updated``.

Run on its own: ``python loadtest/replay.py --port 9191`` (records from an in-process
simulator first, about six seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `loadtest` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import uvloop
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)
from websockets.asyncio.client import connect

from loadtest import workload

SILENCE_CHUNKS = 2  # 200 ms: the simulator's default silence_duration_ms
BURST = 0.001  # frames recorded closer than this are sent together
APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'


@dataclass(frozen=True, slots=True)
class Script:
    """One recorded turn: what to send when, relative to the end of the user's speech."""

    session_created: bytes
    session_updated: bytes
    speech_started: bytes
    # (seconds after speech stopped, frames sent together); the first group is the
    # speech_stopped / committed / item events, the last ends with response.done.
    turn: tuple[tuple[float, tuple[bytes, ...]], ...]
    probe_error: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "session_created": self.session_created.decode(),
                "session_updated": self.session_updated.decode(),
                "speech_started": self.speech_started.decode(),
                "turn": [[at, [f.decode() for f in group]] for at, group in self.turn],
                "probe_error": self.probe_error,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Script:
        raw = orjson.loads(data)
        return cls(
            session_created=raw["session_created"].encode(),
            session_updated=raw["session_updated"].encode(),
            speech_started=raw["speech_started"].encode(),
            turn=tuple((at, tuple(f.encode() for f in group)) for at, group in raw["turn"]),
            probe_error=raw["probe_error"],
        )


# ---- recording --------------------------------------------------------------------------


async def record(ws_url: str, api_key: str) -> Script:
    """Talk one turn to the real simulator (it must pace at speed 1) and keep what it said."""
    frames = workload.frames()
    url = f"{ws_url.rstrip('/')}/realtime?model={workload.MODEL}"
    log: list[tuple[float, bytes]] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {api_key}"}) as ws:
        created = await ws.recv(decode=False)
        reader = asyncio.create_task(_collect(ws, log))
        await ws.send(workload.probe_frame("probe_record"), text=True)
        for chunk in frames.speech:
            await ws.send(chunk, text=True)
            await asyncio.sleep(workload.CHUNK_MS / 1000)
        while not any(_type(f) == "response.done" for _, f in log):
            await ws.send(frames.silence, text=True)
            await asyncio.sleep(workload.CHUNK_MS / 1000)
        reader.cancel()
    return _script(bytes(created), log)


async def _collect(ws: Any, log: list[tuple[float, bytes]]) -> None:
    while True:
        frame = await ws.recv(decode=False)
        log.append((time.monotonic(), bytes(frame)))


def _type(frame: bytes) -> str:
    return str(orjson.loads(frame).get("type"))


def _script(created: bytes, log: list[tuple[float, bytes]]) -> Script:
    by_type = {_type(f): f for _, f in reversed(log)}  # first of each type
    stopped_at = next(t for t, f in log if _type(f) == "input_audio_buffer.speech_stopped")
    groups: list[tuple[float, list[bytes]]] = []
    for at, frame in log:
        kind = _type(frame)
        if at < stopped_at or kind in ("error", "input_audio_buffer.speech_started"):
            continue
        offset = at - stopped_at
        if groups and offset - groups[-1][0] < BURST:
            groups[-1][1].append(frame)
        else:
            groups.append((round(offset, 4), [frame]))
        if kind == "response.done":
            break
    updated = orjson.loads(created)
    updated["type"] = "session.updated"
    return Script(
        session_created=created,
        session_updated=orjson.dumps(updated),
        speech_started=by_type["input_audio_buffer.speech_started"],
        turn=tuple((at, tuple(group)) for at, group in groups),
        probe_error=orjson.loads(by_type["error"]),
    )


async def record_from_embedded_sim() -> Script:
    from gateway.sim import SimConfig, SimServer

    async with SimServer(SimConfig(api_keys=("sk-record",), speed=1.0)) as sim:
        return await record(sim.ws_url, "sk-record")


# ---- serving ----------------------------------------------------------------------------


class ReplaySession(WSListener):
    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.transport: WSTransport | None = None
        self.speaking = False
        self.silent_run = 0
        self.replay: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(WSMsgType.TEXT, self.script.session_created)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.replay is not None:
            self.replay.cancel()
        self.transport = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload.startswith(APPEND_PREFIX):
                self.on_append(transport, payload)
            else:
                self.on_event(transport, payload)
        elif kind is WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_append(self, transport: WSTransport, payload: bytes) -> None:
        silent = not payload[len(APPEND_PREFIX) : -2].strip(b"A")
        if not silent:
            self.silent_run = 0
            if not self.speaking:
                self.speaking = True
                transport.send(WSMsgType.TEXT, self.script.speech_started)
            return
        if not self.speaking:
            return
        self.silent_run += 1
        if self.silent_run >= SILENCE_CHUNKS:
            self.speaking = False
            if self.replay is None:  # one response at a time, as the simulator does
                self.play(0, self.loop.time())

    def play(self, index: int, stopped_at: float) -> None:
        transport = self.transport
        if transport is None:
            return
        turn = self.script.turn
        for frame in turn[index][1]:
            transport.send(WSMsgType.TEXT, frame)
        if index + 1 < len(turn):
            at = stopped_at + turn[index + 1][0]
            self.replay = self.loop.call_at(at, self.play, index + 1, stopped_at)
        else:
            self.replay = None

    def on_event(self, transport: WSTransport, payload: bytes) -> None:
        event = orjson.loads(payload)
        kind = event.get("type")
        if kind == "conversation.item.retrieve":
            error = dict(self.script.probe_error)
            error["error"] = {**error["error"], "event_id": event.get("event_id")}
            transport.send(WSMsgType.TEXT, orjson.dumps(error))
        elif kind == "session.update":
            transport.send(WSMsgType.TEXT, self.script.session_updated)


async def serve(script: Script, host: str, port: int) -> asyncio.Server:
    def factory(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = [p.strip() for p in offered.split(",")]
        headers = {"Sec-WebSocket-Protocol": "realtime"} if "realtime" in protocols else None
        response = WSUpgradeResponse.create_101_response(extra_headers=headers)
        return WSUpgradeResponseWithListener(response, ReplaySession(script))

    return await ws_create_server(factory, host, port, max_frame_size=16 * 1024 * 1024)


async def _serve_forever(script: Script, host: str, port: int) -> None:
    server = await serve(script, host, port)
    print(f"replay upstream on ws://{host}:{port}/v1", flush=True)
    await server.serve_forever()


def load_or_record(path: Path | None) -> Script:
    """The recorded turn in ``path``; recorded from the simulator (and saved) if absent."""
    if path is not None and path.exists():
        return Script.from_json(path.read_bytes())
    script = uvloop.run(record_from_embedded_sim())
    if path is not None:
        path.write_bytes(script.to_json())
    return script


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9191)
    p.add_argument(
        "--script", type=Path, help="recorded turn (JSON): read if present, else written"
    )
    args = p.parse_args(argv)
    script = load_or_record(args.script)
    uvloop.run(_serve_forever(script, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
