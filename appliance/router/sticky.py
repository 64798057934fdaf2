"""Sticky agent sessions: a tool-result turn keeps the route its session started on.

Switching model mid-task loses the prefix cache and confuses the agent, so a turn
whose latest message is a tool result reuses the session's decision. A session is
named by a hash of its stable prefix (system prompt + first user message): agents
resend the whole history each turn, so the prefix identifies the conversation
without storing any of its text.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any


def session_key(messages: list[dict[str, Any]]) -> str | None:
    """sha256 of the system messages and the first user message; None without a user turn."""
    h = hashlib.sha256()
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer", "user"):
            h.update(role.encode() + b"\0")
            h.update(json.dumps(msg.get("content"), sort_keys=True, ensure_ascii=False).encode() + b"\0")
        if role == "user":
            return h.hexdigest()
    return None


def is_tool_turn(messages: list[dict[str, Any]]) -> bool:
    """The latest message carries tool output (OpenAI `tool` role), not new user intent."""
    return bool(messages) and messages[-1].get("role") == "tool"


class StickySessions:
    """A bounded LRU of session key -> (route, reason)."""

    def __init__(self, capacity: int = 4096):
        self.capacity = max(1, capacity)
        self._data: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, route: str, reason: str) -> None:
        with self._lock:
            self._data[key] = (route, reason)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
