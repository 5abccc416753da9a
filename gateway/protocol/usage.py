"""Usage metering: tokens from ``response.done``, audio durations, and their price.

Pure: no I/O, no clock. Everything here is arithmetic on numbers the upstream reported.

Token classes
-------------
OpenAI reports ``input_token_details.text_tokens`` / ``audio_tokens`` / ``image_tokens``
*including* the cached ones, and the cached split separately in ``cached_tokens_details``.
A price table has one price for uncached and one for cached input, so ``Usage`` stores the
**uncached** part in ``input_text`` / ``input_audio`` / ``input_image`` and the cached part in
``cached_text`` / ``cached_audio`` / ``cached_image``. Every input token is then in exactly one
field and ``cost_usd`` never counts a cached token twice::

    input_text  = text_tokens  - cached_tokens_details.text_tokens   (never below 0)
    cached_text = cached_tokens_details.text_tokens

Shapes accepted by ``parse_usage`` (every field optional, unknown fields ignored, anything that
is not a non-negative integer counts as 0, it never raises):

* GA: ``input_token_details {text_tokens, audio_tokens, image_tokens, cached_tokens,
  cached_tokens_details {text_tokens, audio_tokens, image_tokens}}``, ``output_token_details
  {text_tokens, audio_tokens}``.
* Beta: the same without image tokens, and sometimes ``cached_tokens`` without
  ``cached_tokens_details``. The cached total is then attributed to text first, then audio,
  then image, each capped at that class's reported tokens; a remainder (inconsistent numbers)
  stays cached text. Why text first: caching covers a prefix of the conversation, and the
  prefix is the instructions and tools, which are text.
* Oldest (2024-10): only ``input_tokens`` / ``output_tokens``. With no per-class details (or
  details that are all zero) the totals are attributed to text.

The upstream's arithmetic is not validated (the beta spec's own example reports more cached
tokens than input tokens); the cached figures are trusted and the uncached ones clamped at 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from decimal import Context, Decimal
from typing import ClassVar, Protocol

__all__ = [
    "PriceTable",
    "Usage",
    "audio_seconds",
    "b64_decoded_len",
    "base64_decoded_len",
    "bytes_per_second",
    "cost_decimal",
    "cost_usd",
    "parse_usage",
]

_FIELDS = (
    "input_text",
    "input_audio",
    "input_image",
    "cached_text",
    "cached_audio",
    "cached_image",
    "output_text",
    "output_audio",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one response (or a sum of them), one field per priced class."""

    input_text: int = 0  # uncached
    input_audio: int = 0  # uncached
    input_image: int = 0  # uncached
    cached_text: int = 0
    cached_audio: int = 0
    cached_image: int = 0
    output_text: int = 0
    output_audio: int = 0

    ZERO: ClassVar[Usage]

    @property
    def cached_tokens(self) -> int:
        return self.cached_text + self.cached_audio + self.cached_image

    @property
    def input_tokens(self) -> int:
        """All input tokens, cached or not (OpenAI's ``input_tokens``)."""
        return self.input_text + self.input_audio + self.input_image + self.cached_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text + self.output_audio

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(*(getattr(self, f) + getattr(other, f) for f in _FIELDS))

    def as_dict(self) -> dict[str, int]:
        """The eight counters by name (for the ledger; ``from_dict`` reads it back)."""
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Usage:
        """Inverse of ``as_dict``; tolerant like ``parse_usage`` (missing or bad values are 0)."""
        return cls(*(_count(data.get(f)) for f in _FIELDS))


Usage.ZERO = Usage()


def _count(value: object) -> int:
    """A token count, or 0 for anything that is not a non-negative whole number."""
    if isinstance(value, bool):  # bool is an int subclass; True is not "1 token"
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value > 0:
        return int(value)
    return 0


def _mapping(value: object) -> Mapping[str, object] | None:
    return value if isinstance(value, Mapping) else None


def _field(obj: Mapping[str, object] | None, key: str) -> int:
    return 0 if obj is None else _count(obj.get(key))


def parse_usage(obj: object) -> Usage:
    """``Usage`` from a ``response.done`` ``response.usage`` object of any known shape."""
    usage = _mapping(obj)
    if usage is None:
        return Usage.ZERO
    text, audio, image, c_text, c_audio, c_image = _input_classes(usage)
    out_text, out_audio = _output_classes(usage)
    return Usage(
        input_text=max(text - c_text, 0),
        input_audio=max(audio - c_audio, 0),
        input_image=max(image - c_image, 0),
        cached_text=c_text,
        cached_audio=c_audio,
        cached_image=c_image,
        output_text=out_text,
        output_audio=out_audio,
    )


def _input_classes(usage: Mapping[str, object]) -> tuple[int, int, int, int, int, int]:
    """(text, audio, image) including cached, then the cached (text, audio, image)."""
    details = _mapping(usage.get("input_token_details"))
    text = _field(details, "text_tokens")
    audio = _field(details, "audio_tokens")
    image = _field(details, "image_tokens")
    if text + audio + image == 0:
        text = _count(usage.get("input_tokens"))  # oldest shape: totals only
    cached_details = _mapping(details.get("cached_tokens_details")) if details else None
    if cached_details is not None:
        cached = (
            _field(cached_details, "text_tokens"),
            _field(cached_details, "audio_tokens"),
            _field(cached_details, "image_tokens"),
        )
    else:
        cached = _split_cached(_field(details, "cached_tokens"), text, audio, image)
    return (text, audio, image, *cached)


def _split_cached(total: int, text: int, audio: int, image: int) -> tuple[int, int, int]:
    """Attribute a cached total without details: text first, then audio, then image."""
    c_text = min(total, text)
    c_audio = min(total - c_text, audio)
    c_image = min(total - c_text - c_audio, image)
    remainder = total - c_text - c_audio - c_image
    return c_text + remainder, c_audio, c_image


def _output_classes(usage: Mapping[str, object]) -> tuple[int, int]:
    details = _mapping(usage.get("output_token_details"))
    text = _field(details, "text_tokens")
    audio = _field(details, "audio_tokens")
    if text + audio == 0:
        text = _count(usage.get("output_tokens"))  # oldest shape: totals only
    return text, audio


# ---- audio duration ----------------------------------------------------------------------------

_PCM16_RATE = 24_000  # both APIs' default, and the only rate GA's audio/pcm accepts today
_G711_BYTES_PER_SECOND = 8_000  # 8 kHz, one byte per sample
_BETA_FORMATS = {
    "pcm16": _PCM16_RATE * 2,
    "g711_ulaw": _G711_BYTES_PER_SECOND,
    "g711_alaw": _G711_BYTES_PER_SECOND,
}
_GA_G711 = frozenset({"audio/pcmu", "audio/pcma"})


def bytes_per_second(audio_format: object) -> int:
    """Bytes of decoded audio per second for a beta format name or a GA format object.

    Anything unrecognised (None, a future format) counts as 16-bit PCM at 24 kHz, the default
    of both APIs: metering must go on, and a wrong guess shows up as a duration, not a crash.
    """
    if isinstance(audio_format, str):
        return _BETA_FORMATS.get(audio_format, _PCM16_RATE * 2)
    if isinstance(audio_format, Mapping):
        kind = audio_format.get("type")
        if kind in _GA_G711:
            return _G711_BYTES_PER_SECOND
        rate = audio_format.get("rate")
        if kind == "audio/pcm" and _count(rate) > 0:
            return _count(rate) * 2
    return _PCM16_RATE * 2


def audio_seconds(pcm_bytes: int, audio_format: object) -> float:
    """Duration of ``pcm_bytes`` of decoded audio in ``audio_format`` (see ``bytes_per_second``)."""
    return max(pcm_bytes, 0) / bytes_per_second(audio_format)


def base64_decoded_len(b64_len: int, padding: int) -> int:
    """Decoded size of a base64 text of ``b64_len`` characters ending in ``padding`` ``=``.

    Also right for unpadded base64 (``padding`` 0 and a length that is not a multiple of 4):
    2 or 3 trailing characters carry 1 or 2 bytes.
    """
    if b64_len <= 0:
        return 0
    whole, tail = divmod(b64_len, 4)
    return max(whole * 3 + max(tail - 1, 0) - padding, 0)


def b64_decoded_len(data: bytes | str) -> int:
    """``base64_decoded_len`` of a base64 text, counting its padding (no decoding)."""
    tail = data[-2:]
    padding = (tail.encode() if isinstance(tail, str) else tail).count(b"=")
    return base64_decoded_len(len(data), padding)


# ---- price ---------------------------------------------------------------------------------------


class PriceTable(Protocol):
    """USD per one million tokens by class; ``gateway.config.ModelPrice`` is one."""

    @property
    def input_text(self) -> float: ...
    @property
    def input_audio(self) -> float: ...
    @property
    def cached_text(self) -> float: ...
    @property
    def cached_audio(self) -> float: ...
    @property
    def output_text(self) -> float: ...
    @property
    def output_audio(self) -> float: ...


_MILLION = Decimal(1_000_000)
# Enough digits for any token count times any price: the arithmetic below never rounds.
_EXACT = Context(prec=80)


def _price(value: float) -> Decimal:
    # repr() is the shortest decimal that reads back as the same float: 0.4 is priced as the
    # 0.4 an operator wrote, not as 0.40000000000000002220446...
    return Decimal(repr(float(value)))


def cost_decimal(usage: Usage, price: PriceTable) -> Decimal:
    """Exact cost in USD: sum of tokens x price per million, in decimal arithmetic.

    Image tokens have no price of their own in the table: they are priced as text input
    (uncached at ``input_text``, cached at ``cached_text``).
    """
    terms = (
        (usage.input_text + usage.input_image, price.input_text),
        (usage.input_audio, price.input_audio),
        (usage.cached_text + usage.cached_image, price.cached_text),
        (usage.cached_audio, price.cached_audio),
        (usage.output_text, price.output_text),
        (usage.output_audio, price.output_audio),
    )
    total = Decimal(0)
    for tokens, per_million in terms:
        total = _EXACT.add(total, _EXACT.multiply(Decimal(tokens), _price(per_million)))
    return _EXACT.divide(total, _MILLION)


def cost_usd(usage: Usage, price: PriceTable) -> float:
    """``cost_decimal`` rounded once to the nearest float.

    Sum ``Usage`` values (integers, exact) and price the sum, rather than adding float costs.
    """
    return float(cost_decimal(usage, price))
