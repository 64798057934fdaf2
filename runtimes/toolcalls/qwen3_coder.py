"""Qwen3-Coder's XML tool calls:

    <tool_call>
    <function=edit>
    <parameter=path>
    /src/app.py
    </parameter>
    <parameter=line>
    12
    </parameter>
    </function>
    </tool_call>

Values are raw text (code, with no escaping at all), so they are turned into JSON
here: a parameter the tool declares as a string becomes a JSON string and streams
as it is written; other declared types are read as JSON when they are valid JSON
(else kept as a string). The newline after `>` and before `</parameter>` is part
of the format, not of the value.
"""

from __future__ import annotations

import json

from runtimes.toolcalls.base import ToolFormat, ToolParser
from runtimes.toolcalls.common import partial_marker_len
from runtimes.toolcalls.jsonscan import JsonScanner, JsonSyntaxError

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
FN = "<function="
FN_END = "</function>"
PARAM = "<parameter="
PARAM_END = "</parameter>"
_VALUE_ENDS = (PARAM_END, PARAM, FN_END)  # the model sometimes forgets </parameter>
_WS = " \t\r\n"
_MAX_NAME = 256


class Qwen3CoderParser(ToolParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._state = "start"
        self._index = -1
        self._name = ""
        self._n_params = 0
        self._string_value = False
        self._value = ""  # a non-string value, collected whole
        self._value_started = False

    def _run(self, final: bool) -> None:
        while True:
            before = (self._state, len(self._buf))
            step = getattr(self, "_st_" + self._state)
            if not step(final):
                return
            if (self._state, len(self._buf)) == before:  # pragma: no cover - guards a state bug
                raise AssertionError(f"no progress in state {self._state}")

    # Each state handler returns False when it needs more text.

    def _st_start(self, final: bool) -> bool:
        rest = self._buf.lstrip(_WS)
        if rest.startswith(OPEN) or rest.startswith(FN):
            self.sink.content(self._buf[: len(self._buf) - len(rest)])
            self._raw = OPEN if rest.startswith(OPEN) else ""
            self._buf = rest[len(self._raw) :]
            self._state = "function"
            return True
        if not final and (OPEN.startswith(rest) or FN.startswith(rest)):
            return False
        self._state = "content"
        return True

    def _st_content(self, final: bool) -> bool:
        if not self._content_until(OPEN, final):
            return False
        self._raw = OPEN
        self._state = "function"
        return True

    def _st_function(self, final: bool) -> bool:
        rest = self._buf.lstrip(_WS)
        if rest.startswith(FN):
            self._take(len(self._buf) - len(rest) + len(FN))
            self._state = "fn_name"
            return True
        return self._hold_or_fail(rest, (FN,), final)

    def _st_fn_name(self, final: bool) -> bool:
        name = self._read_name(final)
        if name is None:
            return self._state != "fn_name"
        self._name = name
        self._index = self.sink.open_call(name)
        self._n_params = 0
        self._state = "params"
        return True

    def _st_params(self, final: bool) -> bool:
        rest = self._buf.lstrip(_WS)
        lead = len(self._buf) - len(rest)
        if rest.startswith(PARAM):
            self._take(lead + len(PARAM))
            self._state = "param_name"
            return True
        if rest.startswith(FN_END):
            self._take(lead + len(FN_END))
            self.sink.arguments(self._index, "}" if self._n_params else "{}")
            self.sink.call_done()
            self._state = "after"
            return True
        return self._hold_or_fail(rest, (PARAM, FN_END), final)

    def _st_param_name(self, final: bool) -> bool:
        pname = self._read_name(final)
        if pname is None:
            return self._state != "param_name"
        self.sink.arguments(self._index, ("," if self._n_params else "{") + json.dumps(pname) + ":")
        self._n_params += 1
        self._string_value = self._is_string(pname)
        if self._string_value:
            self.sink.arguments(self._index, '"')
        self._value = ""
        self._value_started = False
        self._state = "value"
        return True

    def _st_value(self, final: bool) -> bool:
        if not self._value_started:
            if not self._buf:
                return False
            self._value_started = True
            if self._buf[0] == "\n":
                self._take(1)
        hits = [(i, m) for m in _VALUE_ENDS if (i := self._buf.find(m)) >= 0]
        if hits:
            i, mark = min(hits)
            text = self._buf[:i]
            self._value_piece(text[:-1] if text.endswith("\n") else text)
            self._take(i + (len(mark) if mark == PARAM_END else 0))
            self._end_value()
            self._state = "params"
            return True
        if final:
            self._fallback(len(self._buf))
            self._state = "content"
            return True
        keep = max(partial_marker_len(self._buf, m) for m in _VALUE_ENDS)
        safe = self._buf[: len(self._buf) - keep]
        if safe.endswith("\n"):  # maybe the format's newline before </parameter>
            safe = safe[:-1]
        self._value_piece(safe)
        self._take(len(safe))
        return False

    def _st_after(self, final: bool) -> bool:
        rest = self._buf.lstrip(_WS)
        if rest.startswith(CLOSE):
            self._buf = rest[len(CLOSE) :]
        elif CLOSE.startswith(rest) and rest != CLOSE:
            if not final:
                return False
            self._buf = ""
        else:
            self._buf = rest
        self._raw = ""
        self._state = "start"
        return True

    # -- helpers ------------------------------------------------------------------------------

    def _take(self, n: int) -> None:
        """Move n characters from the buffer into the raw text of the current call."""
        self._raw += self._buf[:n]
        self._buf = self._buf[n:]

    def _hold_or_fail(self, rest: str, expected: tuple[str, ...], final: bool) -> bool:
        if not final and any(m.startswith(rest) for m in expected):
            return False
        self._fallback(len(self._buf) - len(rest))
        self._state = "content"
        return True

    def _read_name(self, final: bool) -> str | None:
        """A function or parameter name up to ">"; None when incomplete or malformed."""
        i = self._buf.find(">")
        head = self._buf if i < 0 else self._buf[:i]
        bad = "\n" in head or "<" in head or len(head) > _MAX_NAME or (i >= 0 and not head.strip())
        if bad or (i < 0 and final):
            self._fallback(0)
            self._state = "content"
            return None
        if i < 0:
            return None
        self._take(i + 1)
        return head.strip()

    def _is_string(self, pname: str) -> bool:
        types = self.param_types.get(self._name, {}).get(pname)
        return types is None or "string" in types

    def _value_piece(self, text: str) -> None:
        if not text:
            return
        if self._string_value:
            self.sink.arguments(self._index, json.dumps(text, ensure_ascii=False)[1:-1])
        else:
            self._value += text

    def _end_value(self) -> None:
        if self._string_value:
            self.sink.arguments(self._index, '"')
            return
        self.sink.arguments(self._index, _as_json(self._value.strip()))


def _as_json(text: str) -> str:
    """The value's JSON, compact, if it is JSON; else the text as a JSON string."""
    scanner = JsonScanner()
    try:
        if scanner.feed(text) == len(text):
            scanner.finish()
            return scanner.text()
    except JsonSyntaxError:
        pass
    return json.dumps(text, ensure_ascii=False)


class Qwen3CoderFormat(ToolFormat):
    """Templates that write `<function=` and `<parameter=` (inside `<tool_call>`, hence
    asked before hermes)."""

    name = "qwen3_coder"
    markers = (OPEN, CLOSE)
    parser = Qwen3CoderParser
    vllm_parser = "qwen3_coder"

    def detect(self, template: str) -> bool:
        return FN in template and PARAM in template

    def open_call(self, name: str | None) -> str:
        return f"{OPEN}\n{FN}" + (f"{name}>\n" if name else "")
