"""The Anthropic Messages request bodies we accept (what Claude Code sends), as pydantic models.

Like the OpenAI dialect's schemas.py: strict types, unknown top-level fields ignored,
and the models only validate. Block-level meaning (tool_use, tool_result, refused images)
is checked by the translation in runtimes/upstream/anthropic_format.py, which works
on the client's own dicts so argument text and key order survive for the prefix cache.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from appliance.api.http import OpenModel, StrictModel


class Block(OpenModel):
    type: str


class MessageParam(OpenModel):
    # `system` in the list: Claude Code puts its environment notes there, after the first user turn.
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class ToolParam(OpenModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoice(OpenModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs a 'name'")
        return self


class Thinking(OpenModel):
    type: str  # enabled, adaptive, between_tools, ...: on; disabled: off
    budget_tokens: int | None = None


class OutputFormat(OpenModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(OpenModel):
    format: OutputFormat | None = None  # structured output; `effort` and others are ignored


class CountTokensBody(StrictModel):
    model: str | None = None  # none (or one we do not know): the main model
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[Block] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None


class MessagesBody(CountTokensBody):
    max_tokens: int = Field(ge=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
