"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models.

Each completion: read and validate the body, resolve the model, start the runtime,
wait for its first event (so a too-long prompt or a full queue is a real 400/429,
not an error inside a 200 stream), then answer whole or as SSE.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from appliance.api.convert import chat_request, completion_request
from appliance.api.errors import ApiError, from_runtime_error, internal_error
from appliance.api.generation import ClientGone, Generation, start, unless_disconnected
from appliance.api.metrics import Metrics
from appliance.api.registry import ModelRegistry
from appliance.api.responses import ChatCollector, ChatStream, TextStream, new_id, text_response
from appliance.api.routing import ChatDispatcher, resolve_local, route_headers
from appliance.api.schemas import ChatCompletionBody, CompletionBody
from appliance.api.sse import DONE, SSEResponse, sse
from appliance.router.decide import Decision
from runtimes.base import Event, Runtime, RuntimeError_

log = logging.getLogger("appliance.api")
B = TypeVar("B", bound=BaseModel)

# Sent instead of a response when the client has already gone (nginx's convention).
CLIENT_CLOSED = 499


async def read_body(request: Request, model: type[B]) -> tuple[B, dict[str, Any]]:
    """The validated body and the raw dict it came from (400 on bad JSON or types)."""
    raw_bytes = await request.body()
    if not raw_bytes.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        raw = json.loads(raw_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return model.model_validate(raw), raw


COMPLETIONS_REASON = "completions-local"


def local_headers(runtime: Runtime) -> dict[str, str]:
    """Legacy /v1/completions is not routed: always the local model."""
    return route_headers("local", COMPLETIONS_REASON, runtime.id)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _stream_error(exc: Exception, request_id: str) -> bytes:
    if isinstance(exc, RuntimeError_):
        return sse(from_runtime_error(exc).body())
    log.error("request %s: error while streaming", request_id, exc_info=exc)
    return sse(internal_error(request_id).body())


def finish_error(finish: str | None) -> ApiError | None:
    """A runtime that ends with `error`/`cancelled` did not produce a usable answer."""
    if finish == "error":
        return ApiError(
            500, "The runtime failed while generating.", type="server_error", code="runtime_error"
        )
    if finish == "cancelled":
        return ApiError(
            503, "The generation was cancelled by the server.", type="server_error", code="cancelled"
        )
    return None


def build_router(models: ModelRegistry, metrics: Metrics, dispatcher: ChatDispatcher) -> APIRouter:
    router = APIRouter()

    def generation(
        request: Request, runtime: Runtime, route: str, started: float, events: AsyncIterator[Event]
    ) -> Generation:
        return Generation(
            events,
            model=runtime.id,
            request_id=_request_id(request),
            route=route,
            metrics=metrics,
            started=started,
        )

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body, raw = await read_body(request, ChatCompletionBody)
        req = chat_request(body, raw, body.model, _request_id(request))
        try:
            started = await dispatcher.start_chat(request, req, body.model)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        gen, model, headers = started.gen, started.model, started.headers
        completion_id = new_id("chatcmpl")
        if body.stream:
            state = ChatStream(completion_id, model, body.include_usage)
            return SSEResponse(_sse(gen, state, [state.role()]), headers=headers, on_close=gen.aclose)
        collector = ChatCollector()

        async def collect() -> dict[str, Any]:
            async for ev in gen.events():
                collector.add(ev)
            err = finish_error(gen.finish)
            if err:
                raise err
            return collector.response(completion_id, model, gen.finish, gen.usage)

        return await whole_response(request, gen, collect, headers)

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        started = time.perf_counter()
        body, _ = await read_body(request, CompletionBody)
        runtime = resolve_local(models, body.model)
        req = completion_request(body, runtime.id, _request_id(request))
        gen = generation(request, runtime, "completion", started, runtime.complete(req))
        gen.on_close = dispatcher.recorder(Decision("local", COMPLETIONS_REASON, runtime.id), body.model)
        try:
            await start(request, gen)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        completion_id = new_id("cmpl")
        headers = local_headers(runtime)
        if body.stream:
            state = TextStream(completion_id, runtime.id, body.include_usage)
            return SSEResponse(_sse(gen, state, []), headers=headers, on_close=gen.aclose)

        async def collect() -> dict[str, Any]:
            text = "".join([ev.content async for ev in gen.events()])
            err = finish_error(gen.finish)
            if err:
                raise err
            return text_response(completion_id, runtime.id, text, gen.finish, gen.usage)

        return await whole_response(request, gen, collect, headers)

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(models, rt) for rt in models.runtimes()]}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return _model_card(models, resolve_local(models, model_id))

    return router


async def whole_response(
    request: Request, gen: Generation, collect: Callable[[], Any], headers: dict[str, str]
) -> Response:
    """A non-streamed answer; the runtime is closed whether it finishes, fails or the client leaves."""
    outcome = "error"
    try:
        result = await unless_disconnected(request, collect)
        outcome = "ok"
        return JSONResponse(result, headers=headers)
    except ClientGone:
        outcome = "client_gone"
        return Response(status_code=CLIENT_CLOSED)
    finally:
        await gen.aclose(outcome)


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
                yield sse(state.finish(gen.finish))
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
