"""A fake Anthropic Messages API (a stand-in: the real provider cannot be reached from here).

Speaks `POST /v1/messages` like api.anthropic.com: `x-api-key` and `anthropic-version`
headers, Anthropic's error shape (`{"type": "error", "error": {...}}`), whole messages
or the event stream (message_start, content_block_start/delta/stop with text_delta,
thinking_delta and input_json_delta, message_delta with stop_reason and usage,
message_stop, pings). See provider_base.py for failures, drops, latency, the request log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fakes.provider_base import DropConnection, FakeProvider, Reply, pieces, words

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def input_tokens(body: dict[str, Any]) -> int:
    """A stand-in tokenizer: words of the system prompt, messages and tools."""
    text = json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
    return len(text.split())


class FakeAnthropic(FakeProvider):
    """`with FakeAnthropic(api_key="sk-ant-test") as p:` then use `p.base_url` as the SDK's base_url."""

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None, code: str | None = None
    ) -> JSONResponse:
        kind = _ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers or {})

    def _routes(self, app: FastAPI) -> None:
        @app.post("/v1/messages")
        async def messages(request: Request) -> Any:
            body = await request.json()
            self._record(request.url.path, dict(request.headers), body)
            if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
                return self._error(401, "invalid x-api-key")
            if not request.headers.get("anthropic-version"):
                return self._error(400, "anthropic-version: header is required")
            failure = self._failure_response()
            if failure is not None:
                return failure
            if not isinstance(body.get("max_tokens"), int):
                return self._error(400, "max_tokens: Field required")
            if self.models is not None and body.get("model") not in self.models:
                return self._error(404, f"model: {body.get('model')}")
            if self.n_ctx is not None and input_tokens(body) > self.n_ctx:
                return self._error(
                    400, f"prompt is too long: {input_tokens(body)} tokens > {self.n_ctx} maximum"
                )
            reply = self.reply_for(body)
            if body.get("stream"):
                stream = self._watched(self._stream(body, reply, self._take_drop()))
                return StreamingResponse(stream, media_type="text/event-stream")
            return self._whole(body, reply)

    def _blocks(self, reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.reasoning:
            blocks.append({"type": "thinking", "thinking": reply.reasoning, "signature": "sig"})
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        for i, (name, args) in enumerate(reply.tool_calls):
            blocks.append({"type": "tool_use", "id": f"toolu_{i:02d}", "name": name, "input": args})
        return blocks

    def _whole(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        blocks = self._blocks(reply)
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": _stop(reply),
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens(body), "output_tokens": _output_tokens(blocks)},
        }

    async def _stream(self, body: dict[str, Any], reply: Reply, drop: int | None) -> AsyncIterator[str]:
        message = {**self._whole(body, reply), "content": [], "stop_reason": None}
        message["usage"] = {"input_tokens": input_tokens(body), "output_tokens": 1}
        yield _event({"type": "message_start", "message": message})
        yield _event({"type": "ping"})
        sent = 0
        for index, block in enumerate(self._blocks(reply)):
            start, deltas = _split(block)
            yield _event({"type": "content_block_start", "index": index, "content_block": start})
            for delta in deltas:
                await self._pace(sent)
                if drop is not None and sent >= drop:
                    raise DropConnection("connection dropped on purpose")
                sent += 1
                yield _event({"type": "content_block_delta", "index": index, "delta": delta})
            yield _event({"type": "content_block_stop", "index": index})
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop(reply), "stop_sequence": None},
            "usage": {"output_tokens": sent},
        }
        yield _event(delta)
        yield _event({"type": "message_stop"})


def _split(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A block's start (empty) and the deltas that fill it."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": w} for w in words(block["text"])]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": w} for w in words(block["thinking"])]
        return {"type": "thinking", "thinking": "", "signature": ""}, [
            *deltas,
            {"type": "signature_delta", "signature": "sig"},
        ]
    start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    args = json.dumps(block["input"]) if block["input"] else ""
    return start, [{"type": "input_json_delta", "partial_json": p} for p in pieces(args)]


def _stop(reply: Reply) -> str:
    if reply.finish:
        return {"length": "max_tokens", "stop": "end_turn"}.get(reply.finish, reply.finish)
    return "tool_use" if reply.tool_calls else "end_turn"


def _output_tokens(blocks: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(b).split()) for b in blocks)


def _event(obj: dict[str, Any]) -> str:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n"
