"""Audio for the simulator and its tests: speech-like PCM16, silence, tones, G.711 codecs.

Formats use the beta names internally: ``pcm16`` (24 kHz, 16-bit little-endian mono),
``g711_ulaw`` and ``g711_alaw`` (8 kHz, one byte a sample). GA's ``audio/pcm``,
``audio/pcmu`` and ``audio/pcma`` map onto them.

Speech-like audio is voiced "syllables" (a few harmonics of a gliding pitch under a smooth
envelope) separated by short quiet gaps, so that an energy VAD sees one utterance, as it would
with a person talking; silence is digital zero.
"""

from __future__ import annotations

import math
import random
import sys
from array import array
from functools import cache

PCM16_RATE = 24000
G711_RATE = 8000
FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")


def rate_of(fmt: str) -> int:
    return PCM16_RATE if fmt == "pcm16" else G711_RATE


def bytes_per_ms(fmt: str) -> float:
    return PCM16_RATE * 2 / 1000 if fmt == "pcm16" else G711_RATE / 1000


def duration_ms(nbytes: int, fmt: str) -> float:
    return nbytes / bytes_per_ms(fmt)


def _pcm16(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def silence(ms: float, rate: int = PCM16_RATE) -> bytes:
    """``ms`` milliseconds of digital silence as PCM16."""
    return bytes(2 * round(rate * ms / 1000))


def tone(ms: float, freq: float = 440.0, level: float = 0.3, rate: int = PCM16_RATE) -> bytes:
    """A sine tone as PCM16; ``level`` is the peak as a fraction of full scale."""
    count = round(rate * ms / 1000)
    peak = level * 32767
    step = 2 * math.pi * freq / rate
    return _pcm16(array("h", (round(peak * math.sin(step * i)) for i in range(count))))


def speech_like(ms: float, rate: int = PCM16_RATE, seed: int = 0, level: float = 0.35) -> bytes:
    """``ms`` milliseconds of voiced, syllabic audio as PCM16 (deterministic for ``seed``)."""
    rng = random.Random(seed)
    total = round(rate * ms / 1000)
    out = array("h")
    while len(out) < total:
        out.extend(_syllable(rng, rate, level))
        # A short dip between syllables, well under any VAD silence duration.
        out.extend(_quiet(rng, rate, round(rate * rng.uniform(0.03, 0.07))))
    del out[total:]
    return _pcm16(out)


def _quiet(rng: random.Random, rate: int, count: int) -> array[int]:
    # Breath-level noise, about -45 dBFS: above digital silence, below the default VAD threshold.
    return array("h", (rng.randint(-180, 180) for _ in range(count)))


def _syllable(rng: random.Random, rate: int, level: float) -> array[int]:
    count = round(rate * rng.uniform(0.15, 0.26))
    f0 = rng.uniform(110.0, 210.0)
    # One period of a harmonic mix, tiled: cheap and still voice-like in its energy profile.
    period = max(2, round(rate / f0))
    weights = (1.0, 0.55, 0.3, 0.18)
    norm = sum(weights)
    table = [
        sum(w * math.sin(2 * math.pi * (h + 1) * i / period) for h, w in enumerate(weights)) / norm
        for i in range(period)
    ]
    ramp = max(1, round(rate * 0.02))
    peak = level * 32767
    samples = array("h")
    for i in range(count):
        edge = min(i, count - 1 - i)
        env = 1.0 if edge >= ramp else 0.5 - 0.5 * math.cos(math.pi * edge / ramp)
        samples.append(round(peak * env * table[i % period]))
    return samples


# --- G.711 ---------------------------------------------------------------------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def ulaw_encode_sample(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = min(7, max(0, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode_sample(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + _ULAW_BIAS) << ((byte >> 4) & 0x07)) - _ULAW_BIAS
    return -magnitude if byte & 0x80 else magnitude


_ALAW_SEG_END = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)


def alaw_encode_sample(sample: int) -> int:
    if sample >= 0:
        mask = 0xD5
    else:
        mask, sample = 0x55, -sample - 1
    seg = next((i for i, end in enumerate(_ALAW_SEG_END) if sample <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    shift = 4 if seg < 2 else seg + 3
    return ((seg << 4) | ((sample >> shift) & 0x0F)) ^ mask


def alaw_decode_sample(byte: int) -> int:
    byte ^= 0x55
    value = (byte & 0x0F) << 4
    seg = (byte & 0x70) >> 4
    if seg == 0:
        value += 8
    else:
        value = (value + 0x108) << (seg - 1)
    return value if byte & 0x80 else -value


@cache
def _decode_table(fmt: str) -> tuple[int, ...]:
    decode = ulaw_decode_sample if fmt == "g711_ulaw" else alaw_decode_sample
    return tuple(decode(b) for b in range(256))


def encode(pcm16: bytes, fmt: str) -> bytes:
    """PCM16 at the format's own rate -> bytes of ``fmt`` (identity for pcm16)."""
    if fmt == "pcm16":
        return pcm16
    enc = ulaw_encode_sample if fmt == "g711_ulaw" else alaw_encode_sample
    return bytes(enc(s) for s in to_samples(pcm16, "pcm16"))


def to_samples(data: bytes, fmt: str) -> array[int]:
    """Linear 16-bit samples of ``data`` (an odd trailing PCM16 byte is ignored)."""
    if fmt == "pcm16":
        samples = array("h")
        samples.frombytes(data[: len(data) & ~1])
        if sys.byteorder == "big":
            samples.byteswap()
        return samples
    table = _decode_table(fmt)
    return array("h", (table[b] for b in data))


# --- the simulated voice -------------------------------------------------------------------

VOICE_CHUNK_MS = 200
_VOICE_CHUNKS = 12


@cache
def voice_chunks(fmt: str) -> tuple[bytes, ...]:
    """The simulated assistant's voice: a cyclic speech-like clip in ``fmt``, cut in
    VOICE_CHUNK_MS pieces. Built once per format; output audio is always these bytes, so an
    item's audio can be rebuilt from its duration instead of being kept."""
    clip = encode(
        speech_like(VOICE_CHUNK_MS * _VOICE_CHUNKS, rate=rate_of(fmt), seed=7, level=0.3), fmt
    )
    size = int(VOICE_CHUNK_MS * bytes_per_ms(fmt))
    return tuple(clip[i * size : (i + 1) * size] for i in range(_VOICE_CHUNKS))


def voice(fmt: str, ms: float) -> bytes:
    """``ms`` of the simulated voice from its start (what a response of that length sent)."""
    chunks = voice_chunks(fmt)
    size = len(chunks[0])
    total = int(ms * bytes_per_ms(fmt))
    total -= total % (2 if fmt == "pcm16" else 1)
    whole, rest = divmod(total, size)
    out = b"".join(chunks[i % len(chunks)] for i in range(whole))
    return out + chunks[whole % len(chunks)][:rest]
