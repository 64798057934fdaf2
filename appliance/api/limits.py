"""Input bounds: how big, how deep and how many, checked before the work they would cost.

A request body is read into memory, parsed by a recursive parser, validated, rendered
through a chat template and tokenized; each step's cost grows with what the client sent.
These limits stop an oversized or pathological request at the cheapest point: the body
size while it streams in (the middleware), the nesting depth with a linear scan before
`json.loads` recurses, the counts and schema sizes on the parsed dict before validation.

Defaults: 32 MiB per body, Anthropic's own Messages API limit, so anything a real agent
sends to the cloud (images included) passes, while one request can never hold more than
that in memory; 64 levels of nesting, well above real tool schemas (about 20 levels with the
request's own wrapping); 4096 messages and 512 tools; 256 KiB per JSON schema (tool
parameters, response formats), which bounds the grammar built from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.api.errors import ApiError

MIB = 1024 * 1024
DEFAULT_MAX_BODY_MB = 32


@dataclass(frozen=True)
class Limits:
    """Per-request bounds; `create_app` takes one (ServeConfig's `max_body_mb` sets the size)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_MB * MIB
    max_depth: int = 64
    max_messages: int = 4096
    max_tools: int = 512
    max_schema_bytes: int = 256 * 1024


DEFAULT_LIMITS = Limits()


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes "
        f"({limit / MIB:.0f} MiB); see `appliance serve --max-body-mb`.",
        code="request_too_large",
    )


# A JSON string literal: quote, then any run of non-quote non-backslash bytes or escapes.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_CHUNK = 1 << 20


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings not counted.

    Linear and iteration-free in Python: strings are cut out with one regex, everything but
    brackets is deleted, and the depth is the maximum of a cumulative sum (numpy). Bodies
    with few brackets (the usual case) return after two `count`s.
    """
    opens = data.count(b"[") + data.count(b"{")
    if opens <= 1:
        return opens
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    if not brackets:
        return 0
    depth = peak = 0
    for start in range(0, len(brackets), _CHUNK):  # chunks bound the temporaries (8 bytes a bracket)
        codes = np.frombuffer(
            brackets, dtype=np.uint8, count=min(_CHUNK, len(brackets) - start), offset=start
        )
        running = np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)) + depth
        peak, depth = max(peak, int(running.max())), int(running[-1])
    return peak


def parse_json(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """`json.loads` after the depth check: 400 (never a RecursionError's 500) when too deep."""
    depth = nesting_depth(data)
    if depth > limits.max_depth:
        raise ApiError(
            400,
            f"The request body nests {depth} levels deep; the limit is {limits.max_depth}.",
            code="too_deep",
        )
    try:
        return json.loads(data)
    except RecursionError:  # unreachable after the check, kept as the last line of defence
        raise ApiError(400, "The request body nests too deeply.", code="too_deep") from None


def check_counts(raw: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> None:
    """Message and tool counts and schema sizes of a parsed chat body (either dialect)."""
    messages = raw.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise _too_many("messages", len(messages), limits.max_messages)
    tools = raw.get("tools")
    if isinstance(tools, list):
        if len(tools) > limits.max_tools:
            raise _too_many("tools", len(tools), limits.max_tools)
        for i, tool in enumerate(tools):
            if isinstance(tool, dict):
                fn = tool.get("function")
                schema = fn.get("parameters") if isinstance(fn, dict) else tool.get("input_schema")
                _check_schema(schema, f"tools[{i}]", limits)
    for param, schema in _output_schemas(raw):
        _check_schema(schema, param, limits)


def _output_schemas(raw: dict[str, Any]) -> list[tuple[str, Any]]:
    """Structured-output schemas: OpenAI's response_format (and llama.cpp's spelling),
    Anthropic's output_config.format."""
    out: list[tuple[str, Any]] = []
    rf = raw.get("response_format")
    if isinstance(rf, dict):
        js = rf.get("json_schema")
        if isinstance(js, dict):
            out.append(("response_format.json_schema.schema", js.get("schema")))
        out.append(("response_format.schema", rf.get("schema")))
    oc = raw.get("output_config")
    if isinstance(oc, dict) and isinstance(oc.get("format"), dict):
        out.append(("output_config.format.schema", oc["format"].get("schema")))
    return out


def _check_schema(schema: Any, param: str, limits: Limits) -> None:
    if schema is None:
        return
    size = len(json.dumps(schema, separators=(",", ":")).encode())
    if size > limits.max_schema_bytes:
        raise ApiError(
            400,
            f"The JSON schema in '{param}' is {size} bytes; the limit is {limits.max_schema_bytes}.",
            code="schema_too_large",
            param=param,
        )


def _too_many(param: str, n: int, limit: int) -> ApiError:
    return ApiError(
        400, f"'{param}' has {n} items; the limit is {limit}.", code="too_many_items", param=param
    )
