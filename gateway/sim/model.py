"""The simulated model: deterministic rules that decide what a response says or calls.

Rules, in order:
1. The last context item is a function call output -> a message that reports it.
2. Function tools are available and ``tool_choice`` allows them, and the last user message
   names a tool (``get_weather`` or "get weather") or mentions "weather" -> a call of that
   tool (or of the first tool with "weather" in its name, else the first tool); a forced
   ``tool_choice`` (``required`` or a named function) always calls.
3. Otherwise a short message that quotes the user's text, or acknowledges the user's audio.
Arguments are built from the tool's JSON schema (``location``/``city`` from "in <Place>").
Phrasing varies with the seeded generator, so a seed fixes every word.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.sim.conversation import Item

_PLACE = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w\-]*(?:\s+[A-Z][\w\-]*)*)")
_TEXT_REPLIES = (
    'You said: "{quote}". How can I help further?',
    'I understood "{quote}". What else would you like to know?',
    'Got it: "{quote}". Is there anything else?',
)
_AUDIO_REPLIES = (
    "I can hear you loud and clear. How can I help you today?",
    "Thanks, I heard you. What would you like to talk about?",
    "Loud and clear! Tell me more.",
)
TRANSCRIPTS = (
    "Hello, can you hear me?",
    "Please tell me a short story.",
    "What time is it right now?",
    "Thanks, that was helpful.",
)


@dataclass(frozen=True, slots=True)
class Reply:
    kind: Literal["message", "function_call"]
    text: str = ""
    tool: str = ""
    arguments: str = ""


def plan_reply(
    context: list[Item], tools: list[dict[str, Any]], tool_choice: Any, rng: random.Random
) -> Reply:
    last = context[-1] if context else None
    if last is not None and last.type == "function_call_output":
        return Reply("message", f"Here is what I found: {_quote(last.output or '', 160)}.")
    functions = [t for t in tools if t.get("type", "function") == "function" and t.get("name")]
    user = next((i for i in reversed(context) if i.type == "message" and i.role == "user"), None)
    user_text = user.spoken_text() if user is not None else ""
    tool = _pick_tool(functions, tool_choice, user_text)
    if tool is not None:
        return Reply("function_call", tool=tool["name"], arguments=_arguments(tool, user_text))
    if user is None:
        return Reply("message", "Hello! How can I help you today?")
    if user_text and any(p.kind == "input_text" for p in user.content):
        return Reply("message", rng.choice(_TEXT_REPLIES).format(quote=_quote(user_text, 80)))
    return Reply("message", rng.choice(_AUDIO_REPLIES))


def _pick_tool(
    functions: list[dict[str, Any]], tool_choice: Any, text: str
) -> dict[str, Any] | None:
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        named = tool_choice.get("name")
        return next((t for t in functions if t["name"] == named), None)
    lowered = text.lower()
    for tool in functions:
        name = str(tool["name"]).lower()
        if name in lowered or name.replace("_", " ") in lowered:
            return tool
    if "weather" in lowered:
        return next((t for t in functions if "weather" in str(t["name"]).lower()), functions[0])
    return functions[0] if tool_choice == "required" else None


def _arguments(tool: dict[str, Any], text: str) -> str:
    schema = tool.get("parameters")
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    if not isinstance(props, dict):
        props = {}
    place = _PLACE.search(text)
    args: dict[str, Any] = {}
    for name, spec in props.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "string" and name.lower() in ("location", "city", "place"):
            args[name] = place.group(1) if place else "San Francisco"
        elif kind == "string":
            enum = spec.get("enum") if isinstance(spec, dict) else None
            args[name] = enum[0] if isinstance(enum, list) and enum else "example"
        elif kind in ("number", "integer"):
            args[name] = 1
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        else:
            args[name] = {}
    return orjson.dumps(args).decode()


def _quote(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
