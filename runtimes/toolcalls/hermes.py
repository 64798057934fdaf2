"""Qwen / Hermes: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, repeated.

Small Qwen models often drop the tags and answer with the bare JSON object, or
put it in a ```json fence; both are accepted where a call can start (at the
beginning of the answer or right after another call), but only when the object
reads as a call from its first key and names one of the offered tools, so an
ordinary JSON answer stays content.
"""

from __future__ import annotations

import json

from runtimes.toolcalls.base import ToolFormat, ToolParser
from runtimes.toolcalls.common import CallReader

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
FENCE = "```"
_WS = " \t\r\n"
_FENCE_LANGS = ("", "json")


class HermesParser(ToolParser):
    """States: "start" (could a call begin here?), "call", "after" (its closing tag
    or fence), "content" (plain text, watching for `<tool_call>`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._state = "start"
        self._closer = ""

    def _run(self, final: bool) -> None:
        while True:
            st = self._state
            if st == "start":
                if not self._start(final):
                    return
            elif st == "content":
                if not self._content_until(OPEN, final):
                    return
                self._open(OPEN, CLOSE, strict=False)
            elif st == "call":
                status = self._feed_block(final)
                if status == "more":
                    return
                self._state = "after" if status == "done" else "content"
            else:  # after a call: its closing tag or fence, if the model wrote one
                rest = self._buf.lstrip(_WS)
                if self._closer and rest.startswith(self._closer):
                    self._buf = rest[len(self._closer) :]
                    self._state = "start"
                elif self._closer.startswith(rest) and rest != self._closer:
                    if final:
                        self._buf = ""
                    return
                else:
                    self._buf = rest
                    self._state = "start"

    def _start(self, final: bool) -> bool:
        """Decide what begins here; False when more text is needed."""
        rest = self._buf.lstrip(_WS)
        lead = self._buf[: len(self._buf) - len(rest)]
        if rest.startswith(OPEN):
            self.sink.content(lead)
            self._buf = rest[len(OPEN) :]
            self._open(OPEN, CLOSE, strict=False)
        elif rest.startswith("{"):
            self._buf = rest
            self._open(lead, "", strict=True)
        elif rest.startswith(FENCE):
            return self._fence(lead, rest, final)
        elif not final and (OPEN.startswith(rest) or FENCE.startswith(rest)):
            return False
        else:
            self._state = "content"
        return True

    def _fence(self, lead: str, rest: str, final: bool) -> bool:
        """```json followed by a call object: a call; any other fence: content."""
        nl = rest.find("\n")
        if nl < 0:
            if final or rest[len(FENCE) :].strip().lower() not in ("j", "js", "jso", *_FENCE_LANGS):
                self._state = "content"
                return True
            return False
        if rest[len(FENCE) : nl].strip().lower() not in _FENCE_LANGS:
            self._state = "content"
            return True
        body = rest[nl + 1 :].lstrip(_WS)
        if not body and not final:
            return False
        if body.startswith("{"):
            self._buf = body
            self._open(lead + rest[: len(rest) - len(body)], FENCE, strict=True)
        else:
            self._state = "content"
        return True

    def _open(self, raw: str, closer: str, strict: bool) -> None:
        known = self.known_names if strict else None
        self._begin_block(raw, CallReader(self.sink, known_names=known, strict_keys=strict))
        self._closer = closer
        self._state = "call"


class HermesFormat(ToolFormat):
    """Templates that write `<tool_call>` (asked after qwen3_coder, whose templates do too)."""

    name = "hermes"
    markers = (OPEN, CLOSE)
    parser = HermesParser
    vllm_parser = "hermes"

    def detect(self, template: str) -> bool:
        return OPEN in template

    def open_call(self, name: str | None) -> str:
        return OPEN + "\n" + (f'{{"name": {json.dumps(name)}, "arguments": ' if name else '{"name": "')
