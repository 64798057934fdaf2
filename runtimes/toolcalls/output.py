"""The whole answer path: thinking split off first, then tool calls out of the rest."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from runtimes.base import Event
from runtimes.reasoning import ReasoningSplitter
from runtimes.toolcalls.base import PlainParser, ToolParser
from runtimes.toolcalls.common import EventSink
from runtimes.toolcalls.hermes import HermesParser
from runtimes.toolcalls.llama3 import Llama3JsonParser
from runtimes.toolcalls.mistral import MistralParser
from runtimes.toolcalls.qwen3_coder import Qwen3CoderParser

PARSERS: dict[str, type[ToolParser]] = {
    "hermes": HermesParser,
    "mistral": MistralParser,
    "llama3_json": Llama3JsonParser,
    "qwen3_coder": Qwen3CoderParser,
    "none": PlainParser,
}


def make_tool_parser(
    fmt: str,
    sink: EventSink | None = None,
    known_names: Collection[str] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> ToolParser:
    """A parser for a catalog `tool_call_format`; unknown formats (gemma) read as plain text."""
    cls = PARSERS.get(fmt, PlainParser)
    return cls(sink or EventSink(cls.new_id), known_names=known_names, tools=tools)


class ChatOutputParser:
    """Feed it the generated text piece by piece; it returns the Events to stream."""

    def __init__(
        self,
        tool_format: str = "none",
        *,
        known_names: Collection[str] | None = None,
        tools: list[dict[str, Any]] | None = None,
        reasoning: bool = False,
        starts_in_reasoning: bool = False,
        new_id: Callable[[], str] | None = None,
    ):
        cls = PARSERS.get(tool_format, PlainParser)
        self.sink = EventSink(new_id or cls.new_id)
        self.tools = make_tool_parser(tool_format, self.sink, known_names, tools)
        self._splitter = (
            ReasoningSplitter(self.sink.reasoning, self.tools.push, inside=starts_in_reasoning)
            if reasoning or starts_in_reasoning
            else None
        )

    @property
    def has_calls(self) -> bool:
        return self.tools.has_calls

    def feed(self, text: str) -> list[Event]:
        if self._splitter:
            self._splitter.push(text)
        else:
            self.tools.push(text)
        return self.sink.take()

    def finish(self) -> list[Event]:
        if self._splitter:
            self._splitter.end()
        self.tools.end()
        return self.sink.take()
