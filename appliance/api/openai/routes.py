"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models.

Each completion: read and validate the body, resolve the model, start the runtime,
wait for its first event (so a too-long prompt or a full queue is a real 400/429,
not an error inside a 200 stream), then answer whole or as SSE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from appliance.api.errors import from_runtime_error, internal_error
from appliance.api.generation import ClientGone, Generation, start
from appliance.api.http import CLIENT_CLOSED, finish_error, new_id, read_body, request_id, whole_response
from appliance.api.metrics import Metrics
from appliance.api.openai.convert import chat_request, completion_request
from appliance.api.openai.responses import ChatCollector, ChatStream, TextStream, text_response
from appliance.api.openai.schemas import ChatCompletionBody, CompletionBody
from appliance.api.openapi import request_body
from appliance.api.registry import ModelRegistry
from appliance.api.routing import ChatDispatcher, resolve_local, route_headers
from appliance.api.sse import DONE, SSEResponse, sse
from appliance.router.decide import Decision
from runtimes.base import Event, Runtime, RuntimeError_

log = logging.getLogger("appliance.api")
COMPLETIONS_REASON = "completions-local"  # legacy /v1/completions is not routed: always local


def _stream_error(exc: Exception, rid: str) -> bytes:
    if isinstance(exc, RuntimeError_):
        return sse(from_runtime_error(exc).body())
    log.error("request %s: error while streaming", rid, exc_info=exc)
    return sse(internal_error(rid).body())


def build_openai_router(models: ModelRegistry, metrics: Metrics, dispatcher: ChatDispatcher) -> APIRouter:
    router = APIRouter()

    def generation(
        request: Request, runtime: Runtime, route: str, started: float, events: AsyncIterator[Event]
    ) -> Generation:
        return Generation(
            events,
            model=runtime.id,
            request_id=request_id(request),
            route=route,
            metrics=metrics,
            started=started,
        )

    # llama-server and many clients also accept the paths without /v1.
    @router.post("/v1/chat/completions", openapi_extra=request_body(ChatCompletionBody))
    @router.post("/chat/completions", openapi_extra=request_body(ChatCompletionBody))
    async def chat_completions(request: Request) -> Response:
        body, raw = await read_body(request, ChatCompletionBody)
        req = chat_request(body, raw, body.model or "", request_id(request))
        try:
            started = await dispatcher.start_chat(request, req, body.model, raw.get("keep_alive"))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        gen, model, headers = started.gen, started.model, started.headers
        completion_id = new_id("chatcmpl")
        logprobs = req.sampling.logprobs is not None
        if body.stream:
            state = ChatStream(
                completion_id, model, body.include_usage, started.fingerprint, n=req.n, logprobs=logprobs
            )
            return SSEResponse(_sse(gen, state, state.preamble()), headers=headers, on_close=gen.aclose)
        collector = ChatCollector(n=req.n, logprobs=logprobs)

        def answer() -> dict[str, Any]:
            return collector.response(completion_id, model, gen.finish, gen.usage, started.fingerprint)

        return await whole_response(request, gen, collector.add, answer, headers)

    @router.post("/v1/completions", openapi_extra=request_body(CompletionBody))
    @router.post("/completions", openapi_extra=request_body(CompletionBody))
    async def completions(request: Request) -> Response:
        started = time.perf_counter()
        body, _ = await read_body(request, CompletionBody)
        target, note = dispatcher.target(body.model)
        runtime = resolve_local(models, target)
        reason = f"{COMPLETIONS_REASON},{note}" if note else COMPLETIONS_REASON
        req = completion_request(body, runtime.id, request_id(request))
        gen = generation(request, runtime, "completion", started, runtime.complete(req))
        gen.on_close = dispatcher.recorder(Decision("local", reason, runtime.id), body.model or "")
        try:
            await start(request, gen)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        completion_id = new_id("cmpl")
        headers = route_headers("local", reason, runtime.id)
        if body.stream:
            state = TextStream(completion_id, runtime.id, body.include_usage)
            return SSEResponse(_sse(gen, state, []), headers=headers, on_close=gen.aclose)

        pieces: list[str] = []

        def answer() -> dict[str, Any]:
            return text_response(completion_id, runtime.id, "".join(pieces), gen.finish, gen.usage)

        return await whole_response(request, gen, lambda ev: pieces.append(ev.content), answer, headers)

    @router.get("/v1/models")
    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(models, rt) for rt in models.runtimes()]}

    @router.get("/v1/models/{model_id:path}")
    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return _model_card(models, resolve_local(models, model_id))

    return router


async def _sse(
    gen: Generation, state: ChatStream | TextStream, preamble: list[dict[str, Any]]
) -> AsyncIterator[bytes]:
    """Chunks, then finish and usage, then [DONE]; an error mid-stream becomes an error event."""
    outcome = "client_gone"
    try:
        for chunk in preamble:
            yield sse(chunk)
        try:
            async for ev in gen.events():
                delta = state.delta(ev)
                if delta is not None:
                    yield sse(delta)
            err = finish_error(gen.finish)
            if err is not None:
                outcome = "error"
                yield sse(err.body())
            else:
                for chunk in state.finish(gen.finish):
                    yield sse(chunk)
                if state.include_usage:
                    yield sse(state.usage(gen.usage))
                outcome = "ok"
        except Exception as exc:
            outcome = "error"
            yield _stream_error(exc, gen.request_id)
        yield DONE
    finally:
        await gen.aclose(outcome)


def _model_card(models: ModelRegistry, rt: Runtime) -> dict[str, Any]:
    return {
        "id": rt.id,
        "object": "model",
        "created": 0,
        "owned_by": "appliance",
        "context_length": rt.n_ctx,
        "roles": models.roles_of(rt.id),
        "aliases": models.aliases_of(rt.id),
    }
