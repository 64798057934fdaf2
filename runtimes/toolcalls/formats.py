"""The registry of tool-call formats: the one list a new format is added to.

Order matters: `detect_tool_format` asks each format in turn, and some templates
match several (Qwen3-Coder's also writes Hermes' `<tool_call>`), so the more
specific format comes first.
"""

from __future__ import annotations

from runtimes.toolcalls.base import ToolFormat
from runtimes.toolcalls.hermes import HermesFormat
from runtimes.toolcalls.llama3 import Llama3JsonFormat
from runtimes.toolcalls.mistral import MistralFormat
from runtimes.toolcalls.plain import PlainFormat
from runtimes.toolcalls.qwen3_coder import Qwen3CoderFormat

PLAIN: ToolFormat = PlainFormat()

FORMATS: tuple[ToolFormat, ...] = (
    Qwen3CoderFormat(),
    HermesFormat(),
    MistralFormat(),
    Llama3JsonFormat(),
    PLAIN,
)

_BY_NAME: dict[str, ToolFormat] = {f.name: f for f in FORMATS}


def get_tool_format(name: str | None) -> ToolFormat:
    """The format for a catalog `tool_call_format`; unknown ones (gemma) read as plain text."""
    return _BY_NAME.get(name or "", PLAIN)


def detect_tool_format(template: str | None) -> str:
    """Guess the tool-call format from a chat template, for models the catalog does not know."""
    if template:
        for fmt in FORMATS:
            if fmt.detect(template):
                return fmt.name
    return PLAIN.name


def forced_call_prefill(fmt: str, mode: str, name: str | None) -> str:
    """Start the answer with a call when the client demands one (see `ToolFormat.forced_prefill`)."""
    return get_tool_format(fmt).forced_prefill(mode, name)
