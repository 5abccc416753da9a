"""Session policy: what a client may send, and which session fields it may not change.

Pure decisions on already-parsed events in the GA (normalised) shape. The minting call locks the
fields it set (``instructions``, ``tools``, ``audio.output.voice``, ...); a tenant may lock more.
A locked field is a *path* to a leaf (lists are leaves): setting it to the value it already has
is not a change and is allowed, anything else is a violation.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from gateway.errors import PolicyViolation

LockMode = Literal["refuse", "strip"]
Path = tuple[str, ...]


def leaf_paths(obj: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every path to a non-object value, with that value."""
    for key, value in obj.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, path)
        else:
            yield path, value


def _lookup(obj: Mapping[str, Any], path: Path) -> tuple[bool, Any]:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _remove(obj: dict[str, Any], path: Path) -> None:
    node: Any = obj
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            # A non-object where the locked leaf lives ({"audio": null}) would reset it: drop it.
            node.pop(key, None)
            return
        node = child
    node.pop(path[-1], None)


@dataclasses.dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Per session: the locked leaf values, how to treat changes, and which events may pass."""

    locked: Mapping[Path, Any] = dataclasses.field(default_factory=dict)
    lock_mode: LockMode = "refuse"
    # None: every client event type may pass. Otherwise only these.
    allowed_client_events: frozenset[str] | None = None
    allow_system_items: bool = True

    @classmethod
    def from_bound_session(
        cls,
        bound: Mapping[str, Any],
        *,
        lock_mode: LockMode = "refuse",
        allowed_client_events: frozenset[str] | None = None,
        allow_system_items: bool = True,
        extra_locked: Mapping[Path, Any] | None = None,
    ) -> SessionPolicy:
        locked = {path: value for path, value in leaf_paths(bound) if path != ("type",)}
        if extra_locked:
            locked.update(extra_locked)
        return cls(locked, lock_mode, allowed_client_events, allow_system_items)

    def check_event_type(self, event_type: str, event_id: str | None) -> None:
        if self.allowed_client_events is not None and event_type not in self.allowed_client_events:
            raise PolicyViolation(
                f"Event type '{event_type}' is not allowed for this session.",
                param="type",
                client_event_id=event_id,
            )

    def check_item(self, event: Mapping[str, Any], event_id: str | None) -> None:
        """``conversation.item.create``: a tenant may forbid system messages from clients."""
        if self.allow_system_items:
            return
        item = event.get("item")
        if isinstance(item, Mapping) and item.get("role") == "system":
            raise PolicyViolation(
                "Conversation items with role 'system' are not allowed for this session.",
                param="item.role",
                client_event_id=event_id,
            )

    def apply_to_update(self, session: dict[str, Any], event_id: str | None) -> dict[str, Any]:
        """Check a ``session.update``'s session (GA shape). Returns what may be forwarded.

        In ``refuse`` mode a change to a locked field raises PolicyViolation; in ``strip`` mode
        a copy without the locked fields is returned. Nothing locked touched: the very same
        object comes back, so the caller can forward the original frame.
        """
        return self._apply(session, event_id, "session")

    def apply_to_response(self, response: dict[str, Any], event_id: str | None) -> dict[str, Any]:
        """Check the ``response`` of a ``response.create`` (GA shape), like ``apply_to_update``.

        A response may override session fields for itself (``instructions``, ``tools``,
        ``tool_choice``, ``output_modalities``, ``audio.output.voice``, ...) at the same paths
        as the session: a locked field must not change there either, or the lock is bypassed
        one response at a time. Items of an out-of-band ``input`` obey ``allow_system_items``.
        """
        items = response.get("input")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, Mapping):
                    self.check_item({"item": item}, event_id)
        return self._apply(response, event_id, "response")

    def _apply(self, obj: dict[str, Any], event_id: str | None, where: str) -> dict[str, Any]:
        changed = [
            path
            for path, value in self.locked.items()
            if (found := _lookup(obj, path))[0] and found[1] != value
        ]
        # A client that replaces a whole object (e.g. "audio": {...}) without the locked leaf
        # would reset it upstream: treat a present parent without the leaf as a change too.
        changed += [
            path
            for path in self.locked
            if path not in changed and _parent_replaced_without_leaf(obj, path)
        ]
        if not changed:
            return obj
        names = ", ".join(sorted(".".join(p) for p in changed))
        if self.lock_mode == "refuse":
            raise PolicyViolation(
                f"These session fields are locked for this session and cannot be changed: {names}.",
                param=f"{where}." + ".".join(changed[0]),
                client_event_id=event_id,
            )
        stripped = copy.deepcopy(obj)
        for path in changed:
            _remove(stripped, path)
        return stripped


def _parent_replaced_without_leaf(obj: Mapping[str, Any], path: Path) -> bool:
    # Only relevant for nested paths: {"audio": {"output": {}}} when audio.output.voice is locked
    # does not reset the voice upstream (merge semantics), so only a non-object ancestor counts,
    # at any depth ({"audio": null} as much as {"audio": {"output": null}}).
    for depth in range(1, len(path)):
        found, node = _lookup(obj, path[:depth])
        if not found:
            return False
        if not isinstance(node, Mapping):
            return True
    return False
