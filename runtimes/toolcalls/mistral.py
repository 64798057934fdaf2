"""Mistral / Devstral: `[TOOL_CALLS]` followed by either the older JSON list
`[{"name": ..., "arguments": {...}}, ...]` or the newer `name[ARGS]{...}` (optionally
`name[CALL_ID]id[ARGS]{...}`), one `[TOOL_CALLS]` per call."""

from __future__ import annotations

import re

from runtimes.toolcalls.base import ToolFormat, ToolParser
from runtimes.toolcalls.common import ArgsReader, CallReader, mistral_call_id, partial_marker_len

MARK = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_WS = " \t\r\n"
_NAME = re.compile(r"[A-Za-z0-9_.\-]*\Z")


class MistralParser(ToolParser):
    new_id = staticmethod(mistral_call_id)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._state = "content"
        self._name = ""
        self._call_id: str | None = None

    def _run(self, final: bool) -> None:
        while True:
            st = self._state
            if st == "content":
                if not self._content_until(MARK, final):
                    return
                self._raw = MARK
                self._state = "marker"
            elif st == "marker":  # right after [TOOL_CALLS]: which of the two forms?
                rest = self._buf.lstrip(_WS)
                if not rest:
                    if final:
                        self._fallback(len(self._buf))
                    return
                self._raw += self._buf[: len(self._buf) - len(rest)]
                self._buf = rest
                if rest[0] in "[{":
                    depth = 1 if rest[0] == "[" else 0
                    self._begin_block(self._raw, CallReader(self.sink, call_depth=depth))
                    self._state = "json"
                else:
                    self._name, self._call_id = "", None
                    self._state = "name"
            elif st in ("name", "call_id"):
                if not self._read_header(final):
                    return
            elif st in ("json", "args"):
                status = self._feed_block(final)
                if status == "more":
                    return
                self._state = "after" if status == "done" else "content"
            else:  # after a call: another [TOOL_CALLS], or content
                rest = self._buf.lstrip(_WS)
                if rest.startswith(MARK):
                    self._buf = rest[len(MARK) :]
                    self._raw = MARK
                    self._state = "marker"
                elif MARK.startswith(rest):
                    if final:
                        self._buf = ""
                    return
                else:
                    self._buf = rest
                    self._state = "content"

    def _read_header(self, final: bool) -> bool:
        """Read `name[ARGS]` or `name[CALL_ID]id[ARGS]`; False when more text is needed."""
        marks = (ARGS, CALL_ID) if self._state == "name" else (ARGS,)
        hits = [(i, m) for m in marks if (i := self._buf.find(m)) >= 0]
        if hits:
            i, mark = min(hits)
            field = self._buf[:i]
            if self._state == "name" and not (_NAME.match(field) and field):
                self._fallback(i)
                self._state = "content"
                return True
            self._raw += self._buf[: i + len(mark)]
            self._buf = self._buf[i + len(mark) :]
            if self._state == "name":
                self._name = field
            else:
                self._call_id = field.strip() or None
            if mark == CALL_ID:
                self._state = "call_id"
            else:
                self._begin_block(self._raw, ArgsReader(self.sink, self._name, self._call_id))
                self._state = "args"
            return True
        keep = max(partial_marker_len(self._buf, m) for m in marks)
        head = self._buf[: len(self._buf) - keep]
        if final or (self._state == "name" and not _NAME.match(head)):
            self._fallback(len(self._buf))
            self._state = "content"
            return True
        return False


class MistralFormat(ToolFormat):
    """Templates that write `[TOOL_CALLS]` (Mistral, Devstral)."""

    name = "mistral"
    markers = (MARK, ARGS, CALL_ID)
    parser = MistralParser
    vllm_parser = "mistral"

    def detect(self, template: str) -> bool:
        return MARK in template

    def open_call(self, name: str | None) -> str:
        return MARK + (f"{name}{ARGS}" if name else "")
