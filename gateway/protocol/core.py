"""The sans-I/O core of one relayed session.

The relay hands every frame to ``SessionCore`` with the time it arrived and gets an ``Outcome``
back: what to forward (usually the very same bytes), what to send to either side in addition,
and the effects the relay must carry out (charge usage, record rate limits, check a quota, close).
No sockets, no clock, no Redis: the same core can be driven by any WebSocket implementation and
is tested without one.

Hot-path rules: an upstream frame whose type is readable from its first bytes and that the
gateway does not act on is forwarded without being parsed (audio and text deltas are only
measured). Client frames come from an untrusted peer and are always parsed (orjson: about 2 us
for a 6 KB audio append) so that malformed JSON never reaches the upstream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import orjson

from gateway.errors import GatewayError, InvalidEvent
from gateway.protocol import translate as tr
from gateway.protocol.events import EventIds, cancel_event, error_event
from gateway.protocol.policy import SessionPolicy
from gateway.protocol.sniff import NotAnEvent, base64_field_bytes, parse_event, sniff_type
from gateway.protocol.usage import Usage, audio_seconds, b64_decoded_len, parse_usage

Protocol = Literal["ga", "beta"]

# Upstream event types that are forwarded without a parse, with what is measured on them.
_AUDIO_DELTAS = frozenset({b"response.output_audio.delta", b"response.audio.delta"})
_TEXT_DELTAS = frozenset(
    {
        b"response.output_text.delta",
        b"response.text.delta",
        b"response.output_audio_transcript.delta",
        b"response.audio_transcript.delta",
        b"response.function_call_arguments.delta",
    }
)
# Upstream events the core must read (everything else with a sniffable type passes untouched).
_UPSTREAM_DECODED = frozenset(
    {
        b"session.created",
        b"session.updated",
        b"transcription_session.updated",
        b"response.created",
        b"response.done",
        b"rate_limits.updated",
        b"input_audio_buffer.speech_stopped",
        b"error",
    }
)


@dataclasses.dataclass(slots=True)
class Charge:
    """Usage to write to the ledger: one response's tokens plus the audio seen since last time."""

    usage: Usage
    response_id: str | None
    status: str | None
    audio_in_seconds: float
    audio_out_seconds: float


@dataclasses.dataclass(slots=True)
class RateLimitsSeen:
    entries: list[dict[str, Any]]


@dataclasses.dataclass(slots=True)
class FirstDelta:
    """Time from response.create (or speech_stopped) to the first audio or text delta."""

    seconds: float


@dataclasses.dataclass(slots=True)
class UpstreamError:
    code: str | None
    error_type: str | None


@dataclasses.dataclass(slots=True)
class AutoResponse:
    """The upstream started a response the client did not ask for (server VAD)."""

    response_id: str | None


Effect = Charge | RateLimitsSeen | FirstDelta | UpstreamError | AutoResponse


class Outcome:
    """What to do with one frame. ``forward`` None means: do not forward it."""

    __slots__ = ("effects", "forward", "kind", "needs_quota", "to_client", "to_upstream")

    def __init__(self, forward: bytes | None, kind: str | bytes = b"") -> None:
        self.forward = forward
        self.kind = kind  # the event type as read (bytes when sniffed), for metrics
        self.to_client: list[bytes] = []
        self.to_upstream: list[bytes] = []
        self.effects: list[Effect] = []
        # response.create held until the relay confirms the tenant still has budget.
        self.needs_quota = False


@dataclasses.dataclass(slots=True)
class Counters:
    client_events: int = 0
    client_bytes: int = 0
    upstream_events: int = 0
    upstream_bytes: int = 0
    refused_client_events: int = 0


def _format_of(session: dict[str, Any], direction: Literal["input", "output"]) -> Any:
    audio = session.get("audio")
    if isinstance(audio, dict):
        side = audio.get(direction)
        if isinstance(side, dict) and "format" in side:
            return side["format"]
    return session.get(f"{direction}_audio_format")


class SessionCore:
    """State of one relayed session, and the decisions on each frame."""

    def __init__(
        self,
        *,
        client_protocol: Protocol,
        upstream_protocol: Protocol,
        policy: SessionPolicy,
        event_ids: EventIds,
        rate_limits_passthrough: bool = False,
    ) -> None:
        self.client_protocol: Protocol = client_protocol
        self.upstream_protocol: Protocol = upstream_protocol
        self.translating = client_protocol != upstream_protocol
        self.policy = policy
        self.event_ids = event_ids
        self.rate_limits_passthrough = rate_limits_passthrough
        self.counters = Counters()
        self.input_format: Any = "pcm16"
        self.output_format: Any = "pcm16"
        self.audio_in_bytes = 0  # decoded bytes of input audio not yet charged
        self.audio_out_bytes = 0
        # Per-session memory the translation needs (item ids, function names); None when the
        # two sides speak the same protocol.
        self.translation = tr.TranslationState() if self.translating else None
        self.usage_total = Usage.ZERO
        self.audio_in_total = 0.0
        self.audio_out_total = 0.0
        self.active_response_id: str | None = None
        self.client_requested_response = False
        self.waiting_first_delta_since: float | None = None
        self._pending_first_delta: float | None = None
        self.last_activity = 0.0
        self.model: str | None = None

    # ---- client -> upstream ---------------------------------------------------------------

    def client_frame(self, frame: bytes, now: float) -> Outcome:
        counters = self.counters
        counters.client_events += 1
        counters.client_bytes += len(frame)
        self.last_activity = now
        try:
            event = parse_event(frame)
        except NotAnEvent as exc:
            return self._refuse(InvalidEvent(str(exc), client_event_id=exc.event_id))
        kind: str = event["type"]
        event_id = event.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        try:
            self.policy.check_event_type(kind, event_id)
            outcome = self._client_event(frame, event, kind, event_id, now)
        except GatewayError as err:
            if err.client_event_id is None:
                err.client_event_id = event_id
            return self._refuse(err)
        outcome.kind = kind
        return outcome

    def _client_event(
        self, frame: bytes, event: dict[str, Any], kind: str, event_id: str | None, now: float
    ) -> Outcome:
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if isinstance(audio, str):
                self.audio_in_bytes += b64_decoded_len(audio)
            return self._to_upstream(frame, event)
        if kind in ("session.update", "transcription_session.update"):
            return self._session_update(frame, event, event_id)
        if kind == "conversation.item.create":
            self.policy.check_item(event, event_id)
            return self._to_upstream(frame, event)
        if kind == "response.create":
            outcome = self._response_create(frame, event, event_id)
            outcome.needs_quota = True
            self.client_requested_response = True
            self.waiting_first_delta_since = now
            return outcome
        return self._to_upstream(frame, event)

    def _session_update(self, frame: bytes, event: dict[str, Any], event_id: str | None) -> Outcome:
        return self._policed(frame, event, "session", self.policy.apply_to_update, event_id)

    def _response_create(
        self, frame: bytes, event: dict[str, Any], event_id: str | None
    ) -> Outcome:
        # A response may override session fields for itself: the locks hold there too.
        return self._policed(frame, event, "response", self.policy.apply_to_response, event_id)

    def _policed(
        self,
        frame: bytes,
        event: dict[str, Any],
        key: str,
        check: Callable[[dict[str, Any], str | None], dict[str, Any]],
        event_id: str | None,
    ) -> Outcome:
        """Apply the policy to ``event[key]``, decided on the GA (normalised) shape whatever the
        client speaks; forward the client's own frame when the policy changed nothing."""
        normal = tr.client_event_to_ga(event) if self.client_protocol == "beta" else event
        body = normal.get(key)
        if not isinstance(body, dict):
            return self._to_upstream(frame, event)
        allowed = check(body, event_id)
        if allowed is body:
            return self._to_upstream(frame, event)
        out = tr.client_event_from_ga({**normal, key: allowed}, self.upstream_protocol)
        return Outcome(orjson.dumps(out[0]) if out else None)

    def _to_upstream(self, frame: bytes, event: dict[str, Any]) -> Outcome:
        if not self.translating:
            return Outcome(frame)
        events = tr.translate_client_event(
            event, self.client_protocol, self.upstream_protocol, self.translation
        )
        if not events:
            return Outcome(None)
        outcome = Outcome(orjson.dumps(events[0]))
        outcome.to_upstream.extend(orjson.dumps(e) for e in events[1:])
        return outcome

    def _refuse(self, err: GatewayError) -> Outcome:
        self.counters.refused_client_events += 1
        outcome = Outcome(None)
        outcome.to_client.append(error_event(err, self.event_ids()))
        return outcome

    def refuse_response(self, err: GatewayError, event_id: str | None) -> bytes:
        """The error event for a response.create the relay held back for lack of budget."""
        self.client_requested_response = False
        self.waiting_first_delta_since = None
        self.counters.refused_client_events += 1
        err.client_event_id = event_id
        return error_event(err, self.event_ids())

    def cancel_auto_response(self, err: GatewayError) -> tuple[bytes, bytes]:
        """A response the upstream started by itself while over budget: cancel it upstream and
        tell the client why. Returns (to_upstream, to_client)."""
        cancel = cancel_event(self.event_ids(), self.active_response_id)
        self.waiting_first_delta_since = None
        return cancel, error_event(err, self.event_ids())

    # ---- upstream -> client ---------------------------------------------------------------

    def upstream_frame(self, frame: bytes, now: float) -> Outcome:
        counters = self.counters
        counters.upstream_events += 1
        counters.upstream_bytes += len(frame)
        self.last_activity = now
        kind = sniff_type(frame)
        if kind is not None and kind not in _UPSTREAM_DECODED:
            outcome = self._upstream_passthrough(frame, kind, now)
            outcome.kind = kind
            return outcome
        try:
            event = parse_event(frame)
        except NotAnEvent:
            # A broken upstream frame is the upstream's bug; the client gets it as it came so
            # that nothing is silently swallowed, and the session goes on.
            return Outcome(frame, b"invalid")
        outcome = self._upstream_event(frame, event, now)
        outcome.kind = event["type"]
        return outcome

    def _upstream_passthrough(self, frame: bytes, kind: bytes, now: float) -> Outcome:
        if kind in _AUDIO_DELTAS:
            self.audio_out_bytes += base64_field_bytes(frame, b"delta")
            self._first_delta(now)
        elif kind in _TEXT_DELTAS:
            self._first_delta(now)
        if self.translating:
            renamed = tr.rename_server_frame(frame, kind, self.upstream_protocol)
            if renamed is not None:
                outcome = Outcome(renamed)
                self._attach_first_delta(outcome)
                return outcome
            return self._translated(orjson.loads(frame))
        outcome = Outcome(frame)
        self._attach_first_delta(outcome)
        return outcome

    def _first_delta(self, now: float) -> None:
        if self.waiting_first_delta_since is not None:
            self._pending_first_delta = now - self.waiting_first_delta_since
            self.waiting_first_delta_since = None

    def _attach_first_delta(self, outcome: Outcome) -> None:
        if self._pending_first_delta is not None:
            outcome.effects.append(FirstDelta(self._pending_first_delta))
            self._pending_first_delta = None

    def _upstream_event(self, frame: bytes, event: dict[str, Any], now: float) -> Outcome:
        kind = event["type"]
        effects: list[Effect] = []
        forward: bytes | None = frame
        if kind in ("session.created", "session.updated", "transcription_session.updated"):
            self._learn_session(event)
        elif kind == "response.created":
            response = event.get("response")
            rid = response.get("id") if isinstance(response, dict) else None
            self.active_response_id = rid if isinstance(rid, str) else None
            auto = not self.client_requested_response
            self.client_requested_response = False
            if auto and self.waiting_first_delta_since is None:
                self.waiting_first_delta_since = now
            if auto:
                effects.append(AutoResponse(self.active_response_id))
        elif kind == "response.done":
            effects.append(self._charge(event))
            self.active_response_id = None
        elif kind == "rate_limits.updated":
            entries = event.get("rate_limits")
            effects.append(RateLimitsSeen(entries if isinstance(entries, list) else []))
            if not self.rate_limits_passthrough:
                forward = None  # the relay sends the tenant's own figures instead
        elif kind == "input_audio_buffer.speech_stopped":
            self.waiting_first_delta_since = now
        elif kind == "error":
            err = event.get("error")
            if isinstance(err, dict):
                code, etype = err.get("code"), err.get("type")
                effects.append(
                    UpstreamError(
                        code if isinstance(code, str) else None,
                        etype if isinstance(etype, str) else None,
                    )
                )
        if forward is not None and self.translating:
            outcome = self._translated(event)
        else:
            outcome = Outcome(forward)
        outcome.effects.extend(effects)
        return outcome

    def _translated(self, event: dict[str, Any]) -> Outcome:
        events = tr.translate_server_event(
            event, self.upstream_protocol, self.client_protocol, self.translation
        )
        if not events:
            return Outcome(None)
        outcome = Outcome(orjson.dumps(events[0]))
        outcome.to_client.extend(orjson.dumps(e) for e in events[1:])
        self._attach_first_delta(outcome)
        return outcome

    def _learn_session(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            return
        fmt_in, fmt_out = _format_of(session, "input"), _format_of(session, "output")
        if fmt_in is not None:
            self.input_format = fmt_in
        if fmt_out is not None:
            self.output_format = fmt_out
        model = session.get("model")
        if isinstance(model, str):
            self.model = model

    def _charge(self, event: dict[str, Any]) -> Charge:
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        usage = parse_usage(response.get("usage"))
        rid = response.get("id")
        status = response.get("status")
        charge = Charge(
            usage=usage,
            response_id=rid if isinstance(rid, str) else None,
            status=status if isinstance(status, str) else None,
            audio_in_seconds=0.0,
            audio_out_seconds=0.0,
        )
        return self.take_audio(charge)

    def take_audio(self, charge: Charge) -> Charge:
        """Move the audio measured since the last charge into ``charge`` (also used at close)."""
        charge.audio_in_seconds = audio_seconds(self.audio_in_bytes, self.input_format)
        charge.audio_out_seconds = audio_seconds(self.audio_out_bytes, self.output_format)
        self.audio_in_bytes = self.audio_out_bytes = 0
        self.usage_total = self.usage_total + charge.usage
        self.audio_in_total += charge.audio_in_seconds
        self.audio_out_total += charge.audio_out_seconds
        return charge

    def final_charge(self) -> Charge | None:
        """At close: the audio not yet charged (no response.done followed it)."""
        if not self.audio_in_bytes and not self.audio_out_bytes:
            return None
        return self.take_audio(Charge(Usage.ZERO, None, "session_end", 0.0, 0.0))
