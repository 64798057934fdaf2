"""A fake OpenAI-compatible cloud provider (a stand-in: real providers cannot be reached here).

Speaks `/v1/chat/completions` (streamed with `stream_options.include_usage`, or whole),
`/v1/completions` and `/v1/models` like api.openai.com: Bearer auth, OpenAI's error shape,
tool calls streamed as `index`ed pieces, usage in a final chunk with empty `choices`.
See provider_base.py for the controls (failures, drops, latency, request log).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fakes.provider_base import DropConnection, FakeProvider, Reply, pieces, words


def prompt_tokens(body: dict[str, Any]) -> int:
    """A stand-in tokenizer: words in the messages and tools, plus a fixed template overhead."""
    text = json.dumps(body.get("tools") or []) + " " + json.dumps(body.get("messages") or body.get("prompt"))
    return len(text.split()) + 8


class FakeOpenAI(FakeProvider):
    """`with FakeOpenAI(api_key="sk-test") as p:` then point a client at `p.api_base`."""

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None, code: str | None = None
    ) -> JSONResponse:
        kind = (
            "rate_limit_error"
            if status == 429
            else "server_error"
            if status >= 500
            else "invalid_request_error"
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers or {})

    def _check(self, request: Request, body: dict[str, Any]) -> JSONResponse | None:
        self._record(request.url.path, dict(request.headers), body)
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.")
        failure = self._failure_response()
        if failure is not None:
            return failure
        if self.models is not None and body.get("model") not in self.models:
            return self._error(404, f"The model `{body.get('model')}` does not exist.")
        if self.n_ctx is not None and prompt_tokens(body) > self.n_ctx:
            msg = f"This model's maximum context length is {self.n_ctx} tokens. Please reduce the length."
            return self._error(400, msg, code="context_length_exceeded")
        return None

    def _routes(self, app: FastAPI) -> None:
        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models or []]
            return {"object": "list", "data": data}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            refused = self._check(request, body)
            if refused is not None:
                return refused
            reply = self.reply_for(body)
            if body.get("stream"):
                media = "text/event-stream"
                stream = self._watched(self._chat_stream(body, reply, self._take_drop()))
                return StreamingResponse(stream, media_type=media)
            return self._chat_whole(body, reply)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            body = await request.json()
            refused = self._check(request, body)
            if refused is not None:
                return refused
            text = self.reply_for(body).text
            if body.get("stream"):
                media = "text/event-stream"
                stream = self._watched(self._text_stream(body, text, self._take_drop()))
                return StreamingResponse(stream, media_type=media)
            usage = _usage(body, len(words(text)))
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }

    # -- answers ------------------------------------------------------------------------
    def _chat_whole(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(reply.tool_calls)
            ]
        n_out = len(words(reply.text)) + sum(len(pieces(json.dumps(a))) for _, a in reply.tool_calls)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
            "usage": _usage(body, n_out, reply.cached_tokens),
        }

    def _chat_deltas(self, reply: Reply) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"reasoning_content": w} for w in words(reply.reasoning)]
        deltas += [{"content": w} for w in words(reply.text)]
        for i, (name, args) in enumerate(reply.tool_calls):
            head = {
                "index": i,
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            deltas.append({"tool_calls": [head]})
            deltas += [
                {"tool_calls": [{"index": i, "function": {"arguments": p}}]} for p in pieces(json.dumps(args))
            ]
        return deltas

    async def _chat_stream(self, body: dict[str, Any], reply: Reply, drop: int | None) -> AsyncIterator[str]:
        model = body["model"]
        yield _sse(_chunk(model, {"role": "assistant", "content": ""}))
        deltas = self._chat_deltas(reply)
        for i, delta in enumerate(deltas):
            await self._pace(i)
            if drop is not None and i >= drop:
                raise DropConnection("connection dropped on purpose")
            yield _sse(_chunk(model, delta))
        yield _sse(_chunk(model, {}, _finish(reply)))
        if (body.get("stream_options") or {}).get("include_usage"):
            yield _sse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": _usage(body, len(deltas), reply.cached_tokens),
                }
            )
        yield "data: [DONE]\n\n"

    async def _text_stream(self, body: dict[str, Any], text: str, drop: int | None) -> AsyncIterator[str]:
        model = body["model"]
        parts = words(text)
        for i, part in enumerate(parts):
            await self._pace(i)
            if drop is not None and i >= drop:
                raise DropConnection("connection dropped on purpose")
            yield _sse(
                {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "model": model,
                    "choices": [{"index": 0, "text": part, "finish_reason": None}],
                }
            )
        yield _sse(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "model": model,
                "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
            }
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            yield _sse({"id": "cmpl-fake", "choices": [], "usage": _usage(body, len(parts))})
        yield "data: [DONE]\n\n"


def _finish(reply: Reply) -> str:
    return reply.finish or ("tool_calls" if reply.tool_calls else "stop")


def _usage(body: dict[str, Any], completion: int, cached: int = 0) -> dict[str, Any]:
    prompt = prompt_tokens(body)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"
