"""Beta <-> GA translation of realtime events, for a client and an upstream that differ.

Pure: data in, events out. Object shapes (sessions, responses, items, parts) are in
``shapes.py``; this module maps event types and applies those shapes.

API (``src`` is the dialect the event is in, ``dst`` the one it is going to; equal dialects
return the event untouched)::

    translate_client_event(event, src, dst, state=None) -> list[dict]  # client -> upstream
    translate_server_event(event, src, dst, state=None) -> list[dict]  # upstream -> client
    translate_client_frame(frame, src, dst, state=None) -> list[bytes]
    translate_server_frame(frame, src, dst, state=None) -> list[bytes]
    rename_server_frame(frame, kind, src) -> bytes | None
    rename_event_type_bytes(frame, table) -> bytes | None

Lists, because an event may become none or two. Unknown event types and unknown fields pass
through untouched (the same object, so the frame functions forward the original bytes).

Renamed server events (a type rename only, done on the bytes, see "Hot path")::

    beta                                  GA
    response.text.delta / .done           response.output_text.delta / .done
    response.audio.delta / .done          response.output_audio.delta / .done
    response.audio_transcript.delta/.done response.output_audio_transcript.delta / .done

Events translated by shape (``shapes.py``): ``session.update``, ``session.created/updated``,
``response.create``, ``response.created/done``, ``conversation.item.create``,
``conversation.item.created/added/retrieved``, ``response.output_item.added/done``,
``response.content_part.added/done`` (GA -> beta only).

Synthesised and dropped events
------------------------------

============================================  =====================================================
upstream event                                what the client gets
============================================  =====================================================
GA ``conversation.item.added``                beta ``conversation.item.created``
GA ``conversation.item.done``                 nothing (beta has no such event; the item's
                                              completion shows in ``response.output_item.done``)
GA ``session.created`` (realtime)             beta ``session.created``, then a synthesised
                                              ``conversation.created`` (id ``conv_`` + the
                                              session id's suffix; beta servers send one)
GA ``session.created/updated``,               beta ``transcription_session.created/updated``
``session.type == "transcription"``
GA-only events (``input_audio_buffer.         passed through untouched to beta clients: they
timeout_triggered``, ``...transcription.      only occur when the client used a GA-only
segment``, ``mcp_*``, ``dtmf_*``)             feature through an unknown field
beta ``conversation.created``                 nothing (GA servers do not send it; the GA
                                              conversation id shows in ``response.created``)
beta ``conversation.item.created``            GA ``conversation.item.added``, then a synthesised
                                              ``conversation.item.done`` (same item,
                                              ``event_id`` + ``"_done"``) unless the item's
                                              ``status`` is ``"in_progress"``
beta ``conversation.item.created``,           GA ``conversation.item.added`` only; with a
``status: "in_progress"``                     ``TranslationState``, the later
                                              ``response.output_item.done`` of that item is
                                              followed by a synthesised ``conversation.item.done``
beta ``response.function_call_arguments.      GA event; with a ``TranslationState``, the
done`` without ``name``                       ``name`` the GA SDK requires is filled in from the
                                              item of ``response.output_item.added``
beta ``transcription_session.created/         GA ``session.created/updated`` with
updated``                                     ``session.type == "transcription"``
============================================  =====================================================

Client events: beta ``transcription_session.update`` becomes GA ``session.update`` with
``session.type: "transcription"`` and back; ``session.update``, ``response.create`` and
``conversation.item.create`` are reshaped; nothing is dropped or synthesised. Beta
``temperature`` is dropped (GA has none, see ``shapes.py``).

Hot path
--------
An audio delta (about 6.4 KB per 100 ms of 24 kHz PCM) only needs its type renamed. The frame
functions find the top-level type without parsing: first by ``{"type":"`` at the very start (how
OpenAI's servers and the SDKs write events), else with one anchored regular expression (the
type may follow up to three keys with escape-free scalar values, e.g. ``event_id``, and JSON
whitespace is allowed). They splice the new name in; the base64 is copied, never decoded.
Frames of types that need no translation (``input_audio_buffer.append``, most server events)
are returned as the same bytes object. A frame whose type is not found that way is parsed and
dumped with orjson, which is always correct. The byte path does not validate the rest of the
frame (the peer receives what it would have received untranslated) and reads the first
``type`` key of a frame with duplicate keys, where a parser keeps the last.
Measured by ``loadtest/bench_translate.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson

from gateway.protocol import shapes

__all__ = [
    "Dialect",
    "Direction",
    "TranslationState",
    "client_event_from_ga",
    "client_event_to_ga",
    "rename_event_type_bytes",
    "rename_server_frame",
    "sniff_type_span",
    "translate_client_event",
    "translate_client_frame",
    "translate_server_event",
    "translate_server_frame",
]

Dialect = Literal["beta", "ga"]
Event = dict[str, Any]


class Direction(enum.Enum):
    SAME = "same"
    BETA_TO_GA = "beta->ga"
    GA_TO_BETA = "ga->beta"

    @classmethod
    def of(cls, src: Dialect, dst: Dialect) -> Direction:
        if src == dst:
            return cls.SAME
        return cls.BETA_TO_GA if src == "beta" else cls.GA_TO_BETA


# ---- state ------------------------------------------------------------------------------------

_STATE_LIMIT = 256  # ids remembered per session; old ones are forgotten first


@dataclasses.dataclass(slots=True)
class TranslationState:
    """What a beta -> GA server translation remembers between events of one session.

    Optional: without it every event is translated on its own (see the table above for what is
    then missing). Bounded, so a misbehaving upstream cannot grow it.
    """

    # function_call item id -> function name (from response.output_item.added)
    function_names: OrderedDict[str, str] = dataclasses.field(default_factory=OrderedDict)
    # in-progress conversation item id -> previous_item_id (from conversation.item.created)
    open_items: OrderedDict[str, object] = dataclasses.field(default_factory=OrderedDict)

    def remember_function(self, item_id: str, name: str) -> None:
        _bounded_put(self.function_names, item_id, name)

    def remember_open_item(self, item_id: str, previous_item_id: object) -> None:
        _bounded_put(self.open_items, item_id, previous_item_id)


def _bounded_put(store: OrderedDict[str, Any], key: str, value: object) -> None:
    store[key] = value
    if len(store) > _STATE_LIMIT:
        store.popitem(last=False)


# ---- event tables ------------------------------------------------------------------------------

_SERVER_RENAMES_TO_GA: dict[str, str] = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
}
_SERVER_RENAMES_TO_BETA = {ga: beta for beta, ga in _SERVER_RENAMES_TO_GA.items()}

Handler = Callable[[Event, "TranslationState | None"], list[Event]]


def _renamed(new_type: str) -> Handler:
    def handler(event: Event, state: TranslationState | None) -> list[Event]:
        return [{**event, "type": new_type}]

    return handler


def _with(key: str, shape: Callable[[Any], object], new_type: str | None = None) -> Handler:
    """A handler that reshapes ``event[key]`` (when it is an object) and optionally renames."""

    def handler(event: Event, state: TranslationState | None) -> list[Event]:
        value = event.get(key)
        if not isinstance(value, Mapping) and new_type is None:
            return [event]  # nothing to reshape: keep the very object (and so its bytes)
        out = dict(event)
        if isinstance(value, Mapping):
            out[key] = shape(value)
        if new_type is not None:
            out["type"] = new_type
        return [out]

    return handler


# -- client events --


def _session_update_to_beta(event: Event, state: TranslationState | None) -> list[Event]:
    session = event.get("session")
    if not isinstance(session, Mapping):
        return [event]
    kind = shapes.session_kind(session)
    new_type = "transcription_session.update" if kind == "transcription" else "session.update"
    return [{**event, "type": new_type, "session": shapes.session_to_beta(session)}]


_CLIENT_TO_GA: dict[str, Handler] = {
    "session.update": _with("session", shapes.session_to_ga),
    "transcription_session.update": _with(
        "session", lambda s: shapes.session_to_ga(s, "transcription"), "session.update"
    ),
    "response.create": _with("response", shapes.response_to_ga),
    "conversation.item.create": _with("item", shapes.item_to_ga),
}
_CLIENT_TO_BETA: dict[str, Handler] = {
    "session.update": _session_update_to_beta,
    "response.create": _with("response", lambda r: shapes.response_to_beta(r, params=True)),
    "conversation.item.create": _with("item", shapes.item_to_beta),
}

# -- server events, GA -> beta --


def _session_event_to_beta(event: Event, state: TranslationState | None) -> list[Event]:
    session = event.get("session")
    if not isinstance(session, Mapping):
        return [event]
    new_type = event["type"]
    if shapes.session_kind(session) == "transcription":
        new_type = "transcription_session." + new_type.removeprefix("session.")
    return [{**event, "type": new_type, "session": shapes.session_to_beta(session)}]


def _session_created_to_beta(event: Event, state: TranslationState | None) -> list[Event]:
    """Beta servers follow ``session.created`` with ``conversation.created``; GA ones do not, so
    beta clients (the SDK and apps that wait for it) get one synthesised. Its id is derived from
    the session id, so the translation stays pure and deterministic."""
    out = _session_event_to_beta(event, state)
    session = event.get("session")
    if out and out[0]["type"] == "session.created" and isinstance(session, Mapping):
        session_id = str(session.get("id") or "")
        event_id = str(event.get("event_id") or "event_")
        conversation_id = "conv_" + session_id.removeprefix("sess_") if session_id else "conv_0"
        out.append(
            {
                "type": "conversation.created",
                "event_id": event_id + "_conv",
                "conversation": {"id": conversation_id, "object": "realtime.conversation"},
            }
        )
    return out


def _drop(event: Event, state: TranslationState | None) -> list[Event]:
    return []


def _response_to_beta(response: Mapping[str, Any]) -> shapes.JSON:
    return shapes.response_to_beta(response, params=False)


_SERVER_TO_BETA: dict[str, Handler] = {
    **{ga: _renamed(beta) for ga, beta in _SERVER_RENAMES_TO_BETA.items()},
    "session.created": _session_created_to_beta,
    "session.updated": _session_event_to_beta,
    "conversation.item.added": _with("item", shapes.item_to_beta, "conversation.item.created"),
    "conversation.item.done": _drop,
    "conversation.item.created": _with("item", shapes.item_to_beta),
    "conversation.item.retrieved": _with("item", shapes.item_to_beta),
    "response.output_item.added": _with("item", shapes.item_to_beta),
    "response.output_item.done": _with("item", shapes.item_to_beta),
    "response.content_part.added": _with("part", shapes.part_to_beta),
    "response.content_part.done": _with("part", shapes.part_to_beta),
    "response.created": _with("response", _response_to_beta),
    "response.done": _with("response", _response_to_beta),
}

# -- server events, beta -> GA --


def _transcription_session_to_ga(session: Mapping[str, Any]) -> shapes.JSON:
    return shapes.session_to_ga(session, "transcription")


def _item_created_to_ga(event: Event, state: TranslationState | None) -> list[Event]:
    added = {**event, "type": "conversation.item.added"}
    item = added["item"] = shapes.item_to_ga(event.get("item"))
    status = item.get("status") if isinstance(item, Mapping) else None
    if status == "in_progress":
        item_id = item.get("id") if isinstance(item, Mapping) else None
        if state is not None and isinstance(item_id, str):
            state.remember_open_item(item_id, event.get("previous_item_id"))
        return [added]
    return [added, _item_done(added, event.get("previous_item_id"), item)]


def _item_done(source: Event, previous_item_id: object, item: object) -> Event:
    """A synthesised GA ``conversation.item.done`` derived from ``source``'s event id."""
    done: Event = {"type": "conversation.item.done"}
    event_id = source.get("event_id")
    if isinstance(event_id, str):
        done["event_id"] = event_id + "_done"
    done["previous_item_id"] = previous_item_id
    done["item"] = item
    return done


def _output_item_added_to_ga(event: Event, state: TranslationState | None) -> list[Event]:
    item = event.get("item")
    if state is not None and isinstance(item, Mapping) and item.get("type") == "function_call":
        item_id, name = item.get("id"), item.get("name")
        if isinstance(item_id, str) and isinstance(name, str):
            state.remember_function(item_id, name)
    return [{**event, "item": shapes.item_to_ga(item)}] if "item" in event else [event]


def _output_item_done_to_ga(event: Event, state: TranslationState | None) -> list[Event]:
    item = shapes.item_to_ga(event.get("item"))
    out = [{**event, "item": item}] if "item" in event else [event]
    item_id = item.get("id") if isinstance(item, Mapping) else None
    if state is not None and isinstance(item_id, str) and item_id in state.open_items:
        previous = state.open_items.pop(item_id)
        out.append(_item_done(event, previous, item))
    return out


def _arguments_done_to_ga(event: Event, state: TranslationState | None) -> list[Event]:
    item_id = event.get("item_id")
    if state is None or not isinstance(item_id, str):
        return [event]
    name = state.function_names.pop(item_id, None)
    if name is None or "name" in event:
        return [event]
    return [{**event, "name": name}]


_SERVER_TO_GA: dict[str, Handler] = {
    **{beta: _renamed(ga) for beta, ga in _SERVER_RENAMES_TO_GA.items()},
    "session.created": _with("session", shapes.session_to_ga),
    "session.updated": _with("session", shapes.session_to_ga),
    "conversation.created": _drop,
    "transcription_session.created": _with(
        "session", _transcription_session_to_ga, "session.created"
    ),
    "transcription_session.updated": _with(
        "session", _transcription_session_to_ga, "session.updated"
    ),
    "conversation.item.created": _item_created_to_ga,
    "conversation.item.retrieved": _with("item", shapes.item_to_ga),
    "response.output_item.added": _output_item_added_to_ga,
    "response.output_item.done": _output_item_done_to_ga,
    "response.function_call_arguments.done": _arguments_done_to_ga,
    "response.created": _with("response", shapes.response_to_ga),
    "response.done": _with("response", shapes.response_to_ga),
}

_CLIENT_HANDLERS: dict[Direction, dict[str, Handler]] = {
    Direction.SAME: {},
    Direction.BETA_TO_GA: _CLIENT_TO_GA,
    Direction.GA_TO_BETA: _CLIENT_TO_BETA,
}
_SERVER_HANDLERS: dict[Direction, dict[str, Handler]] = {
    Direction.SAME: {},
    Direction.BETA_TO_GA: _SERVER_TO_GA,
    Direction.GA_TO_BETA: _SERVER_TO_BETA,
}


# ---- events ------------------------------------------------------------------------------------


def _translate(
    event: Event, handlers: Mapping[str, Handler], state: TranslationState | None
) -> list[Event]:
    kind = event.get("type")
    handler = handlers.get(kind) if isinstance(kind, str) else None
    return [event] if handler is None else handler(event, state)


def translate_client_event(
    event: Event, src: Dialect, dst: Dialect, state: TranslationState | None = None
) -> list[Event]:
    """A client event in dialect ``src`` as the events to send to an upstream speaking ``dst``."""
    return _translate(event, _CLIENT_HANDLERS[Direction.of(src, dst)], state)


def translate_server_event(
    event: Event, src: Dialect, dst: Dialect, state: TranslationState | None = None
) -> list[Event]:
    """An upstream event in dialect ``src`` as the events for a client speaking ``dst``."""
    return _translate(event, _SERVER_HANDLERS[Direction.of(src, dst)], state)


def client_event_to_ga(event: Event) -> Event:
    """A beta client event in the GA shape (the normal form policy checks read)."""
    return translate_client_event(event, "beta", "ga")[0]


def client_event_from_ga(event: Event, dst: Dialect) -> list[Event]:
    """A client event in the GA shape, for an upstream speaking ``dst``."""
    return translate_client_event(event, "ga", dst)


# The name gateway/protocol/core.py was first written against (it sends a GA-normalised
# session.update on to the upstream); same function.
ga_event_to_client = client_event_from_ga


# ---- frames (the hot path) -------------------------------------------------------------------

_WS = rb"[ \t\n\r]*+"
_STRING = rb'"[^"\\]*+"'  # possessive: a long base64 value is scanned once, never backtracked
_SCALAR = rb"(?:" + _STRING + rb"|null|true|false|-?[0-9][0-9.eE+-]*+)"
_OTHER_KEY = rb'(?!"type"' + _WS + rb":)" + _STRING
# The top-level "type" as the first key, or after up to three keys with escape-free scalar values.
# Keys and strings with a backslash never match, so an escaped "type" key or value is parsed.
_TYPE_RE = re.compile(
    _WS + rb"\{" + _WS
    + rb"(?:" + _OTHER_KEY + _WS + rb":" + _WS + _SCALAR + _WS + rb"," + _WS + rb"){0,3}+"
    + rb'"type"' + _WS + rb":" + _WS + rb'"([^"\\]*+)"'
)  # fmt: skip
_TYPE_FIRST = b'{"type":"'  # how OpenAI's servers and the SDKs write every event
_MAX_TYPE_LEN = 128


def sniff_type_span(frame: bytes) -> tuple[int, int] | None:
    """Start and end offsets of the top-level type's value in ``frame``, or None (parse it)."""
    if frame.startswith(_TYPE_FIRST):
        start = len(_TYPE_FIRST)
        end = frame.find(b'"', start, start + _MAX_TYPE_LEN)
        if end >= 0 and frame.find(b"\\", start, end) < 0:
            return start, end
        return None  # an escaped or absurdly long type: parse
    match = _TYPE_RE.match(frame)
    return match.span(1) if match else None


def _splice(frame: bytes, span: tuple[int, int], new: bytes) -> bytes:
    return b"".join((frame[: span[0]], new, frame[span[1] :]))


def rename_event_type_bytes(frame: bytes, table: Mapping[bytes, bytes]) -> bytes | None:
    """``frame`` with its top-level type replaced per ``table``; None when the type is not in the
    table or not readable without a parse. The rest of the frame is copied, never decoded."""
    span = sniff_type_span(frame)
    if span is None:
        return None
    new = table.get(frame[span[0] : span[1]])
    return None if new is None else _splice(frame, span, new)


def _bytes_table(table: Mapping[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in table.items()}


_FRAME_RENAMES: dict[Direction, dict[bytes, bytes]] = {
    Direction.SAME: {},
    Direction.BETA_TO_GA: _bytes_table(_SERVER_RENAMES_TO_GA),
    Direction.GA_TO_BETA: _bytes_table(_SERVER_RENAMES_TO_BETA),
}


def _other(dialect: Dialect) -> Dialect:
    return "ga" if dialect == "beta" else "beta"


def rename_server_frame(frame: bytes, kind: bytes, src: Dialect) -> bytes | None:
    """Bytes-only translation of an upstream frame whose type ``kind`` the caller has sniffed,
    for a client speaking the other dialect: the renamed frame, the same frame when its type
    needs no translation, or None when it must be parsed (``translate_server_event``)."""
    rules = _SERVER_RULES[src, _other(src)]
    new = rules.renames.get(kind)
    if new is None:
        return None if kind in rules.handled else frame
    span = sniff_type_span(frame)
    if span is None or frame[span[0] : span[1]] != kind:
        return None  # the caller's sniff disagrees with ours: let the parse decide
    return _splice(frame, span, new)


@dataclasses.dataclass(frozen=True, slots=True)
class _FrameRules:
    same: bool  # equal dialects: every frame passes untouched
    renames: Mapping[bytes, bytes]  # types translated by a rename of the bytes
    handled: frozenset[bytes]  # types that need a parse; any other type passes untouched
    handlers: Mapping[str, Handler]


def _frame_rules(src: Dialect, dst: Dialect, *, server: bool) -> _FrameRules:
    direction = Direction.of(src, dst)
    handlers = (_SERVER_HANDLERS if server else _CLIENT_HANDLERS)[direction]
    renames = _FRAME_RENAMES[direction] if server else {}
    handled = frozenset(k.encode() for k in handlers) - frozenset(renames)
    return _FrameRules(direction is Direction.SAME, renames, handled, handlers)


_PAIRS: tuple[tuple[Dialect, Dialect], ...] = (
    ("beta", "beta"),
    ("beta", "ga"),
    ("ga", "beta"),
    ("ga", "ga"),
)
# Keyed by (src, dst) so that the per-frame work is one dict lookup.
_CLIENT_RULES = {pair: _frame_rules(*pair, server=False) for pair in _PAIRS}
_SERVER_RULES = {pair: _frame_rules(*pair, server=True) for pair in _PAIRS}


def _translate_frame(
    frame: bytes, rules: _FrameRules, state: TranslationState | None
) -> list[bytes]:
    if rules.same:
        return [frame]
    span = sniff_type_span(frame)
    if span is not None:
        kind = frame[span[0] : span[1]]
        new = rules.renames.get(kind)
        if new is not None:
            return [_splice(frame, span, new)]
        if kind not in rules.handled:
            return [frame]
    return _parse_and_translate(frame, rules.handlers, state)


def _parse_and_translate(
    frame: bytes, handlers: Mapping[str, Handler], state: TranslationState | None
) -> list[bytes]:
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return [frame]  # not ours to judge: the peer answers malformed JSON as it would anyway
    if not isinstance(event, dict):
        return [frame]
    events = _translate(event, handlers, state)
    if len(events) == 1 and events[0] is event:
        return [frame]  # untouched: forward the original bytes
    return [orjson.dumps(e) for e in events]


def translate_client_frame(
    frame: bytes, src: Dialect, dst: Dialect, state: TranslationState | None = None
) -> list[bytes]:
    """``translate_client_event`` on a frame; untouched events keep their original bytes."""
    return _translate_frame(frame, _CLIENT_RULES[src, dst], state)


def translate_server_frame(
    frame: bytes, src: Dialect, dst: Dialect, state: TranslationState | None = None
) -> list[bytes]:
    """``translate_server_event`` on a frame; deltas are renamed on the bytes (see "Hot path")."""
    return _translate_frame(frame, _SERVER_RULES[src, dst], state)
