"""Runtime `Event`s -> Anthropic Messages responses: whole `message` objects and the event stream.

The anthropic SDK (and Claude Code) rebuild a message from `content_block_start` /
`content_block_delta` / `content_block_stop` by block index: text blocks grow by
`text_delta`, thinking blocks by `thinking_delta`, tool_use blocks by
`input_json_delta` (the arguments' JSON text, parsed at the end). Our events mix
these freely, so this module opens and closes blocks as the kind of output changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from appliance.api.errors import ApiError
from appliance.api.http import new_id
from appliance.api.sse import sse_event
from runtimes.base import Event, Usage
from runtimes.upstream.anthropic_format import TO_STOP_REASON, tool_input, usage_to_anthropic

# Anthropic's error `type` for an HTTP status (its SDKs branch on status; people read the type).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(err: ApiError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def stop_reason(finish: str | None, called_tools: bool) -> str:
    reason = TO_STOP_REASON.get(finish or "stop", "end_turn")
    return "tool_use" if called_tools and reason == "end_turn" else reason


def tool_id() -> str:
    return new_id("toolu").replace("-", "_")


def message_object(
    id: str, model: str, content: list[dict[str, Any]], stop: str | None, usage: Usage | None
) -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage_to_anthropic(usage),
    }


@dataclass
class MessageCollector:
    """Accumulates a whole answer as content blocks (thinking, text, tool_use)."""

    thinking: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> {id, name, args}

    def add(self, ev: Event) -> None:
        self.thinking.append(ev.reasoning)
        self.text.append(ev.content)
        for piece in ev.tool_calls:
            call = self.tools.setdefault(piece.index, {"id": piece.id or tool_id(), "name": "", "args": ""})
            call["name"] += piece.name or ""
            call["args"] += piece.arguments

    def message(self, id: str, model: str, finish: str | None, usage: Usage | None) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = []
        if "".join(self.thinking):
            blocks.append({"type": "thinking", "thinking": "".join(self.thinking), "signature": ""})
        if "".join(self.text) or not self.tools:
            blocks.append({"type": "text", "text": "".join(self.text)})
        for _, call in sorted(self.tools.items()):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["name"],
                    "input": tool_input(call["args"]),
                }
            )
        return message_object(id, model, blocks, stop_reason(finish, bool(self.tools)), usage)


@dataclass
class MessageStream:
    """Builds the event stream of one answer; each method returns SSE frames to send."""

    id: str
    model: str
    created: float = field(default_factory=time.time)
    _index: int = -1
    _open: tuple[str, int] | None = None  # ("text"|"thinking"|"tool_use", tool index)
    _called_tools: bool = False

    def start(self, prompt: Usage | None = None) -> bytes:
        """message_start, with the prompt's counts (as Anthropic's own stream has them)."""
        message = message_object(self.id, self.model, [], None, prompt or Usage())
        return sse_event({"type": "message_start", "message": message})

    def delta(self, ev: Event) -> list[bytes]:
        out: list[bytes] = []
        if ev.reasoning:
            out += self._ensure(("thinking", 0), {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": ev.reasoning}))
        if ev.content:
            out += self._ensure(("text", 0), {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": ev.content}))
        for piece in ev.tool_calls:
            if self._open != ("tool_use", piece.index):
                self._called_tools = True
                block = {
                    "type": "tool_use",
                    "id": piece.id or tool_id(),
                    "name": piece.name or "",
                    "input": {},
                }
                out += self._ensure(("tool_use", piece.index), block)
            if piece.arguments:
                out.append(self._delta({"type": "input_json_delta", "partial_json": piece.arguments}))
        return out

    def finish(self, finish: str | None, usage: Usage | None) -> list[bytes]:
        out = self._close()
        delta = {"stop_reason": stop_reason(finish, self._called_tools), "stop_sequence": None}
        out.append(sse_event({"type": "message_delta", "delta": delta, "usage": usage_to_anthropic(usage)}))
        out.append(sse_event({"type": "message_stop"}))
        return out

    def error(self, err: ApiError) -> bytes:
        return sse_event(error_body(err))

    def _ensure(self, kind: tuple[str, int], block: dict[str, Any]) -> list[bytes]:
        if self._open == kind:
            return []
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(sse_event({"type": "content_block_start", "index": self._index, "content_block": block}))
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse_event({"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse_event({"type": "content_block_stop", "index": self._index})]
