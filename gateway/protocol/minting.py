"""Client-secret requests and answers, GA and beta shapes (pure).

``POST /v1/realtime/client_secrets`` (GA) takes ``{"expires_after": {...}, "session": {...}}`` and
answers ``{"value", "expires_at", "session"}``; ``POST /v1/realtime/sessions`` (beta) takes a flat
beta session plus ``client_secret.expires_after`` and answers the session with a
``client_secret: {value, expires_at}``. Both are validated here against the tenant's policy and
normalised to one GA session that is bound to the token. Two gateway extensions sit beside the
OpenAI fields: ``max_uses`` (default 1) and ``allowed_origins``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from gateway.errors import InvalidValue, MissingParameter, ModelNotAllowed, UnknownParameter
from gateway.protocol import shapes

GA_SESSION_FIELDS = frozenset(
    {
        "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
        "max_output_tokens", "tracing", "truncation", "prompt", "include", "parallel_tool_calls",
        "reasoning",
    }
)  # fmt: skip
GA_TRANSCRIPTION_FIELDS = frozenset({"type", "audio", "include"})
BETA_SESSION_FIELDS = frozenset(
    {
        "model", "modalities", "instructions", "voice", "input_audio_format",
        "output_audio_format", "input_audio_transcription", "turn_detection",
        "input_audio_noise_reduction", "tools", "tool_choice", "temperature",
        "max_response_output_tokens", "speed", "tracing", "include",
    }
)  # fmt: skip
_EXTENSIONS = frozenset({"max_uses", "allowed_origins"})

DEFAULT_MODEL = "gpt-realtime"


@dataclasses.dataclass(frozen=True, slots=True)
class MintPolicy:
    """What the tenant allows, as numbers and lists (from the tenant record and settings)."""

    models: Sequence[str]  # empty: any
    default_ttl: int
    max_ttl: int
    default_max_uses: int


@dataclasses.dataclass(frozen=True, slots=True)
class MintRequest:
    """A validated request: the GA session to bind and how the token may be used."""

    session: dict[str, Any]  # GA shape, with "type" and (for realtime sessions) "model"
    protocol: Literal["ga", "beta"]
    ttl_seconds: int
    max_uses: int
    allowed_origins: tuple[str, ...]

    @property
    def model(self) -> str | None:
        model = self.session.get("model")
        return model if isinstance(model, str) else None


def _copy(value: Any) -> Any:
    """A deep copy of parsed JSON (objects, arrays, scalars); several times faster than
    ``copy.deepcopy``, which minting otherwise pays on every request."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _require_object(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValue(f"Invalid type for '{param}': expected an object.", param=param)
    return value


def _ttl(expires_after: object, param: str, policy: MintPolicy) -> int:
    if expires_after is None:
        return min(policy.default_ttl, policy.max_ttl)
    body = _require_object(expires_after, param)
    for key in body:
        if key not in ("anchor", "seconds"):
            raise UnknownParameter(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    if body.get("anchor", "created_at") != "created_at":
        raise InvalidValue(
            f"Invalid value for '{param}.anchor': supported values are: 'created_at'.",
            param=f"{param}.anchor",
        )
    seconds = body.get("seconds", policy.default_ttl)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 10 <= seconds <= 7200:
        raise InvalidValue(
            f"Invalid value for '{param}.seconds': expected an integer between 10 and 7200.",
            param=f"{param}.seconds",
        )
    if seconds > policy.max_ttl:
        raise InvalidValue(
            f"Invalid value for '{param}.seconds': this tenant allows at most "
            f"{policy.max_ttl} seconds.",
            param=f"{param}.seconds",
        )
    return seconds


def _extensions(body: Mapping[str, Any], policy: MintPolicy) -> tuple[int, tuple[str, ...]]:
    max_uses = body.get("max_uses", policy.default_max_uses)
    if isinstance(max_uses, bool) or not isinstance(max_uses, int) or not 1 <= max_uses <= 1000:
        raise InvalidValue(
            "Invalid value for 'max_uses': expected an integer between 1 and 1000.",
            param="max_uses",
        )
    origins = body.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(
        isinstance(o, str) and o.startswith(("http://", "https://")) and len(o) < 256
        for o in origins
    ):
        raise InvalidValue(
            "Invalid value for 'allowed_origins': expected a list of http(s) origins.",
            param="allowed_origins",
        )
    return max_uses, tuple(o.rstrip("/") for o in origins)


def _check_fields(session: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in session:
        if key not in allowed:
            raise UnknownParameter(f"Unknown parameter: '{prefix}{key}'.", param=f"{prefix}{key}")


def _check_model(session: dict[str, Any], policy: MintPolicy) -> None:
    if session.get("type") == "transcription":
        return
    model = session.setdefault("model", policy.models[0] if policy.models else DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise InvalidValue("Invalid value for 'session.model'.", param="session.model")
    if policy.models and model not in policy.models:
        raise ModelNotAllowed(
            f"The model '{model}' is not allowed for this tenant.", param="session.model"
        )


def parse_ga_request(body: object, policy: MintPolicy) -> MintRequest:
    """Validate a ``POST /v1/realtime/client_secrets`` body."""
    request = _require_object(body, "body")
    _check_fields(request, frozenset({"expires_after", "session"}) | _EXTENSIONS, "")
    ttl = _ttl(request.get("expires_after"), "expires_after", policy)
    session_in = request.get("session")
    session = _copy(_require_object(session_in, "session")) if session_in else {}
    if session_in is not None and "type" not in session:
        raise MissingParameter("Missing required parameter: 'session.type'.", param="session.type")
    session.setdefault("type", "realtime")
    kind = session["type"]
    if kind not in ("realtime", "transcription"):
        raise InvalidValue(
            f"Invalid value: '{kind}'. Supported values are: 'realtime' and 'transcription'.",
            param="session.type",
        )
    allowed = GA_SESSION_FIELDS if kind == "realtime" else GA_TRANSCRIPTION_FIELDS
    _check_fields(session, allowed, "session.")
    _check_model(session, policy)
    max_uses, origins = _extensions(request, policy)
    return MintRequest(session, "ga", ttl, max_uses, origins)


def parse_beta_request(body: object, policy: MintPolicy) -> MintRequest:
    """Validate a ``POST /v1/realtime/sessions`` body (a flat beta session)."""
    request = _copy(_require_object(body, "body"))
    secret = request.pop("client_secret", None)
    expires_after = (
        _require_object(secret, "client_secret").get("expires_after") if secret else None
    )
    max_uses, origins = _extensions(request, policy)
    for key in _EXTENSIONS:
        request.pop(key, None)
    _check_fields(request, BETA_SESSION_FIELDS, "")
    ttl = _ttl(expires_after, "client_secret.expires_after", policy)
    session = shapes.session_to_ga(request)
    session["type"] = "realtime"
    _check_model(session, policy)
    return MintRequest(session, "beta", ttl, max_uses, origins)


def effective_ga_session(bound: Mapping[str, Any], session_id: str) -> dict[str, Any]:
    """The session as the GA answer shows it: the bound fields over the upstream's defaults."""
    if bound.get("type") == "transcription":
        base: dict[str, Any] = {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": 0,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {"type": "server_vad"},
                }
            },
            "include": None,
        }
    else:
        base = {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": DEFAULT_MODEL,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "voice": "alloy",
                    "speed": 1.0,
                },
            },
            "include": None,
        }
    return _merge(base, bound)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _copy(value)
    return out


def ga_answer(
    secret: str, expires_at: int, bound: Mapping[str, Any], session_id: str
) -> dict[str, Any]:
    return {
        "value": secret,
        "expires_at": expires_at,
        "session": effective_ga_session(bound, session_id),
    }


def beta_answer(
    secret: str, expires_at: int, bound: Mapping[str, Any], session_id: str
) -> dict[str, Any]:
    ga = effective_ga_session(bound, session_id)
    beta = shapes.session_to_beta(ga)
    beta.update(
        {
            "id": session_id,
            "object": "realtime.session",
            "client_secret": {"value": secret, "expires_at": expires_at},
        }
    )
    return beta
