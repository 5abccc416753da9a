"""Locust: front ends talking to the gateway.

    LOADTEST_ADMIN_KEY=<admin key> locust -f loadtest/locustfile.py --headless \\
        -u 50 -r 10 -t 60s --host http://127.0.0.1:8080

Each user is one browser front end with its tenant's backend in front of it: mint a client
secret over REST with the tenant key, open the realtime WebSocket with it in the
``openai-insecure-api-key.`` subprotocol, stream microphone audio at real time (one 100 ms
PCM16 24 kHz append every 100 ms: speech, then silence so that server VAD ends the turn),
read the reply to ``response.done``, repeat for ``LOADTEST_TURNS`` turns, close.

Environment:
  LOADTEST_TENANT_KEY   the tenant's API key; or
  LOADTEST_ADMIN_KEY    an admin key: one tenant is created per Locust process
  LOADTEST_TURNS        turns per conversation (default 3)
  LOADTEST_TURN_MODE    "vad" (default: server VAD ends the turn) or "commit" (no turn
                        detection: the front end commits and sends response.create)

Statistics entries (request type / name):
  REST mint client secret        POST /v1/realtime/client_secrets
  WS   session open              upgrade to session.created
  WS   time to first audio delta end of speech to the first response.output_audio.delta
  WS   turn                      first speech append to response.done
  WS   error event / close / turn timeout / response status: failures, by code
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
import gevent.event  # type: ignore[import-untyped]
import gevent.lock  # type: ignore[import-untyped]
import httpx
from locust import User, constant, events, task
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `loadtest` from anywhere

from loadtest import workload

TICK = workload.CHUNK_MS / 1000
TURN_TIMEOUT = 30.0
OPEN_TIMEOUT = 30.0
AUDIO_DELTA = b"response.output_audio.delta"
TRANSCRIPT_DELTA = b"response.output_audio_transcript.delta"

# httpx logs every request at INFO: thousands of lines in a load test.
logging.getLogger("httpx").setLevel(logging.WARNING)

_tenant_key: str | None = None
_tenant_lock = gevent.lock.Semaphore()


class RealtimeFailure(Exception):
    """A failure as Locust lists it: the message is the code, so failures group by code."""


def tenant_key(host: str) -> str:
    """The tenant key from the environment, or a tenant created once per process."""
    global _tenant_key
    with _tenant_lock:
        if _tenant_key is None:
            _tenant_key = os.environ.get("LOADTEST_TENANT_KEY") or _create_tenant(host)
    return _tenant_key


def _create_tenant(host: str) -> str:
    admin = os.environ.get("LOADTEST_ADMIN_KEY")
    if not admin:
        raise RuntimeError("set LOADTEST_TENANT_KEY, or LOADTEST_ADMIN_KEY to create a tenant")
    response = httpx.post(
        f"{host.rstrip('/')}/admin/tenants",
        headers={"Authorization": f"Bearer {admin}"},
        json={"name": f"locust-{os.getpid()}"},
        timeout=10,
    )
    if response.status_code != 201:
        raise RuntimeError(f"creating a tenant answered {response.status_code}: {response.text}")
    return str(response.json()["api_key"])


def fire(name: str, started: float, *, length: int = 0, error: str | None = None) -> None:
    events.request.fire(  # type: ignore[no-untyped-call]
        request_type="REST" if name == "mint client secret" else "WS",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=length,
        exception=RealtimeFailure(error) if error else None,
        context={},
    )


class FrontEnd:
    """One open realtime WebSocket: a reader greenlet, and a writer paced by the caller.

    The client is the `websockets` library's sync one (a dependency of the gateway already);
    Locust's gevent patches its socket, locks and reader thread into greenlets.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.closing = False
        self.created = gevent.event.Event()
        self.response_done = gevent.event.Event()
        self.lost = gevent.event.Event()
        self.speech_end = 0.0
        self.awaiting_delta = False
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                data = self.ws.recv(decode=False)
                self._on_frame(data if isinstance(data, bytes) else data.encode())
        except ConnectionClosed as exc:
            if not self.closing:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                fire("close", time.perf_counter(), error=f"close code {code}")
        except OSError as exc:
            if not self.closing:
                fire("close", time.perf_counter(), error=f"connection lost: {type(exc).__name__}")
        finally:
            self.lost.set()

    def _on_frame(self, data: bytes) -> None:
        kind = workload.sniff_type(data)
        if kind == AUDIO_DELTA:
            if self.awaiting_delta:
                self.awaiting_delta = False
                fire("time to first audio delta", self.speech_end, length=len(data))
        elif kind == TRANSCRIPT_DELTA:
            return
        elif kind == b"session.created":
            self.created.set()
        elif kind == b"response.done":
            status = workload.response_status(data)
            if status != "completed":
                fire("response status", time.perf_counter(), error=f"response {status}")
            self.response_done.set()
        elif kind == b"error":
            info = workload.error_info(data)
            fire("error event", time.perf_counter(), error=info.code)

    def send(self, frame: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reader reports how it closed
            self.ws.send(frame, text=True)

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):
            self.ws.close(1000)
        self.reader.join(timeout=2)
        self.reader.kill(block=False)


class RealtimeFrontEnd(User):
    """One browser front end (and its tenant backend that mints its tokens)."""

    wait_time = constant(1)

    def on_start(self) -> None:
        assert self.host, "pass --host http://gateway:port"
        self.key = tenant_key(self.host)
        self.turns = int(os.environ.get("LOADTEST_TURNS", "3"))
        self.server_vad = os.environ.get("LOADTEST_TURN_MODE", "vad") != "commit"
        self.frames = workload.frames()
        self.http = httpx.Client(base_url=self.host, timeout=10)

    def on_stop(self) -> None:
        self.http.close()

    @task
    def conversation(self) -> None:
        token = self.mint()
        if token is None:
            return
        front = self.open(token)
        if front is None:
            return
        try:
            for _ in range(self.turns):
                if not self.turn(front):
                    break
        finally:
            front.close()

    def mint(self) -> str | None:
        started = time.perf_counter()
        try:
            response = self.http.post(
                "/v1/realtime/client_secrets",
                content=workload.mint_body(self.server_vad),
                headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            fire("mint client secret", started, error=type(exc).__name__)
            return None
        if response.status_code != 200:
            fire("mint client secret", started, error=f"http {response.status_code}")
            return None
        fire("mint client secret", started, length=len(response.content))
        return str(response.json()["value"])

    def open(self, token: str) -> FrontEnd | None:
        url = str(self.host).replace("http", "ws", 1).rstrip("/") + workload.realtime_path()
        started = time.perf_counter()
        try:
            ws = connect(
                url,
                subprotocols=workload.subprotocols(token),  # type: ignore[arg-type]
                open_timeout=OPEN_TIMEOUT,
                max_size=16 * 1024 * 1024,
                compression=None,
            )
        except InvalidStatus as exc:
            fire("session open", started, error=f"http {exc.response.status_code}")
            return None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            fire("session open", started, error=type(exc).__name__)
            return None
        front = FrontEnd(ws)
        if not front.created.wait(OPEN_TIMEOUT):
            fire("session open", started, error="no session.created")
            front.close()
            return None
        fire("session open", started)
        if ws.subprotocol != "realtime":
            fire("session open", started, error=f"subprotocol {ws.subprotocol}")
        return front

    def turn(self, front: FrontEnd) -> bool:
        """One turn at real time; False when the session is gone."""
        started = time.perf_counter()
        front.response_done.clear()
        clock = Pacer(started)
        last = len(self.frames.speech) - 1
        for index, chunk in enumerate(self.frames.speech):
            front.send(chunk)
            if index < last:
                clock.wait_next()
        front.speech_end, front.awaiting_delta = time.perf_counter(), True
        if not self.server_vad:
            front.send(workload.COMMIT)
            front.send(workload.RESPONSE_CREATE)
        clock.wait_next()
        # Microphone still on: silence until the reply is done, then a short pause.
        while not front.response_done.is_set():
            if front.lost.is_set():
                return False
            if time.perf_counter() - front.speech_end > TURN_TIMEOUT:
                fire("turn timeout", started, error="no response.done")
                return False
            if self.server_vad:
                front.send(self.frames.silence)
            clock.wait_next(front.response_done)
        fire("turn", started)
        pause_until = time.perf_counter() + workload.PAUSE_MS / 1000
        while time.perf_counter() < pause_until and not front.lost.is_set():
            front.send(self.frames.silence)
            clock.wait_next()
        return not front.lost.is_set()


class Pacer:
    """An absolute 100 ms schedule (sleeping a fixed time per chunk would drift)."""

    def __init__(self, start: float) -> None:
        self.next = start

    def wait_next(self, event: Any = None) -> None:
        self.next += TICK
        delay = max(0.0, self.next - time.perf_counter())
        if event is not None:
            event.wait(delay)
        else:
            gevent.sleep(delay)
