"""HTTP plumbing both dialects share: reading a body, ids, and answering whole.

The OpenAI and Anthropic routes differ only in the shapes they read and write; how a
JSON body is read and validated, what a client that left gets (499), which runtime
finishes count as failures, and how a non-streamed answer is awaited and closed are
the same for both, so they live here and neither dialect imports the other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from appliance.api.errors import ApiError
from appliance.api.generation import ClientGone, Generation, unless_disconnected
from appliance.api.limits import DEFAULT_LIMITS, check_counts, parse_json
from runtimes.base import Event

# Sent instead of a response when the client has already gone (nginx's convention).
CLIENT_CLOSED = 499


class StrictModel(BaseModel):
    """A request body: strict types (no silent coercion), unknown top-level fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class OpenModel(BaseModel):
    """Nested objects whose extra keys we pass through untouched."""

    model_config = ConfigDict(strict=True, extra="allow")


B = TypeVar("B", bound=BaseModel)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def request_id(request: Request) -> str:
    """The id the request-context middleware gave this request."""
    return str(request.scope.get("state", {}).get("request_id", ""))


async def read_body(request: Request, model: type[B]) -> tuple[B, dict[str, Any]]:
    """The validated body and the raw dict it came from (400 on bad JSON or types)."""
    raw_bytes = await request.body()
    if not raw_bytes.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    limits = getattr(request.app.state, "limits", DEFAULT_LIMITS)
    try:
        raw = parse_json(raw_bytes, limits)  # depth-checked first: no RecursionError
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    check_counts(raw, limits)
    return model.model_validate(raw), raw


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


async def whole_response(
    request: Request,
    gen: Generation,
    add: Callable[[Event], object],
    answer: Callable[[], dict[str, Any]],
    headers: dict[str, str],
) -> Response:
    """A non-streamed answer: every event to `add`, then `answer()` as the JSON body (an
    `error`/`cancelled` finish raises instead). The runtime is closed whether it finishes,
    fails or the client leaves."""

    async def collect() -> dict[str, Any]:
        async for ev in gen.events():
            add(ev)
        err = finish_error(gen.finish)
        if err:
            raise err
        return answer()

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
