"""No tool-call format (`none`, and catalog formats we do not parse, such as gemma):
the model's answer is all content."""

from __future__ import annotations

from runtimes.toolcalls.base import ToolFormat, ToolParser


class PlainParser(ToolParser):
    """No tool calls for this model (or tool_choice "none"): all text is content."""

    def _run(self, final: bool) -> None:
        self.sink.content(self._buf)
        self._buf = ""


class PlainFormat(ToolFormat):
    """The fallback: claims no template, forces no call."""

    name = "none"
    parser = PlainParser
