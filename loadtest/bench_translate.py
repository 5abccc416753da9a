"""Micro-benchmark: the cost of translating one 100 ms audio delta between beta and GA.

Run: ``python loadtest/bench_translate.py [--number N]``. Prints microseconds per frame (best of
several repeats) for the bytes-level rename the relay uses, against a full JSON round trip with
orjson and with the standard library. A 100 ms delta of 24 kHz 16-bit mono audio is 4,800
bytes, 6,400 characters of base64.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import timeit
from collections.abc import Callable

import orjson

from gateway.protocol import translate as tr

PCM_100MS = os.urandom(4800)
DELTA = base64.b64encode(PCM_100MS).decode()


def _frame(kind: str, *, event_id_first: bool = False) -> bytes:
    body = {
        "type": kind,
        "event_id": "event_CCXHxcMy86rrKhBLDdqCh",
        "response_id": "resp_CCXHw0UJld10EzIUXQCNh",
        "item_id": "item_CCXHwGjjDUfOXbiySlK7i",
        "output_index": 0,
        "content_index": 0,
        "delta": DELTA,
    }
    if event_id_first:
        body = {"event_id": body.pop("event_id"), **body}
    return orjson.dumps(body)


GA_DELTA = _frame("response.output_audio.delta")
GA_DELTA_ID_FIRST = _frame("response.output_audio.delta", event_id_first=True)
APPEND = orjson.dumps({"type": "input_audio_buffer.append", "event_id": "e1", "audio": DELTA})
TABLE = {b"response.output_audio.delta": b"response.audio.delta"}


def _orjson_translate() -> list[bytes]:
    return [
        orjson.dumps(e) for e in tr.translate_server_event(orjson.loads(GA_DELTA), "ga", "beta")
    ]


def _json_translate() -> list[str]:
    return [json.dumps(e) for e in tr.translate_server_event(json.loads(GA_DELTA), "ga", "beta")]


KIND = b"response.output_audio.delta"


def _fast_type_first() -> list[bytes]:
    return tr.translate_server_frame(GA_DELTA, "ga", "beta")


def _fast_event_id_first() -> list[bytes]:
    return tr.translate_server_frame(GA_DELTA_ID_FIRST, "ga", "beta")


def _append_passthrough() -> list[bytes]:
    return tr.translate_client_frame(APPEND, "beta", "ga")


CASES: list[tuple[str, Callable[[], object]]] = [
    ("fast: translate_server_frame, type first", _fast_type_first),
    ("fast: translate_server_frame, event_id first", _fast_event_id_first),
    ("fast: rename_event_type_bytes", lambda: tr.rename_event_type_bytes(GA_DELTA, TABLE)),
    ("fast: rename_server_frame (core's)", lambda: tr.rename_server_frame(GA_DELTA, KIND, "ga")),
    ("pass: translate_client_frame(append)", _append_passthrough),
    ("orjson loads + translate_server_event + dumps", _orjson_translate),
    ("orjson loads + dumps only", lambda: orjson.dumps(orjson.loads(GA_DELTA))),
    ("json loads + translate_server_event + dumps", _json_translate),
    ("json loads + dumps only", lambda: json.dumps(json.loads(GA_DELTA))),
]


def _check() -> None:
    """The cases measure the same translation."""
    (fast,) = tr.translate_server_frame(GA_DELTA, "ga", "beta")
    assert orjson.loads(fast) == orjson.loads(_orjson_translate()[0])
    assert fast == GA_DELTA.replace(b"response.output_audio.delta", b"response.audio.delta")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    _check()
    print(f"frame: {len(GA_DELTA)} bytes (100 ms pcm16 delta, {len(DELTA)} base64 chars)")
    print(f"python {platform.python_version()}, orjson {orjson.__version__}, {platform.machine()}")
    print(f"{'case':<56} {'us/frame':>9}")
    for name, fn in CASES:
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat))
        print(f"{name:<56} {best / args.number * 1e6:>9.2f}")


if __name__ == "__main__":
    main()
