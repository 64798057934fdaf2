"""Runtime `Event`s -> OpenAI response objects and stream chunks, in OpenAI's exact shape.

SDKs (openai-python, Vercel's AI SDK inside OpenCode) reassemble tool calls from
chunk deltas by `index`, expect `id`/`type`/`function.name` on the first piece of
each call, and read usage from a final chunk with empty `choices`; this module
keeps those rules in one place for streamed and whole responses alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from appliance.api.http import new_id
from runtimes.base import Event, TokenLogprob, ToolCallDelta, TopLogprob, Usage


def usage_dict(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


@dataclass
class _Call:
    id: str
    name: str = ""
    arguments: str = ""


@dataclass
class ToolCalls:
    """Tool-call pieces by index; gives each call an id if the runtime did not."""

    calls: dict[int, _Call] = field(default_factory=dict)

    def add(self, piece: ToolCallDelta) -> dict[str, Any]:
        """Record a piece; return its OpenAI delta (with id/type/name if it opens a call)."""
        call = self.calls.get(piece.index)
        delta: dict[str, Any] = {"index": piece.index}
        if call is None:
            call = self.calls[piece.index] = _Call(id=piece.id or new_id("call").replace("-", "_"))
            delta["id"] = call.id
            delta["type"] = "function"
            fn: dict[str, Any] = {"name": piece.name or "", "arguments": piece.arguments}
            call.name = piece.name or ""
        else:
            fn = {"arguments": piece.arguments}
            if piece.name:  # a runtime sending the name late: pass it on, never drop it
                call.name += piece.name
                fn["name"] = piece.name
        call.arguments += piece.arguments
        delta["function"] = fn
        return delta

    def message_list(self) -> list[dict[str, Any]]:
        return [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for _, c in sorted(self.calls.items())
        ]


def finish_reason(raw: str | None, tool_calls: ToolCalls) -> str:
    """`tool_calls` whenever the answer called a tool, so agents run it."""
    reason = raw or "stop"
    if tool_calls.calls and reason == "stop":
        return "tool_calls"
    return reason


def _candidate(t: TopLogprob) -> dict[str, Any]:
    return {"token": t.token, "logprob": t.logprob, "bytes": t.bytes}


def logprobs_dict(tokens: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's `choices[].logprobs`: one entry per token, each with its alternatives."""
    content = [{**_candidate(t), "top_logprobs": [_candidate(a) for a in t.top_logprobs]} for t in tokens]
    return {"content": content, "refusal": None}


def ends_choice(ev: Event) -> bool:
    """One of several answers (n > 1) finished; the stream's own end carries the usage."""
    return ev.finish_reason is not None and ev.usage is None


@dataclass
class ChatStream:
    """Builds `chat.completion.chunk` objects for one streamed answer (or `n` of them, by index)."""

    id: str
    model: str
    include_usage: bool
    fingerprint: str | None = None
    n: int = 1
    logprobs: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    tools: dict[int, ToolCalls] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)

    def _chunk(
        self, delta: dict[str, Any] | None, finish: str | None = None, index: int = 0, logprobs: Any = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": []
            if delta is None
            else [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def _tools(self, index: int) -> ToolCalls:
        return self.tools.setdefault(index, ToolCalls())

    def preamble(self) -> list[dict[str, Any]]:
        """The role chunk of each answer, before any text."""
        return [self._chunk({"role": "assistant", "content": ""}, index=i) for i in range(self.n)]

    def delta(self, ev: Event) -> dict[str, Any] | None:
        """The chunk for an event's new text / reasoning / tool-call pieces / logprobs, if any."""
        i = ev.choice
        if ends_choice(ev):
            self.finished.add(i)
            return self._chunk({}, finish_reason(ev.finish_reason, self._tools(i)), i, self._logprobs(ev))
        delta: dict[str, Any] = {}
        if ev.reasoning:
            delta["reasoning_content"] = ev.reasoning
        if ev.content:
            delta["content"] = ev.content
        if ev.tool_calls:
            delta["tool_calls"] = [self._tools(i).add(p) for p in ev.tool_calls]
        if not delta and not (self.logprobs and ev.logprobs):
            return None
        return self._chunk(delta, index=i, logprobs=self._logprobs(ev))

    def _logprobs(self, ev: Event) -> dict[str, Any] | None:
        return logprobs_dict(ev.logprobs) if self.logprobs and ev.logprobs else None

    def finish(self, raw: str | None) -> list[dict[str, Any]]:
        """The finish chunk of every answer that has not had its own yet."""
        open_ = [i for i in range(self.n) if i not in self.finished]
        return [self._chunk({}, finish_reason(raw, self._tools(i)), i) for i in open_]

    def usage(self, usage: Usage | None) -> dict[str, Any]:
        out = self._chunk(None)
        out["usage"] = usage_dict(usage)
        return out


@dataclass
class _Answer:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tools: ToolCalls = field(default_factory=ToolCalls)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None


@dataclass
class ChatCollector:
    """Accumulates a whole answer (or `n` of them) for a non-streamed `chat.completion`."""

    n: int = 1
    logprobs: bool = False
    answers: dict[int, _Answer] = field(default_factory=dict)

    def add(self, ev: Event) -> None:
        a = self.answers.setdefault(ev.choice, _Answer())
        if ev.content:
            a.content.append(ev.content)
        if ev.reasoning:
            a.reasoning.append(ev.reasoning)
        for piece in ev.tool_calls:
            a.tools.add(piece)
        a.logprobs.extend(ev.logprobs)
        if ends_choice(ev):
            a.finish = ev.finish_reason

    def response(
        self, id: str, model: str, finish: str | None, usage: Usage | None, fingerprint: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [self._choice(i, self.answers.get(i, _Answer()), finish) for i in range(self.n)],
            "usage": usage_dict(usage),
        }

    def _choice(self, index: int, a: _Answer, finish: str | None) -> dict[str, Any]:
        text = "".join(a.content)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if a.tools.calls:
            message["tool_calls"] = a.tools.message_list()
            if not text:
                message["content"] = None
        if a.reasoning:
            message["reasoning_content"] = "".join(a.reasoning)
        return {
            "index": index,
            "message": message,
            "logprobs": logprobs_dict(a.logprobs) if self.logprobs else None,
            "finish_reason": finish_reason(a.finish or finish, a.tools),
        }


@dataclass
class TextStream:
    """Builds `text_completion` chunks for a streamed /v1/completions answer."""

    id: str
    model: str
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def _chunk(self, text: str | None, finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": []
            if text is None
            else [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def delta(self, ev: Event) -> dict[str, Any] | None:
        return self._chunk(ev.content) if ev.content else None

    def finish(self, raw: str | None) -> list[dict[str, Any]]:
        return [self._chunk("", raw or "stop")]

    def usage(self, usage: Usage | None) -> dict[str, Any]:
        out = self._chunk(None)
        out["usage"] = usage_dict(usage)
        return out


def text_response(id: str, model: str, text: str, finish: str | None, usage: Usage | None) -> dict[str, Any]:
    return {
        "id": id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish or "stop"}],
        "usage": usage_dict(usage),
    }
