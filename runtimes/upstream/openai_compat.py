"""`OpenAICompatUpstream`: a Runtime that forwards to any OpenAI-compatible server.

The same client serves a cloud provider (api.openai.com, OpenRouter, Together, ...)
and a vLLM child on loopback. It always streams from the upstream (a whole answer
is just the collected stream, so there is one path), asks for usage in the stream,
and turns the upstream's chunks into our `Event`s and its failures into our errors.
It yields nothing until the upstream has produced real output, so a caller (the
cloud pool) knows that an error before the first event left the client untouched.
"""

from __future__ import annotations

import json
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
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    UpstreamError,
    Usage,
)
from runtimes.upstream.http import SseUpstream, Timeouts

_DEFAULTS = Sampling()
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",
    "eos": "stop",
}
# Message keys an OpenAI-compatible server accepts; `reasoning_content` only where asked.
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


class OpenAICompatUpstream(SseUpstream):
    """A Runtime over `{base_url}/chat/completions` and `{base_url}/completions`.

    base_url: up to and including `/v1` (as the openai SDK takes it).
    model: the model name sent upstream; id: the name we serve it under (default: model).
    api_key: sent as `Authorization: Bearer`; kept as a SecretStr, never shown.
    vendor_params: also send llama.cpp/vLLM extras (top_k, min_p, repetition_penalty,
      logit_bias, ignore_eos, chat_template_kwargs, reasoning_content in history); cloud APIs
      reject them.
    max_tokens_param: `max_tokens`, or `max_completion_tokens` for OpenAI's reasoning models.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        id: str | None = None,
        api_key: SecretStr | str | None = None,
        provider: str = "upstream",
        n_ctx: int = 0,
        timeouts: Timeouts | None = None,
        vendor_params: bool = False,
        max_tokens_param: str = "max_tokens",
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(
            base_url.rstrip("/"),
            model,
            id=id,
            api_key=api_key,
            provider=provider,
            n_ctx=n_ctx,
            timeouts=timeouts,
            headers=headers,
            transport=transport,
        )
        self.vendor_params = vendor_params
        self.max_tokens_param = max_tokens_param

    # -- Runtime ------------------------------------------------------------------------
    def chat(self, req: ChatRequest) -> AsyncIterator[Event]:
        return self._run("/chat/completions", self.chat_body(req), chat=True)

    def complete(self, req: CompletionRequest) -> AsyncIterator[Event]:
        return self._run("/completions", self.completion_body(req), chat=False)

    # -- request bodies -----------------------------------------------------------------
    def chat_body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [self._message(m) for m in req.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if req.tools:
            body["tools"] = req.tools
        if req.tool_choice is not None:
            body["tool_choice"] = req.tool_choice
        body.update(self._sampling(req.sampling))
        if self.vendor_params and req.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": req.enable_thinking}
        return body

    def completion_body(self, req: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": req.prompt,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if req.echo:
            body["echo"] = True
        body.update(self._sampling(req.sampling))
        return body

    def _message(self, msg: dict[str, Any]) -> dict[str, Any]:
        keys = (*_MESSAGE_KEYS, "reasoning_content") if self.vendor_params else _MESSAGE_KEYS
        out = {k: msg[k] for k in keys if k in msg}
        if out.get("tool_calls"):
            out["tool_calls"] = [_string_arguments(c) for c in out["tool_calls"]]
        return out

    def _sampling(self, s: Sampling) -> dict[str, Any]:
        """What the client asked for. Values equal to our engine's defaults are left out so the
        upstream applies its own (a cloud model's defaults are not a 0.5B model's)."""
        out: dict[str, Any] = {}
        if s.max_tokens is not None:
            out[self.max_tokens_param] = s.max_tokens
        for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
            if getattr(s, name) != getattr(_DEFAULTS, name):
                out[name] = getattr(s, name)
        if s.seed is not None:
            out["seed"] = s.seed
        if s.stop:
            out["stop"] = list(s.stop)
        if s.json_schema is not None:
            out["response_format"] = response_format(s.json_schema)
        if s.grammar:  # vLLM's and clouds' grammar parameters differ (and vary by version)
            raise InvalidRequest(f"{self.provider} does not take a GBNF 'grammar'; use json_schema instead.")
        if s.logprobs is not None:
            out["logprobs"] = True
            if s.logprobs:
                out["top_logprobs"] = s.logprobs
        if self.vendor_params:
            if s.top_k != _DEFAULTS.top_k:
                out["top_k"] = s.top_k
            if s.min_p != _DEFAULTS.min_p:
                out["min_p"] = s.min_p
            if s.repeat_penalty != _DEFAULTS.repeat_penalty:
                out["repetition_penalty"] = s.repeat_penalty
            if s.logit_bias:
                out["logit_bias"] = {str(k): v for k, v in s.logit_bias.items()}
            if s.ignore_eos:
                out["ignore_eos"] = True
        return out

    # -- the stream ---------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", **self._extra_headers}
        if self._key is not None:
            headers["authorization"] = f"Bearer {self._key.get_secret_value()}"
        return headers

    def _run(self, path: str, body: dict[str, Any], *, chat: bool) -> AsyncIterator[Event]:
        reader = ChunkReader(chat=chat, provider=self.provider)
        return self._stream(self.base_url + path, body, self._headers(), reader)


@dataclass
class ChunkReader:
    """Turns OpenAI stream chunks into Events; keeps the finish reason and usage for the end."""

    chat: bool
    provider: str
    finish: FinishReason | None = None
    usage: Usage | None = None
    done: bool = False
    _tool_slots: dict[int, int] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any]) -> Event | None:
        if chunk.get("error"):
            raise UpstreamError(f"{self.provider} failed mid-stream: {_error_text(chunk['error'])}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_from_openai(chunk["usage"])
        choices = chunk.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = _FINISH.get(choice["finish_reason"], "stop")
        if not self.chat:
            text = choice.get("text") or ""
            return Event(content=text) if text else None
        delta = choice.get("delta") or {}
        content = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        calls = [self._tool_piece(i, c) for i, c in enumerate(delta.get("tool_calls") or [])]
        logprobs = logprobs_from_openai(choice.get("logprobs"))
        if content or reasoning or calls or logprobs:
            return Event(content=content, reasoning=reasoning, tool_calls=calls, logprobs=logprobs)
        return None

    def _tool_piece(self, position: int, call: dict[str, Any]) -> ToolCallDelta:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, dict):  # a few servers send the object, not its JSON text
            args = json.dumps(args)
        index = call.get("index")
        if not isinstance(index, int):  # servers that send whole calls without an index
            index = self._tool_slots.setdefault(position, len(self._tool_slots))
        return ToolCallDelta(index=index, id=call.get("id"), name=fn.get("name"), arguments=args or "")

    def final(self) -> Event:
        """The closing event; a stream cut before its end is an error, never a short answer."""
        if not self.done and self.finish is None:
            raise UpstreamError(f"{self.provider} closed the stream before finishing", retryable=True)
        return Event(finish_reason=self.finish or "stop", usage=self.usage or Usage())


def usage_from_openai(raw: dict[str, Any]) -> Usage:
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def logprobs_from_openai(raw: Any) -> list[TokenLogprob]:
    """A chunk's `choices[0].logprobs.content`, passed on as the upstream computed it."""
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), list):
        return []

    def one(d: dict[str, Any]) -> TopLogprob:
        return TopLogprob(str(d.get("token", "")), float(d.get("logprob", 0.0)), list(d.get("bytes") or []))

    out = []
    for d in raw["content"]:
        if isinstance(d, dict):
            head = one(d)
            tops = [one(t) for t in d.get("top_logprobs") or [] if isinstance(t, dict)]
            out.append(TokenLogprob(head.token, head.logprob, head.bytes, tops))
    return out


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """Our json_schema (`{}`: any JSON object) as OpenAI's `response_format`."""
    if not schema:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def _string_arguments(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    if isinstance(fn.get("arguments"), dict):
        return {**call, "function": {**fn, "arguments": json.dumps(fn["arguments"])}}
    return call


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or "error")
    return str(err)
