"""The OpenAI request bodies we accept, as strict pydantic models.

Strict: a string where a number belongs is a 400 naming the field, not a silent
coercion. Unknown top-level fields that real clients send (`parallel_tool_calls`,
`user`, `metadata`, `store`, ...) are ignored; known ones are type-checked.
These models only validate: the runtime receives the client's own message and tool
dicts (key order and argument strings as sent), so re-rendered history stays
byte-stable for the prefix cache.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from appliance.api.http import OpenModel, StrictModel


class ContentPart(OpenModel):
    type: str
    text: str | None = None


class FunctionCall(OpenModel):
    name: str
    # OpenAI sends a JSON string; a few clients send the object itself.
    arguments: str | dict[str, Any] = ""


class ToolCall(OpenModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(OpenModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(OpenModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(OpenModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(OpenModel):
    name: str


class ToolChoiceFunction(OpenModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(OpenModel):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    # llama.cpp's extension: {"type": "json_object", "schema": {...}}
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class StreamOptions(StrictModel):
    include_usage: bool | None = None


class SamplingFields(StrictModel):
    """Options shared by chat and text completions."""

    model: str | None = None  # none (or one we do not know): the main model, as llama-server does
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)  # <= 0: disabled
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)  # llama.cpp's spelling
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    n: int | None = None
    response_format: ResponseFormat | None = None
    ignore_eos: bool | None = None  # llama-server's and vLLM's extension
    # llama-server's structured-output extensions: a GBNF grammar, or a JSON schema (as
    # response_format's). Served by our engine; refused (400) where a backend cannot take them.
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    enable_thinking: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionBody(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None
