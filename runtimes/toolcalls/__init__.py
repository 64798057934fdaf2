"""What a model generates, turned into OpenAI-style deltas as it streams: thinking
split off (`reasoning`), then tool calls out of the rest.

One module per tool-call format (`hermes`, `qwen3_coder`, `mistral`, `llama3`, `plain`:
the catalog's `tool_call_format`), each holding its `ToolFormat` (template detection,
markers, forced-call prefill) and its parser; `formats` lists them in detection order.
All parsers are incremental: content goes out as soon as it cannot be the start of a
call, a call's name as soon as it is known, its arguments as written.

Imports flow one way, bottom up: jsonscan, common, base, the format modules and
reasoning, formats, output.
"""

from runtimes.toolcalls.base import ToolFormat
from runtimes.toolcalls.formats import FORMATS, detect_tool_format, forced_call_prefill, get_tool_format
from runtimes.toolcalls.output import CONTROL_MARKERS, ChatOutputParser, make_tool_parser

__all__ = [
    "CONTROL_MARKERS",
    "FORMATS",
    "ChatOutputParser",
    "ToolFormat",
    "detect_tool_format",
    "forced_call_prefill",
    "get_tool_format",
    "make_tool_parser",
]
