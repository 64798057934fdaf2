"""The two shapes every tool-call format fills in: its `ToolFormat` (how to recognise
it in a chat template, how to force a call) and its `ToolParser` (text in, events
out, one call block at a time)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, ClassVar

from runtimes.base import Event
from runtimes.toolcalls.common import ArgsReader, CallReader, EventSink, openai_call_id, partial_marker_len
from runtimes.toolcalls.jsonscan import JsonSyntaxError


class ToolParser:
    """Turns a model's answer text, as it is generated, into content and tool-call deltas.

    `push`/`end` write into `sink` (shared with the reasoning splitter, so events
    stay in order); `feed`/`finish` are the same plus handing out the events.
    Subclasses implement `_run(final)`, consuming `self._buf`.
    """

    new_id: Callable[[], str] = staticmethod(openai_call_id)

    def __init__(
        self,
        sink: EventSink | None = None,
        known_names: Collection[str] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ):
        self.sink = sink or EventSink(self.new_id)
        if known_names is None and tools:
            known_names = set(tool_param_types(tools))
        self.known_names = known_names
        self.param_types = tool_param_types(tools or [])
        self._buf = ""
        self._raw = ""  # the text of the call block being read, for the content fallback
        self._reader: CallReader | ArgsReader | None = None

    @property
    def has_calls(self) -> bool:
        return self.sink.calls_completed > 0

    def push(self, text: str) -> None:
        self._buf += text
        self._run(final=False)

    def end(self) -> None:
        self._run(final=True)
        self.sink.finish()

    def feed(self, text: str) -> list[Event]:
        self.push(text)
        return self.sink.take()

    def finish(self) -> list[Event]:
        self.end()
        return self.sink.take()

    def _run(self, final: bool) -> None:
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------

    def _content_until(self, marker: str, final: bool) -> bool:
        """Emit content up to `marker`; True (marker consumed) when it was found.
        Without it, hold back only an end that could be the marker's beginning."""
        i = self._buf.find(marker)
        if i >= 0:
            self.sink.content(self._buf[:i])
            self._buf = self._buf[i + len(marker) :]
            return True
        keep = 0 if final else partial_marker_len(self._buf, marker)
        cut = len(self._buf) - keep
        self.sink.content(self._buf[:cut])
        self._buf = self._buf[cut:]
        return False

    def _begin_block(self, raw: str, reader: CallReader | ArgsReader) -> None:
        self._raw = raw
        self._reader = reader

    def _feed_block(self, final: bool) -> str:
        """Feed the buffer to the open call block: "more", "done" or "failed"."""
        assert self._reader is not None
        try:
            n = self._reader.feed(self._buf)
        except JsonSyntaxError as e:
            self._fallback(e.pos)
            return "failed"
        self._raw += self._buf[:n]
        self._buf = self._buf[n:]
        if self._reader.done:
            self._reader = None
            return "done"
        if final:
            self._fallback(len(self._buf))
            return "failed"
        return "more"

    def _fallback(self, pos: int) -> None:
        """A malformed (or cut off) call is not lost: its text becomes content."""
        self.sink.content(self._raw + self._buf[:pos])
        self._buf = self._buf[pos:]
        self._raw = ""
        self._reader = None


class ToolFormat:
    """Everything about one way of writing tool calls, so a new format is one new module.

    `name` is the catalog's `tool_call_format`; `markers` are its texts that a
    tokenizer may hold as single control tokens, which the engine detokenizes to ""
    and the runtime must put back for the parser to see; `parser` reads its calls;
    `vllm_parser` is vLLM's `--tool-call-parser` for it (None: vLLM gets no tool parser).
    """

    name: ClassVar[str]
    markers: ClassVar[tuple[str, ...]] = ()
    parser: ClassVar[type[ToolParser]]
    vllm_parser: ClassVar[str | None] = None

    def detect(self, template: str) -> bool:
        """Does this (non-empty) chat template write calls in this format? Asked in
        registry order, so a format may rely on earlier ones having said no."""
        return False

    def forced_prefill(self, mode: str, name: str | None) -> str:
        """The answer's start when the client demands a call (tool_choice "required").

        Cheaper and surer than a grammar: "required" opens a call, a named function
        also writes the name, so the model only has to produce the arguments.
        """
        return self.open_call(name) if mode == "required" else ""

    def open_call(self, name: str | None) -> str:
        """The text that opens a call (to function `name`, when given); "" if none can be forced."""
        return ""


def tool_param_types(tools: list[dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """{tool name: {parameter: its JSON types}} from OpenAI tool definitions."""
    out: dict[str, dict[str, set[str]]] = {}
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        props = (fn.get("parameters") or {}).get("properties") or {}
        params: dict[str, set[str]] = {}
        for pname, schema in props.items() if isinstance(props, dict) else []:
            t = schema.get("type") if isinstance(schema, dict) else None
            # No declared type: treat the value as a string.
            params[pname] = {t} if isinstance(t, str) else set(t) if isinstance(t, list) else {"string"}
        out[fn["name"]] = params
    return out
