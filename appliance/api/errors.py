"""One error shape everywhere: OpenAI's `{"error": {message, type, param, code}}`.

Agents and SDKs branch on status and `code` (retry on 429, shorten on
`context_length_exceeded`), so every failure path, from a bad byte of JSON to an
exception deep in a runtime, ends in this shape and never in a traceback.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtimes.base import Overloaded, RuntimeError_

log = logging.getLogger("appliance.api")


class ApiError(Exception):
    """An error the API answers with directly (status, OpenAI fields, extra headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_runtime_error(exc: RuntimeError_) -> ApiError:
    """Map a runtime's error by its own status/code/type; Overloaded gets Retry-After."""
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return ApiError(exc.status, str(exc), type=exc.type, code=exc.code, headers=headers)


def internal_error(request_id: str = "") -> ApiError:
    """The generic 500: the traceback stays in the server log, keyed by request id."""
    suffix = f" (request id {request_id})" if request_id else ""
    return ApiError(
        500, f"The server had an internal error{suffix}.", type="server_error", code="internal_error"
    )


# -- request validation --------------------------------------------------------------------
_TYPE_TAG = re.compile(r"[\[\](),\-]|^(str|int|float|bool|list|dict|none|literal)$|^[A-Z]")


def param_path(loc: tuple[Any, ...]) -> str:
    """`('messages', 0, 'content', 'str')` -> `messages[0].content` (union tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not _TYPE_TAG.search(part):
            out += f".{part}" if out else part
    return out or "body"


_TYPE_ERRORS = ("_type", "_parsing")  # int_type, string_type, bool_parsing, model_type, ...


def from_validation_error(exc: ValidationError | RequestValidationError) -> ApiError:
    """The first problem, naming its field the way OpenAI does (`param`, message, code)."""
    errors = list(exc.errors())
    if not errors:
        return ApiError(400, "Invalid request body.", code="invalid_value")
    missing = [e for e in errors if e.get("type") == "missing"]
    err = missing[0] if missing else errors[0]
    loc = tuple(err.get("loc", ()))
    if loc and loc[0] == "body" and isinstance(exc, RequestValidationError):
        loc = loc[1:]
    param = param_path(loc)
    kind = str(err.get("type", ""))
    if kind == "missing":
        return ApiError(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    detail = str(err.get("msg", "invalid value"))
    code = "invalid_type" if any(t in kind for t in _TYPE_ERRORS) else "invalid_value"
    more = f" ({len(errors) - 1} more problem(s) in the request)" if len(errors) > 1 else ""
    return ApiError(400, f"Invalid value for '{param}': {detail}.{more}", param=param, code=code)


# -- handlers ------------------------------------------------------------------------------
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _runtime_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RuntimeError_)
    err = from_runtime_error(exc)
    if err.status >= 500:
        log.error("request %s: runtime error %s", _rid(request), err.code)
    return err.response()


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError | RequestValidationError)
    return from_validation_error(exc).response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"Unknown route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    code = _STATUS_CODES.get(exc.status_code)
    err = ApiError(exc.status_code, message, type=kind, code=code, headers=dict(exc.headers or {}))
    return err.response()


def _rid(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def install_error_handlers(app: FastAPI) -> None:
    """Replace FastAPI's defaults (422, `{"detail": ...}`) with the one shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RuntimeError_, _runtime_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
