"""Anthropic Messages <-> our OpenAI-shaped messages, in one place for both directions.

Outbound (AnthropicUpstream) turns a ChatRequest's OpenAI messages into a Messages
API body; inbound (/v1/messages, which Claude Code speaks) turns a Messages body
into OpenAI messages for our runtimes. Both use the same mapping, so a conversation
that goes through both (Claude Code -> appliance -> Anthropic) keeps its tool calls,
tool results and system prompt intact.

The mapping: `system` is the top-level system prompt; an assistant's `tool_calls`
are `tool_use` blocks (arguments as a parsed object); `tool` messages are
`tool_result` blocks in the next user turn; reasoning is a `thinking` block inbound
and is dropped outbound (Anthropic requires its own signatures on thinking).
Images and documents are refused: no local model here reads them.
"""

from __future__ import annotations

import json
from typing import Any

from runtimes.base import FinishReason, InvalidRequest, Usage

TO_STOP_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "cancelled": "end_turn",
    "error": "end_turn",
}
FROM_STOP_REASON: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "stop",
}
_MEDIA_BLOCKS = ("image", "document", "image_url", "input_image", "file")


def _refuse(param: str, what: str) -> InvalidRequest:
    err = InvalidRequest(f"{what} ({param}).")
    err.param = param  # type: ignore[attr-defined]
    return err


# -- usage ---------------------------------------------------------------------------------
def usage_to_anthropic(usage: Usage | None) -> dict[str, int]:
    """Anthropic counts cache reads apart from `input_tokens`; ours are inside prompt_tokens."""
    u = usage or Usage()
    return {
        "input_tokens": max(0, u.prompt_tokens - u.cached_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def usage_from_anthropic(raw: dict[str, Any], into: Usage | None = None) -> Usage:
    """Merge an Anthropic usage object (message_start or message_delta) into `into`."""
    u = into or Usage()
    if "input_tokens" in raw or "cache_read_input_tokens" in raw:
        cached = int(raw.get("cache_read_input_tokens") or 0)
        created = int(raw.get("cache_creation_input_tokens") or 0)
        u.prompt_tokens = int(raw.get("input_tokens") or 0) + cached + created
        u.cached_tokens = cached
    if raw.get("output_tokens") is not None:
        u.completion_tokens = int(raw["output_tokens"])
    return u


# -- outbound: OpenAI messages -> Anthropic ---------------------------------------------------
def to_anthropic(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages) for a Messages API body."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content"), f"messages[{i}].content"))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id") or "",
                "content": _text_of(msg.get("content"), f"messages[{i}].content"),
            }
            _append(out, "user", [block])
        elif role == "assistant":
            blocks = _assistant_blocks(msg, i)
            if blocks:
                _append(out, "assistant", blocks)
        elif role == "user":
            text = _text_of(msg.get("content"), f"messages[{i}].content")
            _append(out, "user", [{"type": "text", "text": text}])
        else:
            raise _refuse(f"messages[{i}].role", f"Unknown message role {role!r}")
    return ("\n\n".join(system) if system else None), [_compact(m) for m in out]


def _assistant_blocks(msg: dict[str, Any], i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"), f"messages[{i}].content") if msg.get("content") else ""
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append(
            {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
             "input": tool_input(fn.get("arguments"))}
        )  # fmt: skip
    return blocks


def tool_input(raw: Any) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic wants (OpenAI carries JSON text)."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"arguments": raw}  # a small model's broken JSON: kept, not lost
    return value if isinstance(value, dict) else {"value": value}


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive turns of one role become one (tool results must share the next user turn)."""
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": list(blocks)})


def _compact(msg: dict[str, Any]) -> dict[str, Any]:
    """A lone text block is sent as a plain string, as clients write it."""
    blocks = msg["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": msg["role"], "content": blocks[0]["text"]}
    return msg


def _text_of(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _MEDIA_BLOCKS:
            raise _refuse(f"{param}[{j}]", f"Content of type {kind!r} is not supported; send text only")
        if kind not in ("text", "input_text") or not isinstance(part.get("text"), str):
            raise _refuse(f"{param}[{j}]", f"Content part of type {kind!r} is not supported here")
        texts.append(part["text"])
    return "\n".join(texts)


def to_anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise _refuse(f"tools[{i}]", "Only function tools can be sent to Anthropic")
        entry: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object"},
        }
        if fn.get("description"):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def to_anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}[choice]
    return {"type": "tool", "name": choice["function"]["name"]}


# -- inbound: Anthropic -> OpenAI messages ----------------------------------------------------
def from_anthropic(
    system: str | list[dict[str, Any]] | None, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """OpenAI-shaped messages for our runtimes, from a Messages API body's system and messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _text_of(system, "system")})
    for i, msg in enumerate(messages):
        content = msg["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if msg["role"] == "assistant":
            out.append(_assistant_message(blocks, i))
        elif msg["role"] == "system":  # kept in place: moving it would change the prompt's prefix
            out.append({"role": "system", "content": _text_of(blocks, f"messages[{i}].content")})
        else:
            out.extend(_user_messages(blocks, i))
    return out


def _assistant_message(blocks: list[dict[str, Any]], i: int) -> dict[str, Any]:
    texts, thinking, calls = [], [], []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "redacted_thinking":
            continue
        elif kind == "tool_use":
            args = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": args},
                }
            )
        else:
            raise _refuse(
                f"messages[{i}].content[{j}]", f"Assistant content of type {kind!r} is not supported"
            )
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    if thinking:
        msg["reasoning_content"] = "".join(thinking)
    return msg


def _user_messages(blocks: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
    """Tool results become `tool` messages (first, as they answer the previous turn), text a user one."""
    results, texts = [], []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        param = f"messages[{i}].content[{j}]"
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_result":
            text = _text_of(block.get("content"), f"{param}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text})
        elif kind in _MEDIA_BLOCKS:
            raise _refuse(param, f"Content of type {kind!r} is not supported; send text only")
        else:
            raise _refuse(param, f"User content of type {kind!r} is not supported")
    if texts:
        results.append({"role": "user", "content": "\n".join(texts)})
    return results


def from_anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            raise _refuse(
                f"tools[{i}].type",
                f"Server tool {tool.get('type')!r} is not supported; define it as a custom tool",
            )
        fn: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            fn["description"] = tool["description"]
        fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": fn})
    return out


def from_anthropic_tool_choice(choice: dict[str, Any] | None) -> Any:
    if not choice:
        return None
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]
