"""The benchmark's load generator: N talking sessions from one Python core.

picows (Cython) client on uvloop, one task per session, pre-encoded append frames. A
session: pre-minted token -> WebSocket upgrade with the browser subprotocol -> wait for
``session.created`` (timed) -> the workload of ``workload.py`` until told to stop, with one
round-trip probe a second -> close 1000.

The run: mint N tokens (not timed), sample the proxy's idle RSS, open the sessions at
``ramp_rate`` a second, let them settle, then measure a steady window: messages both ways,
CPU of the proxy / upstream / this process, busy time per core, round trips, time to first
audio delta. The proxy's RSS is read at the end of the window, with all sessions live.

Run on its own: ``python loadtest/loadgen.py --help`` (bench.py runs it as a subprocess
pinned to its core and reads the JSON it prints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `loadtest` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.common import WSInvalidStatusError

from loadtest import procstats, workload
from loadtest.httpclient import mint_tokens

TICK = workload.CHUNK_MS / 1000
TURN_TIMEOUT = 30.0  # seconds from end of speech to response.done before a turn counts as lost
OPEN_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0
LATE = 0.02  # an append sent this much after its slot counts as late: the generator lagged

AUDIO_DELTA = b"response.output_audio.delta"
TRANSCRIPT_DELTA = b"response.output_audio_transcript.delta"


@dataclass(slots=True)
class Stats:
    """Everything the sessions of one run record (one event loop: no locks)."""

    sent: int = 0
    received: int = 0
    recording: bool = False  # samples are kept only inside the steady window
    open_ms: list[float] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    ttfa_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    turns: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    late_ticks: int = 0
    max_lag_ms: float = 0.0
    write_pauses: int = 0
    opened: int = 0
    live: int = 0
    expected: int = 0
    all_opened: asyncio.Event = field(default_factory=asyncio.Event)

    def open_finished(self) -> None:
        self.opened += 1
        if self.opened >= self.expected:
            self.all_opened.set()


# Session states of the turn cycle.
SPEAK, LISTEN, PAUSE = 0, 1, 2


class TalkingSession(WSListener):
    """One front end. Frames arrive in ``on_ws_frame``; ``tick`` sends one append every 100 ms."""

    def __init__(self, stats: Stats, frames: workload.Frames, index: int, probe_every: int) -> None:
        super().__init__()
        self.stats = stats
        self.frames = frames
        self.index = index
        self.transport: WSTransport | None = None
        self.created: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.connect_started = 0.0
        self.stopping = False
        self.disconnected = False
        self.state = SPEAK
        self.chunk = 0
        self.turn_started = 0.0
        self.speech_end = 0.0
        self.awaiting_delta = False
        self.resume_at = 0.0
        self.ticks = index  # staggers the probes of sessions opened together
        self.probe_every = probe_every
        self.probe_id: bytes | None = None
        self.probe_sent = 0.0
        self.probe_seq = 0
        self.partial: bytearray | None = None

    # ---- receiving ----------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        if not self.created.done():
            self.created.set_exception(ConnectionError("disconnected before session.created"))

    def pause_writing(self) -> None:
        self.stats.write_pauses += 1  # the peer is not reading as fast as we send

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT:
            if frame.fin:
                self.on_text(frame.get_payload_as_memoryview())
            else:
                self.partial = bytearray(frame.get_payload_as_memoryview())
        elif kind is WSMsgType.CONTINUATION and self.partial is not None:
            self.partial += frame.get_payload_as_memoryview()
            if frame.fin:
                whole, self.partial = bytes(self.partial), None
                self.on_text(memoryview(whole))
        elif kind is WSMsgType.CLOSE:
            self.on_close(transport, frame)
        elif kind is WSMsgType.BINARY:
            self.stats.errors["binary_frame"] += 1

    def on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        code = frame.get_close_code()
        value = code.value if isinstance(code, WSCloseCode) else int(code)
        if not self.stopping:
            self.stats.errors[f"close:{value}"] += 1
        if not transport.is_close_frame_sent:
            transport.send_close(code)
        transport.disconnect()

    def on_text(self, payload: memoryview) -> None:
        stats = self.stats
        stats.received += 1
        kind = workload.sniff_type(payload)  # type: ignore[arg-type]
        if kind == AUDIO_DELTA:
            if self.awaiting_delta:
                self.awaiting_delta = False
                if stats.recording:
                    stats.ttfa_ms.append((time.perf_counter() - self.speech_end) * 1000)
            return
        if kind == TRANSCRIPT_DELTA:
            return
        if kind == b"error":
            self.on_error(bytes(payload))
        elif kind == b"response.done":
            self.on_response_done(bytes(payload))
        elif kind == b"session.created" and not self.created.done():
            self.created.set_result((time.perf_counter() - self.connect_started) * 1000)

    def on_error(self, payload: bytes) -> None:
        info = workload.error_info(payload)
        probe = self.probe_id
        if probe is not None and info.client_event_id == probe.decode():
            self.probe_id = None
            if self.stats.recording:
                self.stats.rtt_ms.append((time.perf_counter() - self.probe_sent) * 1000)
            if info.code == workload.PROBE_ERROR_CODE:
                return
        self.stats.errors[f"error:{info.code}"] += 1

    def on_response_done(self, payload: bytes) -> None:
        status = workload.response_status(payload)
        stats = self.stats
        stats.responses[status] += 1
        if status != "completed":
            stats.errors[f"response:{status}"] += 1
        now = time.perf_counter()
        if stats.recording:
            stats.turns += 1
            stats.turn_ms.append((now - self.turn_started) * 1000)
        self.awaiting_delta = False
        self.state, self.resume_at = PAUSE, now + workload.PAUSE_MS / 1000

    # ---- sending ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Send this 100 ms of microphone audio (and a probe when one is due)."""
        transport = self.transport
        if transport is None or self.disconnected:
            return
        frames = self.frames
        if self.state == SPEAK:
            if self.chunk == 0:
                self.turn_started = now
            transport.send(WSMsgType.TEXT, frames.speech[self.chunk])
            self.chunk += 1
            if self.chunk == len(frames.speech):
                self.state, self.chunk = LISTEN, 0
                self.speech_end, self.awaiting_delta = now, True
        else:
            transport.send(WSMsgType.TEXT, frames.silence)
            if self.state == PAUSE and now >= self.resume_at:
                self.state = SPEAK
            elif self.state == LISTEN and now - self.speech_end > TURN_TIMEOUT:
                self.stats.errors["turn_timeout"] += 1
                self.state, self.resume_at = PAUSE, now
        self.stats.sent += 1
        self.ticks += 1
        if self.ticks % self.probe_every == 0:
            self.send_probe(transport, now)

    def send_probe(self, transport: WSTransport, now: float) -> None:
        if self.probe_id is not None:
            if now - self.probe_sent < TURN_TIMEOUT:
                return  # one probe in flight per session
            self.stats.errors["probe_lost"] += 1
        self.probe_seq += 1
        self.probe_id = f"probe_{self.index}_{self.probe_seq}".encode()
        self.probe_sent = time.perf_counter()
        transport.send(WSMsgType.TEXT, workload.probe_frame(self.probe_id.decode()))
        self.stats.sent += 1


@dataclass(frozen=True, slots=True)
class RunConfig:
    target: str
    host: str
    port: int
    sessions: int
    # Where tokens are minted (host, port, key); None: every session uses ``static_token``
    # (the replaying upstream accepts any credential).
    mint: tuple[str, int, str] | None = None
    static_token: str = "ek_bench_static"
    ramp_rate: float = 100.0
    settle: float = 3.0
    window: float = 15.0
    probe_interval: float = 1.0
    proxy_pid: int | None = None
    upstream_pids: tuple[int, ...] = ()
    aux_pids: tuple[int, ...] = ()  # e.g. redis-server: on the load core, measured apart


async def open_session(cfg: RunConfig, stats: Stats, index: int, token: str) -> TalkingSession:
    frames = workload.frames()
    probe_every = max(1, round(cfg.probe_interval / TICK))
    url = f"ws://{cfg.host}:{cfg.port}{workload.realtime_path()}"
    headers = [("Sec-WebSocket-Protocol", ", ".join(workload.subprotocols(token)))]
    started = time.perf_counter()

    def factory() -> TalkingSession:
        session = TalkingSession(stats, frames, index, probe_every)
        session.connect_started = started
        return session

    transport, listener = await ws_connect(
        factory, url, extra_headers=headers, websocket_handshake_timeout=OPEN_TIMEOUT
    )
    if not isinstance(listener, TalkingSession):  # the server dropped us mid-handshake
        transport.disconnect(graceful=False)
        raise ConnectionError(f"no session listener after the upgrade: {listener!r}")
    session = listener
    chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
    if chosen != "realtime":
        stats.errors[f"subprotocol:{chosen}"] += 1
    stats.open_ms.append(await asyncio.wait_for(session.created, OPEN_TIMEOUT))
    return session


async def drive(session: TalkingSession, stop: asyncio.Event) -> None:
    """Tick on an absolute schedule: pacing does not drift when the loop is late."""
    loop = asyncio.get_running_loop()
    stats = session.stats
    # A random phase: sessions opened on the same tick of the ramp must not send in bursts.
    next_at = loop.time() + random.random() * TICK
    await asyncio.sleep(next_at - loop.time())
    while not stop.is_set() and not session.disconnected:
        lag = loop.time() - next_at
        if lag > LATE:
            stats.late_ticks += 1
            stats.max_lag_ms = max(stats.max_lag_ms, lag * 1000)
            if lag > 1.0:
                next_at = loop.time()  # hopelessly behind: do not burst to catch up
        session.tick(time.perf_counter())
        next_at += TICK
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def close_session(session: TalkingSession) -> None:
    session.stopping = True
    transport = session.transport
    if transport is None or session.disconnected:
        return
    transport.send_close(WSCloseCode.OK)
    try:
        await asyncio.wait_for(transport.wait_disconnected(), CLOSE_TIMEOUT)
    except TimeoutError:
        session.stats.errors["close_timeout"] += 1
        transport.disconnect(graceful=False)


async def session_main(
    cfg: RunConfig, stats: Stats, index: int, token: str, stop: asyncio.Event
) -> None:
    try:
        session = await open_session(cfg, stats, index, token)
    except WSInvalidStatusError as exc:
        status = int(exc.response.status) if exc.response is not None else 0
        stats.errors[f"http:{status}"] += 1
        return
    except (OSError, WSError, TimeoutError, ConnectionError) as exc:
        stats.errors[f"open:{type(exc).__name__}"] += 1
        return
    except Exception as exc:  # one odd session must not end the run: count it, say what
        stats.errors[f"open:unexpected:{type(exc).__name__}"] += 1
        print(f"session {index}: unexpected {exc!r}", file=sys.stderr)
        return
    finally:
        stats.open_finished()
    stats.live += 1
    try:
        await drive(session, stop)
    finally:
        stats.live -= 1
        await close_session(session)


@dataclass(slots=True)
class Snapshot:
    at: float
    sent: int
    received: int
    proxy_cpu: float
    proxy_sys: float
    upstream_cpu: float
    aux_cpu: float
    own_cpu: float
    cores: dict[str, procstats.CpuTimes]


def snapshot(stats: Stats, proxy: list[int], upstream: list[int], aux: list[int]) -> Snapshot:
    return Snapshot(
        at=time.perf_counter(),
        sent=stats.sent,
        received=stats.received,
        proxy_cpu=procstats.cpu_seconds(proxy),
        proxy_sys=procstats.user_system_seconds(proxy)[1],
        upstream_cpu=procstats.cpu_seconds(upstream),
        aux_cpu=procstats.cpu_seconds(aux),
        own_cpu=procstats.cpu_seconds([os.getpid()]),
        cores=procstats.per_cpu_times(),
    )


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[rank], 3)


@dataclass(slots=True)
class HalfWay:
    """The proxy's RSS with about half the sessions live: the second half's growth is the
    marginal memory of a session, without the first sessions' one-time warm-up."""

    rss_kib: int = 0
    live: int = 0


async def ramp(
    cfg: RunConfig, stats: Stats, tokens: list[str], stop: asyncio.Event, proxy: list[int]
) -> tuple[list[asyncio.Task[None]], HalfWay]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    half = HalfWay()
    for index, token in enumerate(tokens):
        if index == len(tokens) // 2:
            half.rss_kib, half.live = procstats.rss_kib(proxy), stats.live
        delay = start + index / cfg.ramp_rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(session_main(cfg, stats, index, token, stop)))
    # Every session has opened (or failed) once all its open_session calls returned.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stats.all_opened.wait(), OPEN_TIMEOUT + 5)
    return tasks, half


async def run(cfg: RunConfig) -> dict[str, Any]:
    workload.frames()  # build the audio before anything is timed
    if cfg.mint is None:
        tokens = [cfg.static_token] * cfg.sessions
    else:
        host, port, key = cfg.mint
        tokens = await mint_tokens(host, port, key, workload.mint_body(), cfg.sessions)
    proxy = procstats.descendants(cfg.proxy_pid) if cfg.proxy_pid else []
    upstream = [p for pid in cfg.upstream_pids for p in procstats.descendants(pid)]
    aux = [p for pid in cfg.aux_pids for p in procstats.descendants(pid)]
    idle_rss = procstats.rss_kib(proxy)
    stats, stop = Stats(expected=cfg.sessions), asyncio.Event()
    ramp_started = time.perf_counter()
    tasks, half = await ramp(cfg, stats, tokens, stop, proxy)
    ramp_seconds = time.perf_counter() - ramp_started
    gc.collect()
    gc.freeze()  # the sessions' objects live for the whole run: keep them out of GC passes
    await asyncio.sleep(cfg.settle)
    before = snapshot(stats, proxy, upstream, aux)
    stats.recording = True
    await asyncio.sleep(cfg.window)
    stats.recording = False
    after = snapshot(stats, proxy, upstream, aux)
    live_rss = procstats.rss_kib(proxy)
    live = stats.live
    stop.set()
    await asyncio.gather(*tasks)
    marginal = (
        round((live_rss - half.rss_kib) / (live - half.live), 2)
        if cfg.proxy_pid and live > half.live
        else None
    )
    result = report(cfg, stats, before, after, idle_rss, live_rss, live, ramp_seconds)
    result["rss_marginal_kib_per_session"] = marginal
    return result


def report(
    cfg: RunConfig,
    stats: Stats,
    before: Snapshot,
    after: Snapshot,
    idle_rss: int,
    live_rss: int,
    live: int,
    ramp_seconds: float,
) -> dict[str, Any]:
    elapsed = after.at - before.at
    sent, received = after.sent - before.sent, after.received - before.received
    messages = sent + received
    proxy_cpu = after.proxy_cpu - before.proxy_cpu
    return {
        "target": cfg.target,
        "sessions": cfg.sessions,
        "live_at_window_end": live,
        "window_s": round(elapsed, 3),
        "ramp_s": round(ramp_seconds, 3),
        "messages_sent": sent,
        "messages_received": received,
        "messages_per_s": round(messages / elapsed, 1),
        "messages_sent_total": stats.sent,
        "messages_received_total": stats.received,
        "rtt_samples": len(stats.rtt_ms),
        "rtt_p50_ms": percentile(stats.rtt_ms, 50),
        "rtt_p99_ms": percentile(stats.rtt_ms, 99),
        "open_p50_ms": percentile(stats.open_ms, 50),
        "open_p99_ms": percentile(stats.open_ms, 99),
        "ttfa_p50_ms": percentile(stats.ttfa_ms, 50),
        "ttfa_p99_ms": percentile(stats.ttfa_ms, 99),
        "turn_p50_ms": percentile(stats.turn_ms, 50),
        "turns_in_window": stats.turns,
        "proxy_cpu_pct": round(100 * proxy_cpu / elapsed, 1) if cfg.proxy_pid else None,
        "proxy_sys_share_pct": round(100 * (after.proxy_sys - before.proxy_sys) / proxy_cpu, 1)
        if cfg.proxy_pid and proxy_cpu > 0
        else None,
        "cpu_us_per_msg": round(proxy_cpu / messages * 1e6, 2)
        if cfg.proxy_pid and messages
        else None,
        "proxy_rss_idle_kib": idle_rss if cfg.proxy_pid else None,
        "proxy_rss_live_kib": live_rss if cfg.proxy_pid else None,
        "rss_kib_per_session": round((live_rss - idle_rss) / cfg.sessions, 2)
        if cfg.proxy_pid
        else None,
        "upstream_cpu_pct": round(100 * (after.upstream_cpu - before.upstream_cpu) / elapsed, 1),
        "aux_cpu_pct": round(100 * (after.aux_cpu - before.aux_cpu) / elapsed, 1),
        "generator_cpu_pct": round(100 * (after.own_cpu - before.own_cpu) / elapsed, 1),
        "core_busy_pct": procstats.busy_percent(before.cores, after.cores),
        "late_ticks": stats.late_ticks,
        "max_tick_lag_ms": round(stats.max_lag_ms, 1),
        "write_pauses": stats.write_pauses,
        "responses": dict(stats.responses),
        "errors": dict(stats.errors),
    }


def parse_args(argv: list[str] | None = None) -> RunConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", default="gateway", help="label for the report")
    p.add_argument("--url", required=True, help="host:port of the realtime WebSocket endpoint")
    p.add_argument("--mint-url", help="host:port that mints client secrets (default: none)")
    p.add_argument("--key", help="key for minting (tenant key or upstream key)")
    p.add_argument("--token", default="ek_bench_static", help="token when nothing mints")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--ramp-rate", type=float, default=100.0, help="sessions opened per second")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between ramp and window")
    p.add_argument("--window", type=float, default=15.0, help="seconds measured")
    p.add_argument("--probe-interval", type=float, default=1.0)
    p.add_argument("--proxy-pid", type=int, help="measure CPU and RSS of this process tree")
    p.add_argument("--upstream-pid", type=int, action="append", default=[])
    p.add_argument("--aux-pid", type=int, action="append", default=[], help="e.g. redis")
    a = p.parse_args(argv)
    host, port = _host_port(a.url)
    mint = None
    if a.mint_url:
        if not a.key:
            p.error("--mint-url needs --key")
        mint = (*_host_port(a.mint_url), a.key)
    return RunConfig(
        target=a.target,
        host=host,
        port=port,
        sessions=a.sessions,
        mint=mint,
        static_token=a.token,
        ramp_rate=a.ramp_rate,
        settle=a.settle,
        window=a.window,
        probe_interval=a.probe_interval,
        proxy_pid=a.proxy_pid,
        upstream_pids=tuple(a.upstream_pid),
        aux_pids=tuple(a.aux_pid),
    )


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = uvloop.run(run(cfg))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
