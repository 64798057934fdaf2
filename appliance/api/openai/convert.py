"""Validated OpenAI bodies -> the runtime's dialect-neutral requests.

Messages and tools go to the runtime as the client's own dicts (only `developer`
becomes `system` and text parts are joined), because chat templates serialize
them (`tool | tojson`) and any reordering would change the rendered prompt and
defeat prefix reuse between an agent's turns.
"""

from __future__ import annotations

from typing import Any

from appliance.api.choices import MAX_CHOICES
from appliance.api.errors import ApiError
from appliance.api.openai.schemas import ChatCompletionBody, CompletionBody, SamplingFields
from runtimes.base import ChatRequest, CompletionRequest, Sampling

# Keys of a message the runtime may use; anything else a client adds is dropped.
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content")
_TEXT_PARTS = ("text", "input_text")


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def sampling_from(body: SamplingFields, max_tokens: int | None) -> Sampling:
    """Only the fields the client set; the rest keep the runtime's defaults."""
    opts: dict[str, Any] = {"max_tokens": max_tokens}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("min_p", "min_p"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("seed", "seed"),
        ("repeat_penalty", "repeat_penalty"),
        ("repetition_penalty", "repeat_penalty"),
        ("ignore_eos", "ignore_eos"),
    ):
        value = getattr(body, src)
        if value is not None:
            opts[dst] = value
    if body.top_k is not None:
        opts["top_k"] = max(0, body.top_k)
    if body.stop is not None:
        opts["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    if body.logit_bias:
        opts["logit_bias"] = _logit_bias(body.logit_bias)
    opts["json_schema"] = _json_schema(body)
    if body.grammar:
        if opts["json_schema"] is not None:
            raise _bad("grammar", "Give either a grammar or a JSON schema (json_schema, response_format).")
        opts["grammar"] = body.grammar
    return Sampling(**opts)


def _logit_bias(raw: dict[str, float]) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, bias in raw.items():
        try:
            token = int(key)
        except ValueError:
            raise _bad("logit_bias", f"logit_bias keys must be token ids; got {key!r}.") from None
        if not -100.0 <= bias <= 100.0:
            raise _bad("logit_bias", f"logit_bias values must be in [-100, 100]; got {bias}.")
        out[token] = bias
    return out


def _json_schema(body: SamplingFields) -> dict[str, Any] | None:
    fmt = body.response_format
    if body.json_schema is not None:  # llama-server's top-level field: the same constraint
        if fmt is not None and fmt.type != "text":
            raise _bad("json_schema", "Give either json_schema or response_format, not both.")
        return dict(body.json_schema)
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return dict(fmt.schema_) if fmt.schema_ else {}
    schema = fmt.json_schema.schema_ if fmt.json_schema else None
    if schema is None:
        raise _bad("response_format.json_schema.schema", "response_format json_schema needs a 'schema'.")
    return schema


def chat_request(
    body: ChatCompletionBody, raw: dict[str, Any], model_id: str, request_id: str
) -> ChatRequest:
    max_tokens = body.max_completion_tokens or body.max_tokens
    messages = [_message(m, i) for i, m in enumerate(raw["messages"])]
    tools = raw.get("tools") or None
    enable_thinking = body.enable_thinking
    kwargs = body.chat_template_kwargs or {}
    if "enable_thinking" in kwargs:
        if not isinstance(kwargs["enable_thinking"], bool):
            raise ApiError(
                400,
                "chat_template_kwargs.enable_thinking must be a boolean.",
                param="chat_template_kwargs.enable_thinking",
                code="invalid_type",
            )
        enable_thinking = kwargs["enable_thinking"]
    sampling = sampling_from(body, max_tokens)
    sampling.logprobs = _logprobs(body)
    return ChatRequest(
        model=model_id,
        messages=messages,
        sampling=sampling,
        tools=tools,
        tool_choice=raw.get("tool_choice"),
        enable_thinking=enable_thinking,
        request_id=request_id,
        n=_choices(body.n),
    )


def _choices(n: int | None) -> int:
    if n is None:
        return 1
    if not 1 <= n <= MAX_CHOICES:
        raise _bad("n", f"n must be between 1 and {MAX_CHOICES}; got {n}.")
    return n


def _logprobs(body: ChatCompletionBody) -> int | None:
    """How many alternatives per token to report (0: only the chosen token); None: no logprobs."""
    if body.top_logprobs is not None and not body.logprobs:
        raise _bad("top_logprobs", "top_logprobs needs logprobs: true.")
    return (body.top_logprobs or 0) if body.logprobs else None


def _message(raw: dict[str, Any], index: int) -> dict[str, Any]:
    msg = {k: raw[k] for k in raw if k in _MESSAGE_KEYS}
    if msg["role"] == "developer":
        msg["role"] = "system"
    content = msg.get("content")
    if isinstance(content, list):
        msg["content"] = _join_parts(content, index)
    elif content is None and msg["role"] != "assistant":
        raise ApiError(
            400,
            f"messages[{index}] ({msg['role']}) needs 'content'.",
            param=f"messages[{index}].content",
            code="missing_required_parameter",
        )
    return msg


def _join_parts(parts: list[dict[str, Any]], index: int) -> str:
    """Text parts joined by newlines, as llama.cpp's server does for string-only templates."""
    texts = []
    for j, part in enumerate(parts):
        if part.get("type") not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise ApiError(
                400,
                f"Content part type {part.get('type')!r} is not supported by this model.",
                param=f"messages[{index}].content[{j}].type",
                code="unsupported_content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def completion_request(body: CompletionBody, model_id: str, request_id: str) -> CompletionRequest:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise _bad("prompt", "Only one prompt per request is supported.")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    if body.n not in (None, 1):
        raise _bad("n", "Only n=1 is supported for text completions.")
    if body.best_of not in (None, 1):
        raise _bad("best_of", "Only best_of=1 is supported.")
    if body.logprobs is not None:
        raise _bad("logprobs", "logprobs are not supported.")
    if body.suffix:
        raise _bad("suffix", "suffix (fill-in-the-middle) is not supported.")
    return CompletionRequest(
        model=model_id,
        prompt=prompt,
        sampling=sampling_from(body, body.max_tokens),
        echo=body.echo,
        request_id=request_id,
    )
