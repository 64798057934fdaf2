"""Pieces every tool-call parser shares: the event sink, call ids, marker hold-back,
and the reader for calls written as JSON objects ({"name": ..., "arguments": ...})."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import NoReturn

from runtimes.base import Event, ToolCallDelta
from runtimes.toolcalls.jsonscan import JsonScanner, JsonSyntaxError

_ALNUM = string.ascii_letters + string.digits
_WS = " \t\r\n"


def openai_call_id() -> str:
    """OpenAI-style id; unique enough that a client can match results to calls."""
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def mistral_call_id() -> str:
    """Mistral's chat templates refuse any tool-call id that is not 9 alphanumerics."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


def partial_marker_len(text: str, marker: str) -> int:
    """Length of the longest end of `text` that could be the start of `marker`: hold it back."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


class EventSink:
    """Collects a parser's findings in order and hands them out as few, merged Events.

    Whitespace at the end of content is held until more content follows: it is
    dropped when a tool call comes next (the newline before `<tool_call>` is not
    an answer) and kept at the end when no call was made.
    """

    def __init__(self, new_id: Callable[[], str] = openai_call_id):
        self.new_id = new_id
        self.calls_opened = 0
        self.calls_completed = 0
        self._items: list[Event] = []
        self._held_ws = ""

    def content(self, text: str) -> None:
        if not text:
            return
        body = text.rstrip(_WS)
        if not body:
            self._held_ws += text
            return
        self._add(Event(content=self._held_ws + body))
        self._held_ws = text[len(body) :]

    def reasoning(self, text: str) -> None:
        if text:
            self._add(Event(reasoning=text))

    def open_call(self, name: str, call_id: str | None = None) -> int:
        """Start a call; returns its index for the argument pieces that follow."""
        self._held_ws = ""
        index = self.calls_opened
        self.calls_opened += 1
        self._add(Event(tool_calls=[ToolCallDelta(index=index, id=call_id or self.new_id(), name=name)]))
        return index

    def arguments(self, index: int, text: str) -> None:
        if text:
            self._add(Event(tool_calls=[ToolCallDelta(index=index, arguments=text)]))

    def call_done(self) -> None:
        self.calls_completed += 1

    def finish(self) -> None:
        if self._held_ws and not self.calls_opened:
            self._add(Event(content=self._held_ws))
        self._held_ws = ""

    def take(self) -> list[Event]:
        out, self._items = self._items, []
        return out

    def _add(self, ev: Event) -> None:
        if self._items and _merge(self._items[-1], ev):
            return
        self._items.append(ev)


def _merge(last: Event, ev: Event) -> bool:
    """Fold `ev` into `last` when they are of the same kind; keeps order intact."""
    if ev.content and last.content and not (last.reasoning or last.tool_calls):
        last.content += ev.content
        return True
    if ev.reasoning and last.reasoning and not (last.content or last.tool_calls):
        last.reasoning += ev.reasoning
        return True
    if ev.tool_calls and last.tool_calls and not (last.content or last.reasoning):
        for d in ev.tool_calls:
            prev = last.tool_calls[-1]
            if prev.index == d.index and d.id is None and d.name is None:
                prev.arguments += d.arguments
            else:
                last.tool_calls.append(d)
        return True
    return False


CALL_KEYS = frozenset({"name", "arguments", "parameters", "type", "id"})
_ARG_KEYS = ("arguments", "parameters")


@dataclass
class _Call:
    name_span: tuple[int, int | None] | None = None
    args_start: int | None = None
    args_end: int | None = None
    args_kind: str = ""
    complete: bool = False
    index: int = -1
    sent: int = 0  # offset in the scanner's output up to which arguments were sent
    closed: bool = False


class CallReader:
    """Streams calls written as one JSON object (call_depth 0) or an array of them (1).

    The name is emitted as soon as its string is complete, the arguments piece by
    piece as they are written (compacted), so a client sees a long `edit` call grow.
    A call object the model leaves without a name is a syntax error, like any
    malformed JSON: the caller then hands the raw text back as content.
    `known_names`, when given, must contain the name (bare JSON, which could also be
    an ordinary answer, is only a call if it names a tool); `strict_keys` rejects
    objects whose keys are not call keys as early as the first one.
    """

    def __init__(
        self,
        sink: EventSink,
        call_depth: int = 0,
        known_names: Collection[str] | None = None,
        strict_keys: bool = False,
    ):
        self.sink = sink
        self.call_depth = call_depth
        self.known_names = known_names
        self.strict_keys = strict_keys
        self.scanner = JsonScanner(self._on_start, self._on_end)
        self.calls: list[_Call] = []

    @property
    def done(self) -> bool:
        return self.scanner.done

    def feed(self, text: str) -> int:
        """Returns the characters consumed; raises JsonSyntaxError on a malformed call."""
        try:
            n = self.scanner.feed(text)
        except JsonSyntaxError as e:
            # Emit what the valid part implies first, so the outcome does not depend
            # on where the text was cut into deltas.
            _pump_then_raise(self._pump, e)
        try:
            self._pump()
        except JsonSyntaxError as e:
            e.pos = n  # everything read so far belongs to the failed call
            raise
        return n

    def _on_start(self, depth: int, key: str | None, pos: int, ch: str) -> None:
        d = self.call_depth
        if depth < d and ch != "[":
            raise JsonSyntaxError("expected a list of tool calls")
        if depth == d:
            if ch != "{":
                raise JsonSyntaxError("a tool call must be a JSON object")
            self.calls.append(_Call())
        elif depth == d + 1:
            call = self.calls[-1]
            if self.strict_keys and key not in CALL_KEYS:
                raise JsonSyntaxError(f"not a tool call (key {key!r})")
            if key == "name" and call.name_span is None:
                if ch != '"':
                    raise JsonSyntaxError("tool name must be a string")
                call.name_span = (pos, None)
            elif key in _ARG_KEYS and call.args_start is None:
                call.args_start = call.sent = pos
                call.args_kind = ch

    def _on_end(self, depth: int, key: str | None, pos: int) -> None:
        d = self.call_depth
        if depth == d:
            call = self.calls[-1]
            if call.name_span is None:
                raise JsonSyntaxError("tool call without a name")
            call.complete = True
        elif depth == d + 1:
            call = self.calls[-1]
            if key == "name" and call.name_span and call.name_span[1] is None:
                call.name_span = (call.name_span[0], pos)
            elif key in _ARG_KEYS and call.args_start is not None and call.args_end is None:
                call.args_end = pos

    def _pump(self) -> None:
        text = self.scanner.text
        for call in self.calls:
            if call.closed:
                continue
            if call.index < 0:
                if call.name_span is None or call.name_span[1] is None:
                    return
                name = json.loads(text(*call.name_span))
                if self.known_names is not None and name not in self.known_names:
                    raise JsonSyntaxError(f"{name!r} is not one of the tools")
                call.index = self.sink.open_call(name)
            if call.args_start is not None and call.args_kind in "{[":
                end = call.args_end if call.args_end is not None else self.scanner.out_len
                if end > call.sent:
                    self.sink.arguments(call.index, text(call.sent, end))
                    call.sent = end
            if not call.complete:
                return
            if call.args_start is None or call.args_kind == "n":
                self.sink.arguments(call.index, "{}")
            elif call.args_kind == '"':  # arguments given as a JSON string holding JSON
                self.sink.arguments(call.index, json.loads(text(call.args_start, call.args_end)))
            elif call.args_kind not in "{[":
                self.sink.arguments(call.index, text(call.args_start, call.args_end))
            call.closed = True
            self.sink.call_done()


class ArgsReader:
    """Streams one call whose name is already known and whose JSON value is the
    arguments themselves (Mistral's `name[ARGS]{...}`)."""

    def __init__(self, sink: EventSink, name: str, call_id: str | None = None):
        self.sink = sink
        self.name = name
        self.call_id = call_id
        self.scanner = JsonScanner(on_start=self._on_start)
        self.index = -1
        self._sent = 0

    @property
    def done(self) -> bool:
        return self.scanner.done

    def _on_start(self, depth: int, key: str | None, pos: int, ch: str) -> None:
        if depth == 0 and ch not in "{[":
            raise JsonSyntaxError("tool arguments must be a JSON object")

    def feed(self, text: str) -> int:
        try:
            n = self.scanner.feed(text)
        except JsonSyntaxError as e:
            _pump_then_raise(self._pump, e)
        self._pump()
        return n

    def _pump(self) -> None:
        if not self.scanner.started:
            return
        if self.index < 0:
            self.index = self.sink.open_call(self.name, self.call_id)
        if self.scanner.out_len > self._sent:
            self.sink.arguments(self.index, self.scanner.text(self._sent))
            self._sent = self.scanner.out_len
        if self.scanner.done:
            self.sink.call_done()


def _pump_then_raise(pump: Callable[[], None], err: JsonSyntaxError) -> NoReturn:
    try:
        pump()
    except JsonSyntaxError as e2:
        e2.pos = err.pos
        raise e2 from None
    raise err
