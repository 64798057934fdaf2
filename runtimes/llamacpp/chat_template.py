"""A GGUF's own chat template, rendered the way Hugging Face and llama.cpp's `--jinja` do.

The template string lives in the GGUF metadata (`tokenizer.chat_template`); it is
untrusted input, so it runs in jinja2's immutable sandbox. The environment mirrors
transformers' (trim_blocks/lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII and takes `indent`), because that is
what template authors test against.

Rendering must be a pure function of the request: agents resend the whole history
every turn, and the prefix cache only helps if turn N+1 renders to turn N's bytes
plus a tail. So we never mutate the caller's messages, keep tool-call argument
strings as sent, and only give a template a parsed copy of them where it needs an
object (Qwen2.5 writes `tool_call.arguments | tojson`: a string there would be
double-encoded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtimes.base import InvalidRequest

# Used when a GGUF carries no template: ChatML (what llama.cpp assumes too), with
# tools offered Hermes-style so the `hermes` parser can read the calls.
CHATML_FALLBACK = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages and messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}
{{- '# Tools\\n\\nYou may call one or more functions. Their signatures, within <tools></tools>:\\n<tools>' }}
{%- for tool in tools %}{{ '\\n' + tool | tojson }}{% endfor %}
{{- '\\n</tools>\\n\\nTo call one, answer with a JSON object within <tool_call></tool_call> tags:\\n' }}
{{- '<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages and messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content }}
{%- for call in message.tool_calls or [] %}
{{- ('\\n' if message.content or not loop.first else '') + '<tool_call>\\n{"name": "' }}
{{- call.function.name + '", "arguments": ' }}
{{- call.function.arguments | tojson + '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
"""


class TemplateLoadError(ValueError):
    """The model's chat template does not even compile."""


class _TemplateRaised(jinja2.TemplateError):
    """What `raise_exception(...)` inside a template throws."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' `tojson`: plain json.dumps (jinja's own escapes HTML and is wrong here);
    lazy sequences from filters like `map` are written as lists."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Iterator):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (training-mask markers): render the body."""

    tags = frozenset({"generation"})

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _GenerationBlock]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_PROBE_ARGS = '{"probe_arg": "probe_value"}'


class ChatTemplate:
    """A compiled chat template plus what it needs from us (probed once, at load)."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "",
                 extra_context: dict[str, Any] | None = None):
        self.is_fallback = not source
        self.source = source or CHATML_FALLBACK
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._extra = dict(extra_context or {})
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateLoadError(f"chat template does not compile: {e}") from e
        self.supports_tools = "tools" in self.source
        self.object_arguments = self._needs_object_arguments()
        # Polyfills for what clients send and some templates refuse (they raise):
        # Mistral's want 9-alphanumeric tool-call ids (an agent's history may carry
        # "call_1") and strictly alternating turns (OpenCode's title request has two
        # user messages in a row); Gemma 2's has no system role.
        self.short_ids = self._refuses(
            lambda: self._probe_calls(self.object_arguments, "call_abcdefgh_0"),
            lambda: self._probe_calls(self.object_arguments, "call12345"),
        )
        user = {"role": "user", "content": "hi"}
        self.system_role = not self._refuses(
            lambda: self._try([{"role": "system", "content": "be brief"}, user]), lambda: self._try([user])
        )
        self.merge_users = self._refuses(
            lambda: self._try([{"role": "user", "content": "a"}, user]), lambda: self._try([user])
        )

    @property
    def thinks(self) -> bool:
        """Whether the model may answer with a `<think>` block first."""
        return "<think>" in self.source or "enable_thinking" in self.source

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True, **flags: Any) -> str:
        """The prompt text. Template errors (including its own raise_exception) are InvalidRequest."""
        context: dict[str, Any] = {
            **self._extra,
            "messages": prepare_messages(messages, object_arguments=self.object_arguments,
                                         short_ids=self.short_ids, system_role=self.system_role,
                                         merge_users=self.merge_users),
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if tools:
            context["tools"] = tools
        context.update({k: v for k, v in flags.items() if v is not None})
        try:
            return self._template.render(context)
        except InvalidRequest:
            raise
        except Exception as e:  # jinja2 errors, and TypeErrors from e.g. str + None in a template
            raise InvalidRequest(f"the model's chat template rejected these messages: {e}") from e

    def _needs_object_arguments(self) -> bool:
        """Does the template want `arguments` as an object (as llama.cpp probes it)?

        Render a tiny conversation with a string, then with an object: a template
        that prints the string as is takes strings; one that only shows the value
        when given an object (`| tojson`, `.items()`) needs objects.
        """
        as_string = self._probe_calls(False, "call12345")
        if as_string is not None and _PROBE_ARGS in as_string:
            return False
        as_object = self._probe_calls(True, "call12345")
        return as_object is not None and "probe_value" in as_object and '\\"probe_value' not in as_object

    def _probe_calls(self, object_args: bool, call_id: str) -> str | None:
        args: Any = json.loads(_PROBE_ARGS) if object_args else _PROBE_ARGS
        msgs = [
            {"role": "user", "content": "probe"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "probe_tool", "arguments": args}}]},
            {"role": "tool", "tool_call_id": call_id, "name": "probe_tool", "content": "done"},
        ]
        tools = [{"type": "function", "function": {
            "name": "probe_tool", "description": "probe",
            "parameters": {"type": "object", "properties": {"probe_arg": {"type": "string"}}}}}]
        return self._try(msgs, tools)

    @staticmethod
    def _refuses(variant, baseline) -> bool:
        """The template raises on `variant` but renders `baseline`."""
        return variant() is None and baseline() is not None

    def _try(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str | None:
        try:
            return self._template.render(messages=messages, tools=tools, add_generation_prompt=True,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except Exception:
            return None


def prepare_messages(messages: list[dict[str, Any]], *, object_arguments: bool, short_ids: bool = False,
                     system_role: bool = True, merge_users: bool = False) -> list[dict[str, Any]]:
    """Copies of the messages as templates expect them, the caller's left untouched.

    - content given as parts becomes one string (text parts joined by newlines, as
      llama.cpp does); missing/None content becomes "" (a template's `| trim`
      would otherwise print "None");
    - tool-call arguments stay the exact string the client sent, unless the
      template needs an object: then it gets a parsed copy (if the string is JSON);
    - `short_ids`: ids become 9 alphanumerics, derived from the original (stable);
    - no `system_role`: system text goes in front of the next user message;
    - `merge_users`: consecutive user messages become one (blank line between).
    """
    out: list[dict[str, Any]] = []
    pending_system: list[str] = []
    for msg in messages:
        m = dict(msg)
        m["content"] = _text_content(msg.get("content"))
        if msg.get("tool_calls"):
            m["tool_calls"] = [_prepare_call(c, object_arguments, short_ids) for c in msg["tool_calls"]]
        if short_ids and isinstance(m.get("tool_call_id"), str):
            m["tool_call_id"] = short_call_id(m["tool_call_id"])
        if not system_role and m.get("role") == "system":
            pending_system.append(m["content"])
            continue
        if pending_system and m.get("role") == "user" and isinstance(m["content"], str):
            m["content"] = "\n\n".join([*pending_system, m["content"]])
            pending_system = []
        prev = out[-1] if out else None
        if merge_users and prev and prev.get("role") == m.get("role") == "user" and not m.get("tool_calls"):
            prev["content"] = f"{prev['content']}\n\n{m['content']}"
            continue
        out.append(m)
    if pending_system:  # a system prompt with no user message after it
        out.insert(0, {"role": "user", "content": "\n\n".join(pending_system)})
    return out


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def short_call_id(call_id: str) -> str:
    """A 9-alphanumeric id for `call_id`, the same every time it is rendered."""
    if re.fullmatch(r"[A-Za-z0-9]{9}", call_id):
        return call_id
    n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


def _text_content(content: Any) -> Any:
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                texts.append(part.get("text") or "")
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(f"content of type {kind!r} is not supported by this model (text only)")
        return "\n".join(texts)
    return content


def _prepare_call(call: dict[str, Any], object_arguments: bool, short_ids: bool) -> dict[str, Any]:
    call = dict(call)
    if short_ids and isinstance(call.get("id"), str):
        call["id"] = short_call_id(call["id"])
    fn = call.get("function")
    if isinstance(fn, dict):
        fn = dict(fn)
        args = fn.get("arguments")
        if object_arguments and isinstance(args, str):
            with contextlib.suppress(ValueError):  # not JSON: the template gets the string, as sent
                fn["arguments"] = json.loads(args) if args.strip() else {}
        call["function"] = fn
    return call
