"""``response.create`` parameters (GA or beta shape) over the session's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.sim.conversation import Conversation, Item, parse_item
from gateway.sim.shapes import (
    BETA_FORMATS,
    GA_FORMATS,
    SessionConfig,
    check_max_tokens,
    check_tool_choice,
    check_tools,
)
from gateway.sim.wire import (
    Ids,
    Protocol,
    SimRequestError,
    invalid_type,
    invalid_value,
    unknown_parameter,
)

GA_RESPONSE_KEYS = frozenset(
    {
        "output_modalities",
        "instructions",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "conversation",
        "metadata",
        "input",
        "prompt",
        "parallel_tool_calls",
        "reasoning",
    }
)
BETA_RESPONSE_KEYS = frozenset(
    {
        "modalities",
        "instructions",
        "voice",
        "output_audio_format",
        "tools",
        "tool_choice",
        "temperature",
        "max_output_tokens",
        "max_response_output_tokens",
        "conversation",
        "metadata",
        "input",
    }
)


@dataclass(slots=True)
class ResponseOptions:
    audio_output: bool
    instructions: str
    voice: str
    output_format: str
    tools: list[dict[str, Any]]
    tool_choice: Any
    max_output_tokens: int | str
    temperature: float
    in_conversation: bool = True
    metadata: dict[str, str] | None = None
    input: list[Item] | None = None  # a context of its own instead of the conversation


def defaults(cfg: SessionConfig) -> ResponseOptions:
    return ResponseOptions(
        audio_output=cfg.audio_output,
        instructions=cfg.instructions,
        voice=cfg.voice,
        output_format=cfg.output_format,
        tools=cfg.tools,
        tool_choice=cfg.tool_choice,
        max_output_tokens=cfg.max_output_tokens,
        temperature=cfg.temperature,
    )


def parse_response_params(
    raw: Any,
    cfg: SessionConfig,
    protocol: Protocol,
    conversation: Conversation,
    ids: Ids,
) -> ResponseOptions:
    options = defaults(cfg)
    if raw is None:
        return options
    if not isinstance(raw, dict):
        raise invalid_type("response", "an object", raw)
    allowed = GA_RESPONSE_KEYS if protocol == "ga" else BETA_RESPONSE_KEYS
    for key in raw:
        if key not in allowed:
            raise unknown_parameter(f"response.{key}")
    for key, value in raw.items():
        _apply(options, key, value, f"response.{key}", cfg, protocol, conversation, ids)
    return options


def _apply(
    options: ResponseOptions,
    key: str,
    value: Any,
    param: str,
    cfg: SessionConfig,
    protocol: Protocol,
    conversation: Conversation,
    ids: Ids,
) -> None:
    if key == "output_modalities":
        if value not in (["audio"], ["text"]):
            raise invalid_value(param, value, ["['audio']", "['text']"])
        options.audio_output = value == ["audio"]
    elif key == "modalities":
        if not isinstance(value, list) or sorted(value) not in (["text"], ["audio", "text"]):
            raise invalid_value(param, value, ["['text']", "['audio', 'text']"])
        options.audio_output = "audio" in value
    elif key == "instructions":
        if not isinstance(value, str):
            raise invalid_type(param, "a string", value)
        options.instructions = value
    elif key == "audio":
        _apply_audio(options, value, param)
    elif key == "voice":
        if not isinstance(value, str):
            raise invalid_type(param, "a string", value)
        options.voice = value
    elif key == "output_audio_format":
        if value not in BETA_FORMATS:
            raise invalid_value(param, value, list(BETA_FORMATS))
        options.output_format = value
    elif key == "tools":
        options.tools = check_tools(value, param)
    elif key == "tool_choice":
        options.tool_choice = check_tool_choice(value, param)
    elif key in ("max_output_tokens", "max_response_output_tokens"):
        options.max_output_tokens = check_max_tokens(value, param)
    elif key == "temperature":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_type(param, "a number", value)
        options.temperature = float(value)
    elif key == "conversation":
        if value not in ("auto", "none"):
            raise invalid_value(param, value, ["auto", "none"])
        options.in_conversation = value == "auto"
    elif key == "metadata":
        options.metadata = _metadata(value, param)
    elif key == "input":
        options.input = _input(value, param, cfg, protocol, conversation, ids)
    # prompt, parallel_tool_calls, reasoning: accepted, no effect on the simulated model


def _apply_audio(options: ResponseOptions, value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    for key in value:
        if key != "output":
            raise unknown_parameter(f"{param}.{key}")
    out = value.get("output")
    if not isinstance(out, dict):
        raise invalid_type(f"{param}.output", "an object", out)
    for key, item in out.items():
        if key == "voice":
            if not isinstance(item, str):
                raise invalid_type(f"{param}.output.voice", "a string", item)
            options.voice = item
        elif key == "format":
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in GA_FORMATS:
                raise invalid_value(f"{param}.output.format.type", kind, list(GA_FORMATS))
            options.output_format = GA_FORMATS[kind]
        else:
            raise unknown_parameter(f"{param}.output.{key}")


def _metadata(value: Any, param: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise invalid_type(param, "an object of at most 16 string values", value)
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise invalid_type(f"{param}.{key}", "a string", item)
    return dict(value)


def _input(
    value: Any,
    param: str,
    cfg: SessionConfig,
    protocol: Protocol,
    conversation: Conversation,
    ids: Ids,
) -> list[Item]:
    if not isinstance(value, list):
        raise invalid_type(param, "an array", value)
    items: list[Item] = []
    for index, raw in enumerate(value):
        if isinstance(raw, dict) and raw.get("type") == "item_reference":
            found = conversation.get(str(raw.get("id")))
            if found is None:
                raise SimRequestError(
                    "invalid_value",
                    f"Invalid value: '{raw.get('id')}'. No item with this id exists.",
                    f"{param}[{index}].id",
                )
            items.append(found)
            continue
        try:
            items.append(parse_item(raw, protocol, ids, cfg.input_format))
        except SimRequestError as err:
            err.param = (err.param or "").replace("item", f"{param}[{index}]", 1)
            raise
    return items
