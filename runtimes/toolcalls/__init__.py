"""Tool calls out of a model's generated text, streamed as OpenAI-style deltas.

One parser per family (`hermes`, `qwen3_coder`, `mistral`, `llama3_json`, `none`: the catalog's
`tool_call_format`), all incremental: content goes out as soon as it cannot be the
start of a call, a call's name as soon as it is known, its arguments as written.
"""

from runtimes.toolcalls.output import PARSERS, ChatOutputParser, make_tool_parser

__all__ = ["PARSERS", "ChatOutputParser", "detect_tool_format", "make_tool_parser"]


def detect_tool_format(template: str | None) -> str:
    """Guess the tool-call format from a chat template, for models the catalog does not know."""
    if not template:
        return "none"
    if "<function=" in template and "<parameter=" in template:
        return "qwen3_coder"
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or ("<|start_header_id|>" in template and "parameters" in template):
        return "llama3_json"
    return "none"
