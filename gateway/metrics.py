"""Prometheus metrics: the only module that imports prometheus_client.

Names follow Prometheus conventions (prefix ``realtime_gateway_``, ``_total`` counters, base
units ``_seconds`` and ``_bytes``). Labels come from bounded sets only: directions, reasons, close
codes, token classes, configured upstream and credential names, the known event types (anything
else is counted as ``other``), and the tenant id only while the number of tenants seen stays
under ``metrics_tenant_label_cap`` (then ``_other``). Never session ids or tokens.

Each app has its own registry so that several gateways can live in one test process.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

P = "realtime_gateway_"
OTHER_TENANT = "_other"

# Event types that may appear as a label value; the rest is counted as "other" so that a client
# sending random types cannot blow up the series count.
KNOWN_EVENT_TYPES = frozenset(
    {
        "session.update", "session.created", "session.updated", "transcription_session.update",
        "transcription_session.updated", "input_audio_buffer.append", "input_audio_buffer.commit",
        "input_audio_buffer.clear", "input_audio_buffer.committed", "input_audio_buffer.cleared",
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered", "output_audio_buffer.clear",
        "conversation.created", "conversation.item.create", "conversation.item.created",
        "conversation.item.added", "conversation.item.done", "conversation.item.retrieve",
        "conversation.item.retrieved", "conversation.item.truncate", "conversation.item.truncated",
        "conversation.item.delete", "conversation.item.deleted",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "response.create", "response.cancel", "response.created", "response.done",
        "response.output_item.added", "response.output_item.done",
        "response.content_part.added", "response.content_part.done",
        "response.output_text.delta", "response.output_text.done", "response.text.delta",
        "response.text.done", "response.output_audio.delta", "response.output_audio.done",
        "response.audio.delta", "response.audio.done", "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done", "response.audio_transcript.delta",
        "response.audio_transcript.done", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "rate_limits.updated", "error",
    }
)  # fmt: skip

DIRECTIONS = ("client_to_upstream", "upstream_to_client")
RESPONSE_STATUSES = frozenset({"completed", "cancelled", "failed", "incomplete", "in_progress"})
# Close codes shown as themselves; any other (a client may close with any 3000-4999 code) is
# "other", so that the label set stays small.
KNOWN_CLOSE_CODES = frozenset({*range(1000, 1016), 4000})
_MAX_CACHED_KEYS = 4096


def close_code_label(code: int | None) -> str:
    if code is None:
        return "none"
    return str(code) if code in KNOWN_CLOSE_CODES else "other"


def response_status_label(status: str | None) -> str:
    return status if status in RESPONSE_STATUSES else "other"


_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class Metrics:
    """Every metric of one gateway process, on its own registry."""

    def __init__(self, tenant_label_cap: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenant_cap = tenant_label_cap
        self._tenants: set[str] = set()
        r = self.registry
        self.live_sessions = Gauge(
            P + "live_sessions", "Sessions relayed now.", ["tenant"], registry=r
        )
        self.sessions_started = Counter(
            P + "sessions_started", "Sessions accepted.", ["tenant"], registry=r
        )
        self.sessions_ended = Counter(
            P + "sessions_ended",
            "Sessions ended, by reason and the close code sent to the client.",
            ["tenant", "reason", "close_code"],
            registry=r,
        )
        self.refused_upgrades = Counter(
            P + "refused_upgrades", "WebSocket upgrades answered with an HTTP error.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.session_duration = Histogram(
            P + "session_duration_seconds", "Session duration.", buckets=_DURATION_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.upstream_connect = Histogram(
            P + "upstream_connect_seconds", "Time to open the upstream session (handshake and "
            "bound session configuration).", ["upstream"], buckets=_CONNECT_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_delta = Histogram(
            P + "first_delta_seconds",
            "Time from response.create or speech_stopped to the first audio or text delta.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        # Per-frame counts are plain integers exported at scrape time (see RelayTally): a
        # prometheus_client increment takes a lock and costs more than relaying the frame.
        self.relay = RelayTally()
        r.register(self.relay)
        self.refused_events = Counter(
            P + "refused_client_events", "Client events answered with an error and not forwarded "
            "(invalid, against the policy, binary frames, over budget).", registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            P + "tokens", "Tokens reported by the upstream, by class.", ["tenant", "class"],
            registry=r,
        )  # fmt: skip
        self.audio_seconds = Counter(
            P + "audio_seconds", "Seconds of audio relayed.", ["tenant", "direction"], registry=r
        )
        self.cost = Counter(P + "cost_usd", "Cost in US dollars.", ["tenant"], registry=r)
        self.responses = Counter(
            P + "responses", "Responses finished, by status.", ["status"], registry=r
        )
        self.upstream_ratelimit_remaining = Gauge(
            P + "upstream_ratelimit_remaining", "Upstream rate-limit remaining, last reported.",
            ["upstream", "credential", "name"], registry=r,
        )  # fmt: skip
        self.upstream_ratelimit_limit = Gauge(
            P + "upstream_ratelimit_limit", "Upstream rate-limit size, last reported.",
            ["upstream", "credential", "name"], registry=r,
        )  # fmt: skip
        self.upstream_sessions = Counter(
            P + "upstream_sessions", "Upstream sessions opened.", ["upstream", "credential"],
            registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            P + "upstream_errors", "Upstream failures: refused connects, errors, lost sessions.",
            ["upstream", "kind"], registry=r,
        )  # fmt: skip
        self.quota_refusals = Counter(
            P + "quota_refusals", "Requests refused for a tenant limit.", ["tenant", "limit"],
            registry=r,
        )  # fmt: skip
        self.tenant_tokens_remaining = Gauge(
            P + "tenant_tokens_remaining", "Tenant token budget left, last computed.",
            ["tenant", "window"], registry=r,
        )  # fmt: skip
        self.redis_errors = Counter(
            P + "redis_errors", "Redis operations that failed.", ["operation"], registry=r
        )
        self.buffered_charges = Gauge(
            P + "buffered_charges", "Usage charges held in memory until Redis takes them.",
            registry=r,
        )  # fmt: skip
        self.charges_dropped = Counter(
            P + "charges_dropped", "Usage charges lost: over the memory bound of the buffer, or "
            "refused by Redis itself (should stay 0).", registry=r,
        )  # fmt: skip
        self.relay_queue_depth = Gauge(
            P + "relay_queue_frames", "Frames received and not yet sent on, over all sessions.",
            registry=r,
        )  # fmt: skip
        self.dropped_frames = Counter(
            P + "dropped_frames", "Frames dropped for backpressure (the relay blocks instead, so "
            "this stays 0 unless a queue limit is configured).", ["direction"], registry=r,
        )  # fmt: skip
        self.tokens_minted = Counter(
            P + "client_secrets_minted", "Client secrets minted.", ["tenant"], registry=r
        )
        self.tokens_redeemed = Counter(
            P + "client_secrets_redeemed", "Client secrets used to open a session.", ["tenant"],
            registry=r,
        )  # fmt: skip
        self.draining = Gauge(P + "draining", "1 while this replica drains.", registry=r)
        # Series of bounded label sets exist from the start (0 rather than absent), so that
        # rates and alerts on them work before the first event.
        for direction in DIRECTIONS:
            self.dropped_frames.labels(direction)
        self._charges_dropped_seen = 0

    def tenant(self, tenant_id: str) -> str:
        """The label value for a tenant: its id while under the cap, then ``_other``."""
        if tenant_id in self._tenants:
            return tenant_id
        if len(self._tenants) < self._tenant_cap:
            self._tenants.add(tenant_id)
            return tenant_id
        return OTHER_TENANT

    def charges_dropped_now(self, total: int) -> None:
        """Report the buffer's running count of dropped charges (a counter from a total)."""
        if total > self._charges_dropped_seen:
            self.charges_dropped.inc(total - self._charges_dropped_seen)
            self._charges_dropped_seen = total

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RelayTally(Collector):
    """Events and bytes relayed, by direction and event type: ``[events, bytes]`` lists bumped
    per frame, exported as ``realtime_gateway_relayed_events_total`` and ``_bytes_total`` when
    scraped. Event types outside ``KNOWN_EVENT_TYPES`` share one ``other`` slot, and the lookup
    cache is bounded, so a client sending random types grows nothing."""

    _labelnames = ("direction", "type")  # as a labelled prometheus_client metric names them

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str], list[int]] = {}
        self._cache: dict[tuple[str, str | bytes], list[int]] = {}

    def describe(self) -> Iterator[CounterMetricFamily]:
        # Lets the registry know the names up front (and refuse a second metric by that name).
        yield from self._families()

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                P + "relayed_events", "Events relayed.", labels=list(self._labelnames)
            ),
            CounterMetricFamily(
                P + "relayed_bytes",
                "Bytes of event payload relayed.",
                labels=list(self._labelnames),
            ),
        )

    def slot(self, direction: str, event_type: str | bytes) -> list[int]:
        key = (direction, event_type)
        found = self._cache.get(key)
        if found is not None:
            return found
        name = (
            event_type.decode("utf-8", "replace") if isinstance(event_type, bytes) else event_type
        )
        label = name if name in KNOWN_EVENT_TYPES else "other"
        found = self._slots.setdefault((direction, label), [0, 0])
        if label != "other" or len(self._cache) < _MAX_CACHED_KEYS:
            self._cache[key] = found
        return found

    def collect(self) -> Iterator[CounterMetricFamily]:
        events, sizes = self._families()
        for (direction, label), (count, size) in sorted(self._slots.items()):
            events.add_metric([direction, label], count)
            sizes.add_metric([direction, label], size)
        yield events
        yield sizes
