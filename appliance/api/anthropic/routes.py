"""Anthropic-compatible routes: POST /v1/messages and /v1/messages/count_tokens.

Claude Code (and any anthropic SDK client) speaks this dialect. A request is
validated, translated into the same ChatRequest the OpenAI route builds (the
translation is the one the Anthropic upstream uses, in reverse), and routed and
started by the same dispatcher, so local/cloud choice, headers, metrics and the
usage log are identical. Only the answer's shape differs: Messages objects or the
Messages event stream, and errors as `{"type": "error", "error": {type, message}}`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from appliance.api.anthropic.responses import MessageCollector, MessageStream, error_body
from appliance.api.anthropic.schemas import CountTokensBody, MessagesBody
from appliance.api.errors import ApiError, from_runtime_error, from_validation_error, internal_error
from appliance.api.generation import ClientGone, Generation
from appliance.api.http import CLIENT_CLOSED, finish_error, new_id, read_body, request_id, whole_response
from appliance.api.openapi import request_body
from appliance.api.registry import MAIN_ROLE
from appliance.api.routing import ChatDispatcher, resolve_local
from appliance.api.sse import SSEResponse
from appliance.router.capacity import prompt_tokens
from runtimes.base import ChatRequest, RuntimeError_, Sampling, Usage
from runtimes.upstream.anthropic_format import (
    from_anthropic,
    from_anthropic_tool_choice,
    from_anthropic_tools,
)

log = logging.getLogger("appliance.api")


def chat_request(body: CountTokensBody, raw: dict[str, Any], rid: str) -> ChatRequest:
    """The dialect-neutral request; raises InvalidRequest (400) for what we cannot serve."""
    sampling = Sampling()
    if isinstance(body, MessagesBody):
        sampling.max_tokens = body.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(body, name) is not None:
                setattr(sampling, name, getattr(body, name))
        sampling.stop = list(body.stop_sequences or [])
    if body.output_config and body.output_config.format:
        sampling.json_schema = body.output_config.format.schema_
    thinking = body.thinking.type if body.thinking else None
    return ChatRequest(
        model=body.model or "",
        messages=from_anthropic(raw.get("system"), raw["messages"]),
        sampling=sampling,
        tools=from_anthropic_tools(raw["tools"]) if raw.get("tools") else None,
        tool_choice=from_anthropic_tool_choice(raw.get("tool_choice")),
        enable_thinking=None if thinking is None else thinking != "disabled",
        request_id=rid,
    )


def as_api_error(exc: Exception, rid: str) -> ApiError:
    """Any failure before or around an answer, as the ApiError it answers with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RuntimeError_):
        err = from_runtime_error(exc)
        err.param = getattr(exc, "param", None)
        return err
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    log.error("request %s: error in /v1/messages", rid, exc_info=exc)
    return internal_error(rid)


def error_response(exc: Exception, rid: str) -> JSONResponse:
    err = as_api_error(exc, rid)
    return JSONResponse(error_body(err), status_code=err.status, headers=err.headers)


def build_anthropic_router(dispatcher: ChatDispatcher) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/messages", openapi_extra=request_body(MessagesBody))
    async def messages(request: Request) -> Response:
        rid = request_id(request)
        try:
            body, raw = await read_body(request, MessagesBody)
            req = chat_request(body, raw, rid)
            started = await dispatcher.start_chat(request, req, body.model, raw.get("keep_alive"))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        except Exception as exc:
            return error_response(exc, rid)
        gen, model, headers = started.gen, started.model, started.headers
        message_id = new_id("msg").replace("-", "_")
        if body.stream:
            stream = MessageStream(message_id, model)
            prompt = gen.prompt_usage or _estimated_prompt(dispatcher, req)
            return SSEResponse(_events(gen, stream, prompt), headers=headers, on_close=gen.aclose)
        collector = MessageCollector()

        def answer() -> dict[str, Any]:
            return collector.message(message_id, model, gen.finish, gen.usage)

        try:
            return await whole_response(request, gen, collector.add, answer, headers)
        except Exception as exc:
            return error_response(exc, rid)

    @router.post("/v1/messages/count_tokens", openapi_extra=request_body(CountTokensBody))
    async def count_tokens(request: Request) -> Response:
        """Exact with the local model's tokenizer (its chat template included); cloud models
        are counted against the main local model, since we hold no cloud tokenizer."""
        rid = request_id(request)
        try:
            body, raw = await read_body(request, CountTokensBody)
            req = chat_request(body, raw, rid)
            try:
                runtime = resolve_local(dispatcher.models, dispatcher.target(body.model)[0])
            except ApiError:
                runtime = resolve_local(dispatcher.models, MAIN_ROLE)
            return JSONResponse({"input_tokens": prompt_tokens(runtime, req)})
        except Exception as exc:
            return error_response(exc, rid)

    return router


def _estimated_prompt(dispatcher: ChatDispatcher, req: ChatRequest) -> Usage | None:
    """The prompt's size where the runtime did not report it (a cloud or vLLM answer): counted
    with the main local model's tokenizer, as count_tokens does."""
    try:
        return Usage(prompt_tokens=prompt_tokens(dispatcher.models.resolve(MAIN_ROLE), req))
    except Exception:  # no local model to count with: Anthropic's shape still needs a number
        log.debug("request %s: could not count the prompt", req.request_id, exc_info=True)
        return None


async def _events(gen: Generation, stream: MessageStream, prompt: Usage | None) -> AsyncIterator[bytes]:
    """message_start, the blocks, message_delta + message_stop; a failure becomes an `error` event."""
    outcome = "client_gone"
    try:
        yield stream.start(prompt)
        try:
            async for ev in gen.events():
                for frame in stream.delta(ev):
                    yield frame
            err = finish_error(gen.finish)
            if err is not None:
                outcome = "error"
                yield stream.error(err)
            else:
                for frame in stream.finish(gen.finish, gen.usage):
                    yield frame
                outcome = "ok"
        except Exception as exc:
            outcome = "error"
            yield stream.error(as_api_error(exc, gen.request_id))
    finally:
        await gen.aclose(outcome)
