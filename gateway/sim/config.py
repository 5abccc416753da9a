"""SimConfig: everything that shapes one simulator instance (keys, pacing, budgets, faults)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Options of one simulator instance. Frozen: one instance serves many connections.

    Fault options set here apply to every connection; a connection can add or clear its own
    with the ``sim_fault`` query parameter or ``X-Sim-Fault`` header (see ``gateway.sim``).
    """

    # Only these keys open sessions or mint client secrets (the upstream's own keys).
    api_keys: tuple[str, ...] = ("sk-sim",)
    # Audio pacing: sleep = audio duration x speed (1.0 real time, 0.5 twice as fast, 0 none).
    speed: float = 1.0
    # Seeds ids, phrasing and generated audio: the same seed and inputs give the same events.
    seed: int = 0
    # "OpenAI today": beta-shaped connections get beta_api_shape_disabled and close 4000.
    refuse_beta: bool = False
    # After this long a session gets `session_expired` and is closed (OpenAI: 60 minutes).
    max_session_seconds: float = 3600.0
    # Per-key budget, shared by all connections of one key (and its ephemeral keys).
    requests_limit: int = 10_000
    tokens_limit: int = 2_000_000
    reset_seconds: float = 60.0
    default_model: str = "gpt-realtime"
    default_voice: str = "alloy"
    # Largest client frame accepted (input_audio_buffer.append may carry up to 15 MiB of audio).
    max_frame_bytes: int = 16 * MIB
    # --- fault injection (per connection overrides: see gateway.sim) ---
    refuse_status: int | None = None
    close_after_events: tuple[int, int] | None = None  # (K events of a response, close code)
    stall_after_events: int | None = None
    malformed_after_events: int | None = None
    near_exhausted_rate_limits: bool = False
    fail_responses: bool = False

    def __post_init__(self) -> None:
        if not self.api_keys or any(not key for key in self.api_keys):
            raise ValueError("api_keys must hold at least one non-empty key")
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if self.max_session_seconds <= 0:
            raise ValueError("max_session_seconds must be > 0")
        if self.requests_limit < 1 or self.tokens_limit < 1 or self.reset_seconds <= 0:
            raise ValueError("rate-limit budget values must be positive")
        if self.max_frame_bytes < 64 * 1024:
            raise ValueError("max_frame_bytes must be >= 64 KiB")
        if self.refuse_status is not None and not 400 <= self.refuse_status <= 599:
            raise ValueError("refuse_status must be an HTTP error status (400-599)")
        if self.close_after_events is not None:
            count, code = self.close_after_events
            if count < 1 or not 1000 <= code <= 4999:
                raise ValueError("close_after_events is (K >= 1, close code 1000-4999)")
        for name in ("stall_after_events", "malformed_after_events"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1")
