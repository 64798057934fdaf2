"""The whole answer path: thinking split off first, then tool calls out of the rest."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from runtimes.base import Event
from runtimes.toolcalls.base import ToolParser
from runtimes.toolcalls.common import EventSink
from runtimes.toolcalls.formats import FORMATS, get_tool_format
from runtimes.toolcalls.reasoning import THINK_MARKERS, ReasoningSplitter

# Every marker any format or the thinking split looks for, once each: a runtime restores
# them all when its engine renders one as "" (it does not matter which format is active).
CONTROL_MARKERS: tuple[str, ...] = tuple(
    dict.fromkeys([*(m for f in FORMATS for m in f.markers), *THINK_MARKERS])
)


def make_tool_parser(
    fmt: str,
    sink: EventSink | None = None,
    known_names: Collection[str] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> ToolParser:
    """A parser for a catalog `tool_call_format`; unknown formats (gemma) read as plain text."""
    cls = get_tool_format(fmt).parser
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
        self.sink = EventSink(new_id or get_tool_format(tool_format).parser.new_id)
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
