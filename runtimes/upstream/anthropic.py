"""`AnthropicUpstream`: a Runtime that forwards chats to Anthropic's Messages API.

Outbound the ChatRequest's OpenAI-shaped messages and tools are translated by
anthropic_format (the same module our inbound /v1/messages uses); inbound the
Messages stream (message_start, content_block_start/delta/stop, message_delta,
message_stop) becomes our Events: text, thinking as reasoning, tool_use blocks as
tool-call pieces (`input_json_delta` carries the arguments' JSON text), and the
stop reason and usage at the end. Like the OpenAI client, it yields nothing before
the provider produced output, and a cut stream is an error, never a short answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from runtimes.base import (
    ChatRequest,
    CompletionRequest,
    Event,
    FinishReason,
    InvalidRequest,
    Sampling,
    ToolCallDelta,
    UpstreamError,
    Usage,
)
from runtimes.upstream.anthropic_format import (
    FROM_STOP_REASON,
    to_anthropic,
    to_anthropic_tool_choice,
    to_anthropic_tools,
    usage_from_anthropic,
)
from runtimes.upstream.http import SseUpstream, Timeouts

API_VERSION = "2023-06-01"
_DEFAULTS = Sampling()
# Error types Anthropic sends inside a stream that are worth another try.
_RETRYABLE_STREAM_ERRORS = ("overloaded_error", "api_error", "rate_limit_error")


class AnthropicUpstream(SseUpstream):
    """A Runtime over `{base_url}/v1/messages`.

    base_url: without `/v1` (as the anthropic SDK takes it).
    default_max_tokens: sent when the client set none (the Messages API requires it).
    cache_prompts: mark prompt-cache breakpoints (see `mark_cache_breakpoints`).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        id: str | None = None,
        api_key: SecretStr | str | None = None,
        provider: str = "anthropic",
        n_ctx: int = 0,
        timeouts: Timeouts | None = None,
        default_max_tokens: int = 4096,
        cache_prompts: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(
            base_url.rstrip("/").removesuffix("/v1"),
            model,
            id=id,
            api_key=api_key,
            provider=provider,
            n_ctx=n_ctx,
            timeouts=timeouts,
            headers=headers,
            transport=transport,
        )
        self.default_max_tokens = default_max_tokens
        self.cache_prompts = cache_prompts

    # -- Runtime ------------------------------------------------------------------------
    def chat(self, req: ChatRequest) -> AsyncIterator[Event]:
        reader = MessageStreamReader(self.provider)
        return self._stream(self.base_url + "/v1/messages", self.messages_body(req), self._headers(), reader)

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Event]:
        raise InvalidRequest("The Anthropic Messages API has no text completions; use chat.")
        yield Event()  # pragma: no cover  (makes this an async generator)

    # -- request ------------------------------------------------------------------------
    def messages_body(self, req: ChatRequest) -> dict[str, Any]:
        s = req.sampling
        if s.grammar or s.logprobs is not None:  # Anthropic's API has neither
            what = "a GBNF 'grammar'" if s.grammar else "logprobs"
            raise InvalidRequest(f"{self.provider} (Anthropic's API) does not take {what}.")
        system, messages = to_anthropic(req.messages)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": s.max_tokens or self.default_max_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = system
        if req.tools:
            body["tools"] = to_anthropic_tools(req.tools)
            choice = to_anthropic_tool_choice(req.tool_choice)
            if choice is not None:
                body["tool_choice"] = choice
        body.update(_sampling(s))
        if s.json_schema is not None:  # structured output; {} means any JSON object
            body["output_config"] = {
                "format": {"type": "json_schema", "schema": s.json_schema or {"type": "object"}}
            }
        if self.cache_prompts:
            mark_cache_breakpoints(body)
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "anthropic-version": API_VERSION, **self._extra_headers}
        if self._key is not None:
            headers["x-api-key"] = self._key.get_secret_value()
        return headers


_EPHEMERAL = {"type": "ephemeral"}


def mark_cache_breakpoints(body: dict[str, Any]) -> None:
    """Ask Anthropic to cache the prompt: breakpoints after the system prompt, the tools and the
    latest message. An agent resends its whole history each turn; without breakpoints every
    turn pays full input price (cache reads cost a tenth). Three of the four allowed."""
    if isinstance(body.get("system"), str):
        body["system"] = [{"type": "text", "text": body["system"], "cache_control": _EPHEMERAL}]
    if body.get("tools"):
        body["tools"][-1] = {**body["tools"][-1], "cache_control": _EPHEMERAL}
    if body["messages"]:
        last = body["messages"][-1]
        content = last["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if blocks:
            blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
            body["messages"][-1] = {**last, "content": blocks}


def _sampling(s: Sampling) -> dict[str, Any]:
    """Only what the client set; Anthropic's temperature tops out at 1."""
    out: dict[str, Any] = {}
    if s.temperature != _DEFAULTS.temperature:
        out["temperature"] = min(1.0, s.temperature)
    if s.top_p != _DEFAULTS.top_p:
        out["top_p"] = s.top_p
    if s.top_k != _DEFAULTS.top_k and s.top_k > 0:
        out["top_k"] = s.top_k
    if s.stop:
        out["stop_sequences"] = list(s.stop)
    return out


@dataclass
class MessageStreamReader:
    """Messages API stream events -> our Events; tool_use blocks are numbered as tool calls."""

    provider: str
    usage: Usage = field(default_factory=Usage)
    finish: FinishReason | None = None
    done: bool = False  # message_stop seen
    _tools: dict[int, int] = field(default_factory=dict)  # content block index -> tool call index
    _with_args: set[int] = field(default_factory=set)  # tool calls that received argument text

    def feed(self, ev: dict[str, Any]) -> Event | None:
        kind = ev.get("type")
        if kind == "message_start":
            usage_from_anthropic((ev.get("message") or {}).get("usage") or {}, self.usage)
        elif kind == "content_block_start":
            return self._block_start(ev.get("index", 0), ev.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(ev.get("index", 0), ev.get("delta") or {})
        elif kind == "content_block_stop":
            return self._block_stop(ev.get("index", 0))
        elif kind == "message_delta":
            reason = (ev.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish = FROM_STOP_REASON.get(reason, "stop")
            usage_from_anthropic(ev.get("usage") or {}, self.usage)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = ev.get("error") or {}
            retryable = err.get("type") in _RETRYABLE_STREAM_ERRORS
            message = f"{self.provider} failed mid-stream: {err.get('type')}: {err.get('message', '')}"
            raise UpstreamError(message, retryable=retryable)
        return None

    def _block_start(self, index: int, block: dict[str, Any]) -> Event | None:
        kind = block.get("type")
        if kind == "tool_use":
            call = self._tools.setdefault(index, len(self._tools))
            return Event(tool_calls=[ToolCallDelta(index=call, id=block.get("id"), name=block.get("name"))])
        if kind == "text" and block.get("text"):
            return Event(content=block["text"])
        if kind == "thinking" and block.get("thinking"):
            return Event(reasoning=block["thinking"])
        return None

    def _delta(self, index: int, delta: dict[str, Any]) -> Event | None:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return Event(content=delta["text"])
        if kind == "thinking_delta" and delta.get("thinking"):
            return Event(reasoning=delta["thinking"])
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tools:
            self._with_args.add(index)
            piece = ToolCallDelta(index=self._tools[index], arguments=delta["partial_json"])
            return Event(tool_calls=[piece])
        return None

    def _block_stop(self, index: int) -> Event | None:
        """A tool called without arguments still gets `{}`: OpenAI clients parse JSON there."""
        if index in self._tools and index not in self._with_args:
            return Event(tool_calls=[ToolCallDelta(index=self._tools[index], arguments="{}")])
        return None

    def final(self) -> Event:
        if not self.done and self.finish is None:
            raise UpstreamError(f"{self.provider} closed the stream before finishing", retryable=True)
        return Event(finish_reason=self.finish or "stop", usage=self.usage)
